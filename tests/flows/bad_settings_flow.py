"""Three bad @nomad values in two steps, behind a valid @nomad step.

Metaflow's runtime initialises steps in name order, so `end` (valid) comes before
`prepare` and `train` (bad): a run that checked one step at a time would contact
the cluster for `end` first.  One run must report all three bad values instead,
before anything contacts the cluster.
"""

from metaflow import FlowSpec, nomad, step


class BadSettingsFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.prepare)

    @nomad(memory="lots", cpu=-1)
    @step
    def prepare(self):
        self.next(self.train)

    @nomad(driver="podman")
    @step
    def train(self):
        self.next(self.end)

    @nomad
    @step
    def end(self):
        pass


if __name__ == "__main__":
    BadSettingsFlow()
