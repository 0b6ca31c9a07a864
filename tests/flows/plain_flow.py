"""A flow with no decorators at all: the tests add them with `--with`, as a user
would to try a flow on Nomad with retries, @catch, cards and more."""

import os

from metaflow import FlowSpec, current, step


class PlainFlow(FlowSpec):
    @step
    def start(self):
        if current.retry_count == 0:
            raise RuntimeError("flaky first attempt")
        self.greeting = os.environ.get("GREETING")
        self.next(self.fragile)

    @step
    def fragile(self):
        self.ratio = 1 / 0
        self.next(self.end)

    @step
    def end(self):
        print(f"greeting {self.greeting!r}, failure {self.failure!r}")


if __name__ == "__main__":
    PlainFlow()
