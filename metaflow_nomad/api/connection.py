"""How the launcher reaches Nomad: the connection settings and where each came from.

Every value comes from the settings table (``metaflow_nomad.config.SETTING_SPECS``):
``METAFLOW_NOMAD_*`` first, then the Nomad CLI's own ``NOMAD_*``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from metaflow_nomad.config import (
    CONNECTION_SPECS,
    connection_config,
    is_truthy,
    setting_source,
)

DEFAULT_ADDRESS = "http://127.0.0.1:4646"
TASK_API_SOCKET = "api.sock"
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
        """The launcher's settings, from its environment and Metaflow profile.

        Inside a Nomad task with no address set (a step publishing an event), the
        task's own Task API socket is the way to its cluster: it needs no TLS, and
        it takes the task's workload identity when the job exposes it."""
        config = connection_config()
        source = setting_source("NOMAD_ADDRESS")
        socket = task_api_socket(os.environ)
        if "NOMAD_ADDRESS" not in config and socket:
            config = {**config, "NOMAD_ADDRESS": f"unix://{socket}"}
            source = "this Nomad task's Task API socket (${NOMAD_SECRETS_DIR}/api.sock)"
        return cls.from_config(config, source)

    def __repr__(self) -> str:  # never show the token
        return f"ConnectionSettings(address={self.address!r}, namespace={self.namespace!r})"

    @property
    def uses_mtls(self) -> bool:
        return self.address.startswith("https://") and bool(self.client_cert)


def task_api_socket(environ: Mapping[str, str]) -> str | None:
    """The Task API socket of the Nomad task this process runs in, if any."""
    secrets = environ.get("NOMAD_SECRETS_DIR")
    if not secrets:
        return None
    path = os.path.join(secrets, TASK_API_SOCKET)
    return path if os.path.exists(path) else None
