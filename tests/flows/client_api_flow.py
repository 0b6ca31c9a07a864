"""Steps on Nomad that use the client API, tags and cards the way users do.

Run it with ``--tag break-join`` and the join fails; ``resume`` then re-runs the
join on Nomad, which looks back at the run it resumes.
"""

from metaflow import Flow, FlowSpec, Run, Task, card, current, nomad, step
from metaflow.cards import Markdown


class ClientApiFlow(FlowSpec):
    @card
    @card(type="blank", id="notes")
    @nomad(cpu=100, memory=256)
    @step
    def start(self):
        self.items = [1, 2, 3]
        self.seen_task = current.task.pathspec
        current.run.add_tag("from-nomad")
        current.run.add_tag("temporary")
        current.run.remove_tag("temporary")
        self.seen_tags = sorted(current.run.user_tags)
        current.card["notes"].append(Markdown("# Notes written on Nomad"))
        self.next(self.square, foreach="items")

    @card(type="blank")
    @nomad(cpu=100, memory=256)
    @step
    def square(self):
        self.value = self.input**2
        start = Run(f"{current.flow_name}/{current.run_id}")["start"].task
        self.items_seen = start.data.items
        self.own_alloc = Task(current.pathspec).metadata_dict.get("nomad-alloc-id")
        current.card.append(Markdown(f"{self.input} squared is {self.value}"))
        self.next(self.join)

    @card(type="blank", id="summary")
    @nomad(cpu=100, memory=256)
    @step
    def join(self, inputs):
        if "break-join" in current.tags:
            raise RuntimeError("join broken on purpose")
        self.total = sum(i.value for i in inputs)
        origin = Run(f"{current.flow_name}/{current.origin_run_id}")
        self.origin_tags = sorted(origin.user_tags)
        self.origin_values = sorted(t.data.value for t in origin["square"])
        self.runs_seen = sorted(r.id for r in Flow(current.flow_name))
        current.run.add_tag("joined")
        current.card["summary"].append(Markdown(f"Total of squares: {self.total}"))
        print(f"join on nomad: total {self.total}")
        self.next(self.end)

    @step
    def end(self):
        print(f"total of squares: {self.total}")


if __name__ == "__main__":
    ClientApiFlow()
