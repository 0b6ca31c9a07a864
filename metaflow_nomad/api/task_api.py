"""HTTP over a Unix socket, for Nomad's Task API (``${NOMAD_SECRETS_DIR}/api.sock``).

A task that exposes its workload identity (``identity { env = true }``) can call
the local agent's API through this socket with no stored token and no TLS
material: the agent authenticates the identity and applies the ACL policies
bound to the job.  The transport opens ``unix://`` addresses with this
connection class instead of a TCP one.
"""

from __future__ import annotations

import http.client
import socket

UNIX_SCHEME = "unix://"


def is_unix_address(address: str) -> bool:
    return address.startswith(UNIX_SCHEME)


def socket_path(address: str) -> str:
    return address[len(UNIX_SCHEME) :]


class UnixSocketConnection(http.client.HTTPConnection):
    """An HTTP connection whose every request goes to one Unix socket."""

    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
