"""@retry on a step whose submission the tests break through METAFLOW_NOMAD_*."""

from metaflow import FlowSpec, nomad, retry, step


class TrackSubmitFlow(FlowSpec):
    @retry(times=2, minutes_between_retries=0)
    @nomad(cpu=100, memory=128)
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TrackSubmitFlow()
