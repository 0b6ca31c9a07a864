"""Two steps one after the other, no decorators: tests add @nomad with `--with`."""

from metaflow import FlowSpec, step


class TwoStepFlow(FlowSpec):
    @step
    def start(self):
        self.word = "cached"
        self.next(self.end)

    @step
    def end(self):
        print(f"the word is {self.word}")


if __name__ == "__main__":
    TwoStepFlow()
