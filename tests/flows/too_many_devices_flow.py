"""Asks for three fake devices where the node has two."""

import os

from metaflow import FlowSpec, nomad, step


class TooManyDevicesFlow(FlowSpec):
    @nomad(gpu=3, memory=256)
    @step
    def start(self):
        print("allocation", os.environ["NOMAD_ALLOC_ID"])
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TooManyDevicesFlow()
