"""A 3-way foreach on Nomad where item 1 fails on its first attempt only."""

from metaflow import FlowSpec, current, nomad, retry, step


class MatrixRetryFlow(FlowSpec):
    @step
    def start(self):
        self.items = [0, 1, 2]
        self.next(self.square, foreach="items")

    @retry(times=1, minutes_between_retries=0)
    @nomad(cpu=100, memory=128)
    @step
    def square(self):
        if self.input == 1 and current.retry_count == 0:
            raise RuntimeError("transient failure of item 1")
        self.value = self.input * self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(i.value for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        print(f"total of squares: {self.total}")


if __name__ == "__main__":
    MatrixRetryFlow()
