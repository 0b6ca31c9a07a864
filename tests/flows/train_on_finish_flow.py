"""Downstream of EtlFlow: a deployed run starts when an EtlFlow run finishes."""

from metaflow import FlowSpec, current, step, trigger_on_finish


@trigger_on_finish(flow="EtlFlow")
class TrainFlow(FlowSpec):
    @step
    def start(self):
        upstream = current.trigger.run
        self.upstream = upstream.pathspec
        self.upstream_rows = upstream.data.rows
        self.event_name = current.trigger.event.name
        self.next(self.end)

    @step
    def end(self):
        self.seen_in_end = current.trigger.run.pathspec


if __name__ == "__main__":
    TrainFlow()
