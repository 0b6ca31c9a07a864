"""The user guide's example flow, unchanged."""

from metaflow import FlowSpec, nomad, resources, step


class NomadFlow(FlowSpec):
    @step
    def start(self):
        print("Starting the flow.")
        self.next(self.compute_on_nomad)

    @nomad(cpu=2, memory=1000, disk=500)  # Request 2000 MHz CPU, 1000MB RAM, 500MB Disk
    @resources(cpu=1, memory=500)  # General resource request
    @step
    def compute_on_nomad(self):
        print("This step is running on Nomad!")
        self.result = sum(i * i for i in range(1000))
        self.next(self.end)

    @step
    def end(self):
        print(f"Computation result: {self.result}")
        print("Flow finished.")


if __name__ == "__main__":
    NomadFlow()
