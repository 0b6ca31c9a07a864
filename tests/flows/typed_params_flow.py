"""A deployed flow with one parameter of each type: from_deployment must trigger it."""

from metaflow import FlowSpec, JSONType, Parameter, step


class TypedParamsFlow(FlowSpec):
    rate = Parameter("rate", help="Learning rate", type=float, default=0.01)
    epochs = Parameter("epochs", type=int, default=10)
    model = Parameter("model", type=str, default="cnn")
    use_gpu = Parameter("use_gpu", type=bool, default=False)
    layers = Parameter("layers", type=JSONType, default='{"layers": [64, 32]}')

    @step
    def start(self):
        self.values = [self.rate, self.epochs, self.model, self.use_gpu, self.layers]
        self.types = [type(v).__name__ for v in self.values]
        self.next(self.end)

    @step
    def end(self):
        print("values:", self.values, self.types)


if __name__ == "__main__":
    TypedParamsFlow()
