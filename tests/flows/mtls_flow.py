"""A step whose own code calls the mTLS-protected cluster with the delivered material."""

import os

from metaflow import FlowSpec, nomad, step


class MtlsFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.call_cluster)

    @nomad(memory=256)
    @step
    def call_cluster(self):
        import requests

        response = requests.get(
            os.environ["NOMAD_ADDR"] + "/v1/status/leader",
            verify=os.environ["NOMAD_CACERT"],
            cert=(os.environ["NOMAD_CLIENT_CERT"], os.environ["NOMAD_CLIENT_KEY"]),
            timeout=10,
        )
        response.raise_for_status()
        self.leader = response.json()
        print("leader seen from the task:", self.leader)
        self.next(self.end)

    @step
    def end(self):
        print("task saw leader", self.leader)


if __name__ == "__main__":
    MtlsFlow()
