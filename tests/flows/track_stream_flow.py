"""Prints, sleeps, prints: shows that output streams while the task runs."""

import time

from metaflow import FlowSpec, nomad, step


class TrackStreamFlow(FlowSpec):
    @nomad(cpu=100, memory=256)
    @step
    def start(self):
        print("STREAM-FIRST", flush=True)
        time.sleep(15)  # leaves the log sidecar ample time on a busy machine
        print("STREAM-SECOND", flush=True)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TrackStreamFlow()
