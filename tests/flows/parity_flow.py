"""User values a Nomad task must see exactly as given: @environment values (from a
config file), tags, a parameter, and `--with environment:vars=...` strings."""

import os

from metaflow import Config, FlowSpec, Parameter, config_expr, current, environment, nomad, step


class ParityFlow(FlowSpec):
    values = Config("values", default="parity_values.json")
    text = Parameter("text", default="")

    @environment(vars=config_expr("values.env"))
    @nomad(cpu=100, memory=256)
    @step
    def start(self):
        self.env_seen = {name: os.environ.get(name) for name in self.values.env}
        self.tags_seen = sorted(current.tags)
        self.text_seen = self.text
        self.next(self.middle)

    @nomad(cpu=100, memory=256)
    @step
    def middle(self):
        # No @environment here: its variables come from `--with environment:vars=...`.
        self.with_seen = {name: os.environ.get(name) for name in self.values.with_names}
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ParityFlow()
