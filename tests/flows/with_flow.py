"""No static @nomad: used with `--with nomad:...`."""

from metaflow import FlowSpec, step


class WithFlow(FlowSpec):
    @step
    def start(self):
        self.x = 41
        self.next(self.end)

    @step
    def end(self):
        print("x + 1 =", self.x + 1)


if __name__ == "__main__":
    WithFlow()
