"""A small fan-out: each branch runs as its own Nomad job."""

from metaflow import FlowSpec, nomad, retry, step


class ForeachFlow(FlowSpec):
    @step
    def start(self):
        self.items = list(range(4))
        self.next(self.square, foreach="items")

    @retry(times=1, minutes_between_retries=0)
    @nomad(cpu=0.5, memory=600)
    @step
    def square(self):
        self.value = self.input * self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(i.value for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        print(f"Sum of squares: {self.total}")


if __name__ == "__main__":
    ForeachFlow()
