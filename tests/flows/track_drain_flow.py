"""A long step that says when it runs, so a test can drain its node meanwhile."""

import time
from pathlib import Path

from metaflow import FlowSpec, Parameter, nomad, step


class TrackDrainFlow(FlowSpec):
    marker = Parameter("marker", required=True)

    @nomad(cpu=100, memory=128)
    @step
    def start(self):
        Path(self.marker).write_text("running")
        time.sleep(60)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TrackDrainFlow()
