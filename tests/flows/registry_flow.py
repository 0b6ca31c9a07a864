"""A flow whose docker tasks run an image from a private registry
(tests/integration/test_registry_pulls.py sets the image, ``registry_auth`` and
``force_pull`` through METAFLOW_NOMAD_*, as a team's profile would)."""

import os
import time

from metaflow import FlowSpec, step


class RegistryFlow(FlowSpec):
    @step
    def start(self):
        # What the step can see of the registry credentials: nothing.
        self.registry_env = sorted(k for k in os.environ if "REGISTRY" in k)
        time.sleep(float(os.environ.get("WORK_SECONDS", "0")))
        self.next(self.end)

    @step
    def end(self):
        self.node = os.environ.get("METAFLOW_NOMAD_NODE_NAME")


if __name__ == "__main__":
    RegistryFlow()
