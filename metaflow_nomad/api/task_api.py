"""HTTP over a Unix socket, for Nomad's Task API (``${NOMAD_SECRETS_DIR}/api.sock``).

A task that exposes its workload identity (``identity { env = true }``) can call
the local agent's API through this socket with no stored token and no TLS
material: the agent authenticates the identity and applies the ACL policies
bound to the job.  ``requests`` speaks only TCP, so ``unix://`` addresses are
served by a small transport adapter mounted on a placeholder host.
"""

from __future__ import annotations

import socket

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

UNIX_SCHEME = "unix://"
# requests needs an http URL; every request to it goes to the socket instead.
SOCKET_BASE_URL = "http://nomad-task-api"


def is_unix_address(address: str) -> bool:
    return address.startswith(UNIX_SCHEME)


def socket_path(address: str) -> str:
    return address[len(UNIX_SCHEME) :]


class _UnixConnection(HTTPConnection):
    def __init__(self, path: str, **kwargs):
        super().__init__("localhost", **kwargs)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixConnectionPool(HTTPConnectionPool):
    def __init__(self, path: str, timeout: float | None = None, maxsize: int = 4):
        super().__init__("localhost", timeout=timeout, maxsize=maxsize)
        self._path = path

    def _new_conn(self) -> _UnixConnection:
        return _UnixConnection(self._path, timeout=self.timeout.connect_timeout)


class UnixSocketAdapter(HTTPAdapter):
    """Send every request of the session it is mounted on to one Unix socket."""

    def __init__(self, path: str):
        self._path = path
        self._pool = _UnixConnectionPool(path)
        super().__init__()

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self._pool

    def get_connection(self, url, proxies=None):  # requests < 2.32
        return self._pool

    def close(self) -> None:
        self._pool.close()
        super().close()
