"""A constraint no Linux node satisfies; pending_timeout comes from the environment."""

from metaflow import FlowSpec, nomad, step


class TrackConstraintFlow(FlowSpec):
    @nomad(
        cpu=100,
        memory=128,
        constraints=[{"attribute": "${attr.kernel.name}", "operator": "=", "value": "windows"}],
    )
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TrackConstraintFlow()
