"""python-nomad's HTTP layer, set up the way the official Nomad CLI authenticates.

Kept apart from the client so that the client holds only the API and its
retry policy; this is the one place that decides TLS verification.
"""

from __future__ import annotations

from typing import Any

import requests
from nomad.api.base import Requester
from requests.adapters import HTTPAdapter

from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.task_api import (
    SOCKET_BASE_URL,
    UnixSocketAdapter,
    is_unix_address,
    socket_path,
)


class _ServerNameAdapter(HTTPAdapter):
    """Verify the server certificate against a fixed name (NOMAD_TLS_SERVER_NAME)."""

    def __init__(self, server_name: str):
        self._server_name = server_name
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self._server_name
        kwargs["assert_hostname"] = self._server_name
        super().init_poolmanager(*args, **kwargs)


def requester(settings: ConnectionSettings, timeout: float) -> Requester:
    """A python-nomad ``Requester`` that verifies TLS unless told not to.

    python-nomad's own default is ``verify=False``; the official CLI verifies, and
    so do we, against ``NOMAD_CACERT`` when it is set.
    """
    verify: bool | str = not settings.skip_verify
    if settings.ca_cert and verify:
        verify = settings.ca_cert
    cert = ()
    if settings.client_cert and settings.client_key:
        cert = (settings.client_cert, settings.client_key)
    session = requests.Session()
    address = settings.address.rstrip("/")
    if is_unix_address(address):
        # The Task API socket: plain HTTP to the local agent, authenticated by the
        # workload identity in the token.
        session.mount(SOCKET_BASE_URL + "/", UnixSocketAdapter(socket_path(address)))
        address = SOCKET_BASE_URL
    elif settings.tls_server_name:
        session.mount("https://", _ServerNameAdapter(settings.tls_server_name))
    return Requester(
        address=address,
        token=settings.token,
        region=settings.region,
        namespace=settings.namespace,
        timeout=timeout,
        verify=verify,
        cert=cert,
        session=session,
    )
