"""A flow whose steps use Metaflow's metadata service from Nomad: the client API,
tags and a card, as a user's steps do."""

from metaflow import FlowSpec, Run, Task, card, current, nomad, step
from metaflow.cards import Markdown


class ServiceFlow(FlowSpec):
    @card(type="blank", id="notes")
    @nomad(cpu=100, memory=256)
    @step
    def start(self):
        self.namespace_seen = current.namespace
        self.own_alloc = Task(current.pathspec).metadata_dict.get("nomad-alloc-id")
        current.run.add_tag("from-nomad")
        current.card["notes"].append(Markdown("# Written on Nomad"))
        self.next(self.end)

    @nomad(cpu=100, memory=256)
    @step
    def end(self):
        start = Run(f"{current.flow_name}/{current.run_id}")["start"].task
        self.start_namespace = start.data.namespace_seen
        print(f"start ran in namespace {self.start_namespace}")


if __name__ == "__main__":
    ServiceFlow()
