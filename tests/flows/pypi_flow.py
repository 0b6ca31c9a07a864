"""A @pypi step on @nomad: needs a remote datastore and micromamba (see the message)."""

from metaflow import FlowSpec, nomad, pypi, step


class PypiFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.remote)

    @nomad(memory=256)
    @pypi(packages={"six": "1.16.0"}, python="3.11")
    @step
    def remote(self):
        import six

        print("six", six.__version__)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    PypiFlow()
