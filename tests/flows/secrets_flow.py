"""@secrets on Nomad steps: one static, one added with `--with secrets:...`."""

import hashlib
import os

from metaflow import FlowSpec, nomad, secrets, step


def digest(name):
    value = os.environ.get(name)
    return value and hashlib.sha256(value.encode()).hexdigest()


class SecretsFlow(FlowSpec):
    @secrets(sources=["mf-nomad/db"])
    @nomad(cpu=100, memory=256)
    @step
    def start(self):
        self.static_digest = digest("DB_PASSWORD")
        self.next(self.end)

    @nomad(cpu=100, memory=256)
    @step
    def end(self):
        self.with_digest = digest("DB_PASSWORD")


if __name__ == "__main__":
    SecretsFlow()
