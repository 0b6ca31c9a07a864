"""The smallest flow Metaflow accepts: two no-op steps (run with and without --with nomad)."""

from metaflow import FlowSpec, step


class NoopFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    NoopFlow()
