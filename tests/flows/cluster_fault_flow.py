"""A small fan-out for faults of the cluster around a run (a lost leader, a restarted
metadata service): start -> two Nomad tasks that sleep a few seconds -> join -> end.

Each work task keeps the allocation it ran in, so a test can match every task to
the one allocation of its job; the values are deterministic, so a lost or
duplicated task shows in the join's and end's artifacts.
"""

import os
import time

from metaflow import FlowSpec, Parameter, nomad, step


class ClusterFaultFlow(FlowSpec):
    seconds = Parameter("seconds", default=6, type=int)

    @step
    def start(self):
        self.items = [1, 2]
        self.next(self.work, foreach="items")

    @nomad(cpu=100, memory=128)
    @step
    def work(self):
        print(f"work {self.input} started", flush=True)
        time.sleep(self.seconds)
        self.square = self.input**2
        self.alloc_id = os.environ.get("NOMAD_ALLOC_ID")
        print(f"work {self.input} done", flush=True)
        self.next(self.join)

    @step
    def join(self, inputs):
        self.squares = sorted(i.square for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        self.total = sum(self.squares)


if __name__ == "__main__":
    ClusterFaultFlow()
