"""Prints, then waits for the test's go-ahead, then prints again: so the first line
can only reach the launcher's output while the task is still running."""

import os
import time

from metaflow import FlowSpec, current, nomad, step


class TrackStreamFlow(FlowSpec):
    @nomad(cpu=100, memory=256)
    @step
    def start(self):
        print("STREAM-FIRST", flush=True)
        marker = f"/tmp/mf-nomad-stream-{current.run_id}"
        deadline = time.monotonic() + 180
        while not os.path.exists(marker):
            if time.monotonic() > deadline:
                raise RuntimeError("the test never saw the first line")
            time.sleep(0.2)
        print("STREAM-SECOND", flush=True)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TrackStreamFlow()
