"""A foreach of ``width`` tasks of ``seconds`` of sleep each.

The benchmark runs it as is (local) and with the marker line below turned into
``@nomad(cpu=100, memory=256)`` (so 16 fit on one small node; only the foreach
body on Nomad; start, join and end stay local in
both arms, so the ratio measures the fan-out itself).
"""

import time

from metaflow import FlowSpec, Parameter, nomad, step  # noqa: F401 - used by the Nomad variant


class FanoutFlow(FlowSpec):
    width = Parameter("width", default=8, type=int)
    seconds = Parameter("seconds", default=1.0, type=float)

    @step
    def start(self):
        self.items = list(range(self.width))
        self.next(self.work, foreach="items")

    # <nomad>
    @step
    def work(self):
        time.sleep(self.seconds)
        self.next(self.join)

    @step
    def join(self, inputs):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    FanoutFlow()
