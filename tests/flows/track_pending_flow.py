"""A step whose placement is steered by METAFLOW_NOMAD_* settings in the tests."""

from metaflow import FlowSpec, nomad, step


class TrackPendingFlow(FlowSpec):
    @nomad(cpu=100, pending_timeout=4)
    @step
    def start(self):
        print("placed after all")
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TrackPendingFlow()
