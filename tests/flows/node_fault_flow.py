"""A step that takes a while and leaves a value no rerun would repeat: the node
fault tests freeze or kill the client node it runs on."""

import os
import random
import time

from metaflow import FlowSpec, nomad, step


class NodeFaultFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.work)

    @nomad(memory=128, cpu=0.1)
    @step
    def work(self):
        print("work started", flush=True)
        time.sleep(int(os.environ.get("WORK_SECONDS", "6")))
        self.value = random.random()
        print(f"work done {self.value}", flush=True)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    NodeFaultFlow()
