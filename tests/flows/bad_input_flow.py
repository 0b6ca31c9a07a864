"""No static @nomad: the bad-input tests add it with --with."""

from metaflow import FlowSpec, step


class BadInputFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    BadInputFlow()
