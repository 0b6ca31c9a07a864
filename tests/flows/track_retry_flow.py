"""A 20-way foreach where task 7 fails on its first attempt only."""

from metaflow import FlowSpec, current, nomad, retry, step


class TrackRetryFlow(FlowSpec):
    @step
    def start(self):
        self.items = list(range(20))
        self.next(self.square, foreach="items")

    @retry(times=2, minutes_between_retries=0)
    @nomad(cpu=100, memory=128)
    @step
    def square(self):
        if self.input == 7 and current.retry_count == 0:
            raise RuntimeError("transient failure of item 7")
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
    TrackRetryFlow()
