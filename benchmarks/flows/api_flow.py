"""One @nomad task of ``seconds`` of sleep, to count the API requests a task costs."""

import time

from metaflow import FlowSpec, Parameter, nomad, step


class ApiFlow(FlowSpec):
    seconds = Parameter("seconds", default=1.0, type=float)

    @step
    def start(self):
        self.next(self.work)

    @nomad
    @step
    def work(self):
        time.sleep(self.seconds)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ApiFlow()
