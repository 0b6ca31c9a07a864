"""@catch on a failing Nomad step: the flow goes on with the exception stored."""

from metaflow import FlowSpec, catch, nomad, step


class TrackCatchFlow(FlowSpec):
    @catch(var="failure")
    @nomad(cpu=100, memory=256)
    @step
    def start(self):
        raise ValueError("caught failure on nomad")

    @step
    def end(self):
        print(f"failure stored: {self.failure!r}")


if __name__ == "__main__":
    TrackCatchFlow()
