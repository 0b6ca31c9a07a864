"""Upstream of a chain: its deployed runs publish their finish event."""

from metaflow import FlowSpec, step


class EtlFlow(FlowSpec):
    @step
    def start(self):
        self.rows = 1200
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    EtlFlow()
