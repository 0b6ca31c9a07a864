"""A flow deployed to Nomad: parameters in, artifacts out, one static @nomad step."""

from metaflow import FlowSpec, Parameter, nomad, step


class DeployFlow(FlowSpec):
    alpha = Parameter("alpha", default=1, type=int)
    greeting = Parameter("greeting", default="hello")

    @step
    def start(self):
        self.doubled = self.alpha * 2
        self.next(self.end)

    @nomad(memory=256)
    @step
    def end(self):
        self.message = f"{self.greeting} {self.doubled}"
        print("message:", self.message)


if __name__ == "__main__":
    DeployFlow()
