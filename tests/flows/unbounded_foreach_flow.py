"""An unbounded foreach (Metaflow's test implementation of one), with a join that
fails when the run is tagged `break-join`."""

from metaflow import FlowSpec, current, step, unbounded_test_foreach_internal
from metaflow.plugins import InternalTestUnboundedForeachInput


class UnboundedForeachFlow(FlowSpec):
    @step
    def start(self):
        self.items = InternalTestUnboundedForeachInput([1, 2, 3])
        self.next(self.inner, foreach="items")

    @unbounded_test_foreach_internal
    @step
    def inner(self):
        self.value = self.input * 10
        self.next(self.join)

    @step
    def join(self, inputs):
        if "break-join" in current.tags:
            raise RuntimeError("join broken on purpose")
        self.total = sum(i.value for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        print(f"total {self.total}")


if __name__ == "__main__":
    UnboundedForeachFlow()
