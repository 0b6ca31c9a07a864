from metaflow import FlowSpec, nomad, step


class FailFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.explode)

    @nomad(memory=256)
    @step
    def explode(self):
        print("about to fail")
        if self.input_is_fine():
            raise ValueError("boom from the nomad task")
        self.next(self.end)

    def input_is_fine(self):
        return True

    @step
    def end(self):
        pass


if __name__ == "__main__":
    FailFlow()
