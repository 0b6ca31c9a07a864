"""How the launcher reaches Nomad: the connection settings and where each came from.

Every value comes from the settings table (``metaflow_nomad.config.SETTING_SPECS``):
``METAFLOW_NOMAD_*`` first, then the Nomad CLI's own ``NOMAD_*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from metaflow_nomad.config import (
    CONNECTION_SPECS,
    connection_config,
    is_truthy,
    setting_source,
)
from metaflow_nomad.model import TlsMaterial

DEFAULT_ADDRESS = "http://127.0.0.1:4646"
# Where each connection setting is set, for messages that tell users what to set.
SETTING = {name: spec.describe() for name, spec in CONNECTION_SPECS.items()}


@dataclass(frozen=True)
class ConnectionSettings:
    address: str = DEFAULT_ADDRESS
    token: str | None = None
    region: str | None = None
    namespace: str | None = None
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    tls_server_name: str | None = None
    skip_verify: bool = False

    # Where the address came from, for "cannot reach" messages.
    address_source: str = "the built-in default"

    @classmethod
    def from_config(
        cls, config: Mapping[str, str], address_source: str | None = None
    ) -> ConnectionSettings:
        """Build from ``connection_config()`` output (METAFLOW_NOMAD_* then NOMAD_*)."""
        return cls(
            address=config.get("NOMAD_ADDRESS", DEFAULT_ADDRESS),
            address_source=address_source or "the built-in default",
            token=config.get("NOMAD_TOKEN"),
            region=config.get("NOMAD_REGION"),
            namespace=config.get("NOMAD_NAMESPACE"),
            ca_cert=config.get("NOMAD_CACERT"),
            client_cert=config.get("NOMAD_CLIENT_CERT"),
            client_key=config.get("NOMAD_CLIENT_KEY"),
            tls_server_name=config.get("NOMAD_TLS_SERVER_NAME"),
            skip_verify=is_truthy(config.get("NOMAD_SKIP_VERIFY")),
        )

    @classmethod
    def from_environment(cls) -> ConnectionSettings:
        """The launcher's settings, from its environment and Metaflow profile."""
        return cls.from_config(connection_config(), setting_source("NOMAD_ADDRESS"))

    def __repr__(self) -> str:  # never show the token
        return f"ConnectionSettings(address={self.address!r}, namespace={self.namespace!r})"

    @property
    def uses_mtls(self) -> bool:
        return self.address.startswith("https://") and bool(self.client_cert)


def task_tls_material(
    settings: ConnectionSettings, task_tls_dir: str | None, driver: str
) -> TlsMaterial | None:
    """What the mtls template variant needs, when the cluster is reached over mTLS.

    ``task_tls_dir`` (METAFLOW_NOMAD_TASK_TLS_DIR) is a directory on every client
    node holding ca.pem, client.pem and client-key.pem.  Only paths travel in the
    jobspec, never key material.  raw_exec and exec tasks use the directory in
    place; docker tasks get it bind-mounted read-only at a fixed path.
    """
    if not task_tls_dir or not settings.uses_mtls:
        return None
    task_dir = "/etc/metaflow-nomad/tls" if driver == "docker" else task_tls_dir
    return TlsMaterial(address=settings.address, source_dir=task_tls_dir, task_dir=task_dir)
