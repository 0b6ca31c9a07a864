"""A GPU step; the device tests point it at fake devices."""

import os

from metaflow import FlowSpec, nomad, step


class DeviceFlow(FlowSpec):
    @nomad(gpu=2, memory=256)
    @step
    def start(self):
        print("allocation", os.environ["NOMAD_ALLOC_ID"])
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    DeviceFlow()
