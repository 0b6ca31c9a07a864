"""@catch on a failing Nomad step: the flow goes on with the exception stored.

With --hard the task process dies without a Python exception, so @catch cannot
catch it in the task and Metaflow runs its fallback attempt (locally, as for
@kubernetes).
"""

import os

from metaflow import FlowSpec, Parameter, catch, nomad, step


class TrackCatchFlow(FlowSpec):
    hard = Parameter("hard", type=bool, default=False)

    @catch(var="failure")
    @nomad(cpu=100, memory=256)
    @step
    def start(self):
        if self.hard:
            os._exit(3)
        if self.fail():
            raise ValueError("caught failure on nomad")
        self.next(self.end)

    def fail(self):
        return True

    @step
    def end(self):
        print(f"failure stored: {self.failure!r}")


if __name__ == "__main__":
    TrackCatchFlow()
