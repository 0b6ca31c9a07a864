"""HTTP to Nomad on the standard library, set up the way the official CLI authenticates.

Kept apart from the client so that the client holds only the API and its retry
policy; this is the one place that opens connections and decides TLS
verification.  It uses ``http.client`` rather than ``requests`` because the
per-task launcher imports it: ``requests`` alone costs a launcher about 10 MB
and 0.1 s of CPU, for every task of a foreach.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import socket
import ssl
import threading
import urllib.parse
from typing import Any, Union

from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.task_api import UnixSocketConnection, is_unix_address, socket_path

# The API paths python-nomad (and the CLI) scope to the client's namespace.
NAMESPACED_ENDPOINTS = frozenset(
    {
        "job",
        "jobs",
        "allocation",
        "allocations",
        "deployment",
        "deployments",
        "acl",
        "client",
        "node",
        "variable",
        "variables",
    }
)
# Idle connections kept for reuse (the launcher's tracker thread and main thread).
MAX_IDLE_CONNECTIONS = 4

Timeout = Union[float, tuple[float, float]]


class Response:
    """An API answer: its status, headers and body."""

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes):
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class HttpError(Exception):
    """Nomad answered with an error status."""

    def __init__(self, response: Response):
        super().__init__(f"HTTP {response.status_code}: {response.text.strip()}")
        self.response = response


class NoAnswer(Exception):
    """Nomad did not answer: the connection failed, timed out, or its TLS handshake did.

    ``tls`` says the TLS layer raised it; ``aborted`` that the peer cut the
    connection (a reset, or an end of stream where an answer should be).
    """

    def __init__(self, reason: str, tls: bool = False, aborted: bool = False):
        super().__init__(reason)
        self.tls = tls
        self.aborted = aborted


class Transport:
    """Requests to one Nomad address, with its token, region and namespace applied."""

    def __init__(self, settings: ConnectionSettings, timeout: float):
        self.settings = settings
        self.timeout = timeout
        address = settings.address.rstrip("/")
        self._unix_path = socket_path(address) if is_unix_address(address) else None
        parts = urllib.parse.urlsplit(address) if self._unix_path is None else None
        self._https = bool(parts and parts.scheme == "https")
        self._host = parts.hostname if parts else "localhost"
        self._port = (parts.port if parts else None) or (443 if self._https else 80)
        self._base_path = (parts.path if parts else "").rstrip("/")
        self._tls_context = None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        endpoint: str,
        params: dict | None = None,
        json: Any = None,
        timeout: Timeout | None = None,
    ) -> Response:
        """One request; raises ``HttpError`` for an error status, ``NoAnswer`` for none."""
        connect_timeout, read_timeout = _split_timeout(timeout or self.timeout)
        target = self._target(endpoint, params)
        body = None if json is None else jsonlib.dumps(json).encode()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.settings.token:
            headers["X-Nomad-Token"] = self.settings.token
        try:
            response = self._exchange(
                method.upper(), target, body, headers, connect_timeout, read_timeout
            )
        except OSError as exc:
            raise _no_answer(exc) from None
        except http.client.HTTPException as exc:
            raise NoAnswer(f"Connection broken: {exc!r}", aborted=True) from None
        if response.status_code >= 400:
            raise HttpError(response)
        return response

    def _target(self, endpoint: str, params: dict | None) -> str:
        query = {key: value for key, value in (params or {}).items() if value is not None}
        section = endpoint.split("/")[1] if endpoint.count("/") else ""
        namespaced = section in NAMESPACED_ENDPOINTS
        if "namespace" not in query and self.settings.namespace and namespaced:
            query["namespace"] = self.settings.namespace
        if "region" not in query and self.settings.region:
            query["region"] = self.settings.region
        path = f"{self._base_path}/{endpoint}"
        return f"{path}?{urllib.parse.urlencode(query)}" if query else path

    def _exchange(self, method, target, body, headers, connect_timeout, read_timeout) -> Response:
        """Send on an idle connection if there is one; a connection the server closed
        while idle fails before any answer, and the request goes again on a new one."""
        connection = self._take_idle()
        if connection is not None:
            try:
                return self._send(connection, method, target, body, headers, read_timeout)
            except (OSError, http.client.HTTPException):
                connection.close()
        connection = self._connect(connect_timeout)
        try:
            return self._send(connection, method, target, body, headers, read_timeout)
        except BaseException:
            connection.close()
            raise

    def _send(self, connection, method, target, body, headers, read_timeout) -> Response:
        connection.sock.settimeout(read_timeout)
        connection.request(method, target, body=body, headers=headers)
        answer = connection.getresponse()
        content = answer.read()
        response = Response(answer.status, dict(answer.getheaders()), content)
        if answer.will_close:
            connection.close()
        else:
            self._put_idle(connection)
        return response

    def _connect(self, connect_timeout: float) -> http.client.HTTPConnection:
        if self._unix_path is not None:
            connection: http.client.HTTPConnection = UnixSocketConnection(
                self._unix_path, connect_timeout
            )
        elif self._https:
            connection = _TlsConnection(
                self._host,
                self._port,
                connect_timeout,
                self._context(),
                self.settings.tls_server_name or self._host,
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=connect_timeout)
        connection.connect()
        return connection

    def _context(self):
        if self._tls_context is None:
            self._tls_context = tls_context(self.settings)
        return self._tls_context

    def _take_idle(self) -> http.client.HTTPConnection | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _put_idle(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class _TlsConnection(http.client.HTTPConnection):
    """HTTPS that checks the certificate against a chosen name (NOMAD_TLS_SERVER_NAME)."""

    def __init__(self, host: str, port: int, timeout: float, context, server_name: str):
        super().__init__(host, port, timeout=timeout)
        self._tls = context
        self._server_name = server_name

    def connect(self) -> None:
        super().connect()
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


def tls_context(settings: ConnectionSettings):
    """TLS verified against NOMAD_CACERT (or the system's CAs) unless skip_verify is
    set, with the client certificate when there is one, like the Nomad CLI."""
    if settings.skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=settings.ca_cert)
    if settings.client_cert and settings.client_key:
        context.load_cert_chain(settings.client_cert, settings.client_key)
    return context


def _split_timeout(timeout: Timeout) -> tuple[float, float]:
    if isinstance(timeout, tuple):
        return timeout
    return timeout, timeout


def _no_answer(exc: OSError) -> NoAnswer:
    """How the connection failed, in words that say whether TLS or the peer did it."""
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
        eof = isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError))
        return NoAnswer(f"SSLError: {exc}", tls=True, aborted=eof)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return NoAnswer(f"the request timed out: {exc}")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return NoAnswer(f"Connection aborted: {exc}", aborted=True)
    return NoAnswer(f"Connection failed: {exc}")
