"""What every job of a run is rendered from, besides each step's own settings.

The flow's directory, the project's template directory, the task TLS material and
the project's template values are the same for every job a run (or a deployment,
a ``doctor`` probe, a ``render``) produces.  The plugin builds one ``RenderInputs``
per run and hands it to each renderer, instead of each entry point collecting them
again.  Nothing here reads configuration or talks to the cluster: the values come in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from metaflow_nomad.model import TlsMaterial

# Where a docker task sees the node's TLS directory (bind-mounted read-only).
DOCKER_TLS_DIR = "/etc/metaflow-nomad/tls"


@dataclass(frozen=True)
class RenderInputs:
    """The run-wide render inputs.

    ``mtls_address`` is the cluster's address when the launcher reaches it over
    mutual TLS, else None: only then do tasks get the TLS material
    (``task_tls_dir``, METAFLOW_NOMAD_TASK_TLS_DIR, a directory on every client
    node with ca.pem, client.pem and client-key.pem).

    ``service_auth_variable`` is the path of the Nomad Variable the jobs read the
    metadata service's headers from when the launcher sends the service headers,
    else None (template feature ``service_auth``).
    """

    flow_dir: str | None = None
    templates_dir: str | None = None
    task_tls_dir: str | None = None
    mtls_address: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    service_auth_variable: str | None = None

    def tls_for(self, driver: str) -> TlsMaterial | None:
        """Where a task of this driver finds the TLS material, or None without mTLS.

        Only paths travel in the jobspec, never key material.  raw_exec and exec
        tasks use the node's directory in place; docker tasks get it bind-mounted
        at a fixed path.
        """
        if not self.task_tls_dir or not self.mtls_address:
            return None
        task_dir = DOCKER_TLS_DIR if driver == "docker" else self.task_tls_dir
        return TlsMaterial(
            address=self.mtls_address, source_dir=self.task_tls_dir, task_dir=task_dir
        )

    def with_values(self, values: Mapping[str, Any] | None) -> RenderInputs:
        """The same inputs with other template values (``render --values``)."""
        return self if values is None else replace(self, values=dict(values))
