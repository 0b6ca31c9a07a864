"""A foreach on Nomad where one item fails its first attempt, with tricky @environment values."""

import os

from metaflow import FlowSpec, current, environment, nomad, retry, step

TRICKY = {
    "DOLLAR": "costs $5 or $HOME",
    "BRACES": "keep ${c} and %{d} as written",
    "QUOTES": "she said \"hi\" and 'bye'",
    "NEWLINES": "line one\nline two\n",
}


class DockerForeachFlow(FlowSpec):
    @step
    def start(self):
        self.items = [1, 2, 3, 4]
        self.next(self.square, foreach="items")

    @retry(times=1, minutes_between_retries=0)
    @environment(vars=TRICKY)
    @nomad(cpu=100, memory=600)
    @step
    def square(self):
        if self.input == 3 and current.retry_count == 0:
            raise RuntimeError("planned failure of item 3 on its first attempt")
        self.seen = {key: os.environ.get(key) for key in TRICKY}
        self.attempt = current.retry_count
        self.value = self.input * self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(i.value for i in inputs)
        self.seen = [i.seen for i in inputs]
        self.attempts = {i.input: i.attempt for i in inputs}
        self.next(self.end)

    @step
    def end(self):
        print(f"total of squares: {self.total}")


if __name__ == "__main__":
    DockerForeachFlow()
