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
