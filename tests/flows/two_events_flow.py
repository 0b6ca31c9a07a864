"""Starts only once both of its events have arrived; one name is a deploy-time value."""

from metaflow import FlowSpec, Parameter, current, step, trigger
from metaflow.plugins.namespaced_events import namespaced_event_name


@trigger(
    events=[
        {"name": "left_ready", "parameters": {"left": "path"}},
        {"name": namespaced_event_name("right_ready"), "parameters": {"right": "path"}},
    ]
)
class TwoEventsFlow(FlowSpec):
    left = Parameter("left", default="")
    right = Parameter("right", default="")

    @step
    def start(self):
        self.events = sorted(e.name for e in current.trigger.events)
        self.paths = [self.left, self.right]
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TwoEventsFlow()
