"""A step on Nomad publishes an event, as a data-landing job would (through its Task API)."""

from metaflow import FlowSpec, nomad, step


class PublisherFlow(FlowSpec):
    @nomad(cpu=100, memory=256, task_api=True)
    @step
    def start(self):
        from metaflow_nomad.events import NomadEvent

        event = NomadEvent("data_ready", {"table_name": "from_a_step"})
        self.started = [d.run_id for d in event.publish({"row_count": 7})]
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    PublisherFlow()
