"""A deployed run that is surely still running when a test stops its runner or the run."""

import time

from metaflow import FlowSpec, Parameter, nomad, step

VERSION = "v1"


class DeploySleepFlow(FlowSpec):
    seconds = Parameter("seconds", default=60, type=int)

    @step
    def start(self):
        self.started_by = VERSION
        self.next(self.nap)

    @nomad(memory=128)
    @step
    def nap(self):
        print("napping on nomad", flush=True)
        time.sleep(self.seconds)
        self.next(self.end)

    @step
    def end(self):
        self.ended_by = VERSION


if __name__ == "__main__":
    DeploySleepFlow()
