"""A @nomad step that runs long enough for a fault to hit it, and leaves a trace per run."""

import os
import time

from metaflow import FlowSpec, Parameter, nomad, step


class FaultFlow(FlowSpec):
    seconds = Parameter("seconds", default=15, type=int)
    marker = Parameter("marker", required=True)

    @step
    def start(self):
        self.next(self.work)

    @nomad(memory=128)
    @step
    def work(self):
        # One line per execution of the step's code: a duplicate would show here.
        with open(self.marker, "a") as out:
            out.write(f"started pid={os.getpid()}\n")
        time.sleep(self.seconds)
        with open(self.marker, "a") as out:
            out.write(f"finished pid={os.getpid()}\n")
        self.next(self.end)

    @step
    def end(self):
        print("fault flow done")


if __name__ == "__main__":
    FaultFlow()
