"""@environment variables on a @nomad step, including characters Nomad and bash treat specially."""

import os

from metaflow import FlowSpec, environment, nomad, step


class EnvFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.remote)

    @nomad(memory=256)
    @environment(vars={"GREETING": "hello from @environment", "TRICKY": 'a $b ${c} "q" %{d}'})
    @step
    def remote(self):
        self.seen = {k: os.environ.get(k) for k in ("GREETING", "TRICKY", "NOMAD_JOB_ID")}
        print(f"GREETING={self.seen['GREETING']}")
        self.next(self.end)

    @step
    def end(self):
        print(f"seen on nomad: {self.seen}")


if __name__ == "__main__":
    EnvFlow()
