"""A 20-way foreach where item 7 fails on its first attempt only (``--width``
and ``--flaky`` change both)."""

from metaflow import FlowSpec, Parameter, current, nomad, retry, step


class TrackRetryFlow(FlowSpec):
    width = Parameter("width", default=20, type=int)
    flaky = Parameter("flaky", default=7, type=int)

    @step
    def start(self):
        self.items = list(range(self.width))
        self.next(self.square, foreach="items")

    @retry(times=2, minutes_between_retries=0)
    @nomad(cpu=100, memory=128)
    @step
    def square(self):
        if self.input == self.flaky and current.retry_count == 0:
            raise RuntimeError(f"transient failure of item {self.flaky}")
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
