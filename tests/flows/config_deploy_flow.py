"""A deployed flow shaped by a Config: a value given at `create` reaches every step,
and a config expression sets a step's @nomad memory."""

from metaflow import Config, FlowSpec, config_expr, nomad, step


class ConfigDeployFlow(FlowSpec):
    cfg = Config("cfg", default_value={"greeting": "default", "memory": 256})

    @step
    def start(self):
        self.start_greeting = self.cfg.greeting
        self.next(self.end)

    @nomad(memory=config_expr("cfg.memory"))
    @step
    def end(self):
        self.end_greeting = self.cfg["greeting"]
        print("greeting:", self.end_greeting)


if __name__ == "__main__":
    ConfigDeployFlow()
