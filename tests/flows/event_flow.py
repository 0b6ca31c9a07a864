"""Started by an event; the payload's fields become its parameters."""

from metaflow import FlowSpec, JSONType, Parameter, current, step, trigger


@trigger(
    event={
        "name": "data_ready",
        "parameters": {"table": "table_name", "rows": "row_count", "options": "options"},
    }
)
class EventFlow(FlowSpec):
    table = Parameter("table", default="none")
    rows = Parameter("rows", default=0, type=int)
    options = Parameter("options", default="{}", type=JSONType)

    @step
    def start(self):
        event = current.trigger.event
        self.event = {"name": event.name, "id": event.id, "type": event.type}
        self.next(self.end)

    @step
    def end(self):
        self.got = {"table": self.table, "rows": self.rows, "options": self.options}


if __name__ == "__main__":
    EventFlow()
