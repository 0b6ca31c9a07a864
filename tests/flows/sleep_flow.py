"""A run whose @nomad step is surely still running when a test interrupts it."""

import time

from metaflow import FlowSpec, Parameter, nomad, step


class SleepFlow(FlowSpec):
    seconds = Parameter("seconds", default=60, type=int)

    @step
    def start(self):
        self.next(self.nap)

    @nomad(memory=128)
    @step
    def nap(self):
        print("napping on nomad", flush=True)
        time.sleep(self.seconds)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    SleepFlow()
