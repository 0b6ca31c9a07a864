"""A fan-out whose Nomad tasks are surely still running when a test stops them."""

import time

from metaflow import FlowSpec, nomad, step


class NapForeachFlow(FlowSpec):
    @step
    def start(self):
        self.items = list(range(3))
        self.next(self.nap, foreach="items")

    @nomad(cpu=0.2, memory=128)
    @step
    def nap(self):
        print("napping", self.input, flush=True)
        time.sleep(120)
        self.next(self.join)

    @step
    def join(self, inputs):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    NapForeachFlow()
