"""The only module that talks to Nomad.

It wraps python-nomad for the connection (address, token, TLS, namespace,
region) and adds what python-nomad lacks: blocking queries (``index``/``wait``),
authentication the way the official CLI does it (token, CA, client certificate,
TLS server name, skip-verify; verification on by default, where python-nomad's
default is off), errors that name the setting to fix, bounded retries with
backoff for transient errors (and none for permanent ones), escaping of IDs in
URL paths, and a request counter for the benchmarks.

Secrets (the token, key material) never enter a message, a repr or a log line:
errors name the *setting*, never its value.
"""

from __future__ import annotations

import os
import random
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nomad.api.exceptions as nomad_exc
import requests
from nomad.api.base import Requester
from requests.adapters import HTTPAdapter

from .config import is_truthy
from .errors import NomadClientError, NomadParseError

if TYPE_CHECKING:
    from .jobspec import TlsMaterial

DEFAULT_ADDRESS = "http://127.0.0.1:4646"
# Nomad adds up to wait/16 of jitter to a blocking query; leave room for it.
BLOCKING_WAIT_S = 30
TRANSIENT_STATUS = {500, 502, 503, 504, 429}
# Nomad answers 500 for some requests that will fail the same way every time.
PERMANENT_500_MARKERS = (
    "job already exists",
    "Permission denied",
    "validation failed",
    "No path to region",
    "nonexistent namespace",
)
# Backoff between attempts: FIRST_BACKOFF_S doubling up to max_backoff, times a
# jitter in [JITTER_LOW, 1].  With the defaults six attempts wait at least
# 0.75 * (1 + 2 + 4 + 8 + 12) = 20.25 s even when every attempt fails at once
# (connection refused), and at most 27 s; against a hung agent each attempt also
# spends its timeout.  Either way a 20 s API outage is ridden out.
FIRST_BACKOFF_S = 1.0
JITTER_LOW = 0.75
# Where each connection setting comes from, for messages that tell users what to set.
SETTING = {
    "address": "METAFLOW_NOMAD_ADDRESS (or NOMAD_ADDR)",
    "token": "METAFLOW_NOMAD_TOKEN (or NOMAD_TOKEN)",
    "ca_cert": "METAFLOW_NOMAD_CACERT (or NOMAD_CACERT)",
    "client_cert": "METAFLOW_NOMAD_CLIENT_CERT (or NOMAD_CLIENT_CERT)",
    "client_key": "METAFLOW_NOMAD_CLIENT_KEY (or NOMAD_CLIENT_KEY)",
    "tls_server_name": "METAFLOW_NOMAD_TLS_SERVER_NAME (or NOMAD_TLS_SERVER_NAME)",
    "skip_verify": "METAFLOW_NOMAD_SKIP_VERIFY (or NOMAD_SKIP_VERIFY)",
    "region": "METAFLOW_NOMAD_REGION (or NOMAD_REGION)",
    "namespace": "METAFLOW_NOMAD_NAMESPACE (or NOMAD_NAMESPACE)",
}


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

    @classmethod
    def from_config(cls, config: Mapping[str, str]) -> ConnectionSettings:
        """Build from ``read_config()`` output (METAFLOW_NOMAD_* then NOMAD_*)."""
        return cls(
            address=config.get("NOMAD_ADDRESS", DEFAULT_ADDRESS),
            token=config.get("NOMAD_TOKEN"),
            region=config.get("NOMAD_REGION"),
            namespace=config.get("NOMAD_NAMESPACE"),
            ca_cert=config.get("NOMAD_CACERT"),
            client_cert=config.get("NOMAD_CLIENT_CERT"),
            client_key=config.get("NOMAD_CLIENT_KEY"),
            tls_server_name=config.get("NOMAD_TLS_SERVER_NAME"),
            skip_verify=is_truthy(config.get("NOMAD_SKIP_VERIFY")),
        )

    def __repr__(self) -> str:  # never show the token
        return f"ConnectionSettings(address={self.address!r}, namespace={self.namespace!r})"

    @property
    def uses_mtls(self) -> bool:
        return self.address.startswith("https://") and bool(self.client_cert)


class _ServerNameAdapter(HTTPAdapter):
    """Verify the server certificate against a fixed name (NOMAD_TLS_SERVER_NAME)."""

    def __init__(self, server_name: str):
        self._server_name = server_name
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self._server_name
        kwargs["assert_hostname"] = self._server_name
        super().init_poolmanager(*args, **kwargs)


class NomadClient:
    def __init__(
        self,
        settings: ConnectionSettings,
        timeout: float = 10,
        max_attempts: int = 6,
        max_backoff: float = 12.0,
    ):
        self.settings = settings
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self.request_count = 0
        self._checked_tls_files = False
        # Unlike python-nomad (verify=False), verify unless explicitly told not to.
        verify: bool | str = not settings.skip_verify
        if settings.ca_cert and verify:
            verify = settings.ca_cert
        cert = ()
        if settings.client_cert and settings.client_key:
            cert = (settings.client_cert, settings.client_key)
        session = requests.Session()
        if settings.tls_server_name:
            session.mount("https://", _ServerNameAdapter(settings.tls_server_name))
        self._api = Requester(
            address=settings.address.rstrip("/"),
            token=settings.token,
            region=settings.region,
            namespace=settings.namespace,
            timeout=timeout,
            verify=verify,
            cert=cert,
            session=session,
        )

    def min_retry_wait(self) -> float:
        """The least total backoff before a transient failure is given up on."""
        delays = [FIRST_BACKOFF_S * 2**n for n in range(self.max_attempts - 1)]
        return sum(min(self.max_backoff, d) * JITTER_LOW for d in delays)

    def _check_tls_files(self) -> None:
        """Fail before any request when a configured TLS file cannot be used."""
        s = self.settings
        for attr in ("ca_cert", "client_cert", "client_key"):
            path = getattr(s, attr)
            if path and not os.path.isfile(path):
                raise NomadClientError(f"{SETTING[attr]} is set to {path!r}, which is not a file.")
        if bool(s.client_cert) != bool(s.client_key):
            missing = "client_key" if s.client_cert else "client_cert"
            raise NomadClientError(
                f"A client certificate needs both a certificate and its key: set "
                f"{SETTING[missing]}."
            )
        self._checked_tls_files = True

    # -- plumbing --------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        json: Any = None,
        timeout: float | None = None,
        retry: bool = True,
    ) -> requests.Response:
        """One API call with bounded exponential backoff on transient failures.

        Permanent failures (4xx, TLS, validation) raise at once with a message that
        names the setting to fix: retrying them only delays the same answer.
        """
        if not self._checked_tls_files:
            self._check_tls_files()
        attempts = self.max_attempts if retry else 1
        delay = FIRST_BACKOFF_S
        for attempt in range(1, attempts + 1):
            self.request_count += 1
            try:
                return self._api._request(
                    method=method,
                    endpoint="v1/" + path,
                    params=dict(params or {}),
                    json=json,
                    timeout=timeout or self.timeout,
                )
            except nomad_exc.BaseNomadException as exc:
                status, text = _describe(exc)
                tls_problem = _explain_tls(self.settings, exc)
                if tls_problem:
                    raise NomadClientError(
                        f"{method.upper()} /v1/{path}: {tls_problem}", status
                    ) from None
                if not is_transient(status, text) or attempt == attempts:
                    raise NomadClientError(
                        self._explain(method, path, status, text, params, json), status
                    ) from None
            time.sleep(min(self.max_backoff, delay) * random.uniform(JITTER_LOW, 1.0))
            delay *= 2
        raise AssertionError("unreachable")

    def _explain(
        self,
        method: str,
        path: str,
        status: int | None,
        text: str,
        params: Mapping | None,
        body: Any,
    ) -> str:
        message = _message(method, path, status, text)
        if status == 403:
            namespace = (params or {}).get("namespace") or _job_namespace(body)
            return f"{message}. {self._explain_denied(namespace)}"
        if status == 400 and "HTTP request to an HTTPS server" in text:
            return f"{message}. The cluster serves HTTPS: set {SETTING['address']} to https://..."
        if status == 500 and "No path to region" in text:
            return f"{message}. Check {SETTING['region']}."
        if status == 500 and "nonexistent namespace" in text:
            return (
                f"{message}. Create the namespace, or choose another with "
                f"{SETTING['namespace']} or @nomad(nomad_namespace=...)."
            )
        return message

    def _explain_denied(self, namespace: str | None) -> str:
        """Tell a missing, an unknown and an under-privileged token apart.

        Nomad answers all three with the same ``403 Permission denied``; looking the
        token up (``/v1/acl/token/self``) is what separates them.
        """
        namespace = namespace or self.settings.namespace or "default"
        if not self.settings.token:
            return (
                f"No ACL token is set and this cluster enforces ACLs: set {SETTING['token']} "
                f"to the Secret ID of a token allowed to submit jobs in namespace '{namespace}'."
            )
        self.request_count += 1
        try:
            own = self._api._request(
                method="get", endpoint="v1/acl/token/self", params={}, timeout=self.timeout
            ).json()
        except nomad_exc.BaseNomadException as exc:
            status, text = _describe(exc)
            if status in (403, 404):
                return (
                    f"Nomad does not know the ACL token in {SETTING['token']}: it is wrong, "
                    "expired or was deleted. Set it to the Secret ID of a valid token."
                )
            return f"Check {SETTING['token']} (looking the token up failed: {text})."
        policies = ", ".join(own.get("Policies") or []) or "none"
        return (
            f"The ACL token in {SETTING['token']} (name '{own.get('Name') or '-'}', policies: "
            f"{policies}) is not allowed to do this in namespace '{namespace}'. Use a token "
            f"whose policy covers that namespace, or choose a namespace it covers with "
            f"{SETTING['namespace']} or @nomad(nomad_namespace=...)."
        )

    # -- jobs --------------------------------------------------------------------

    def parse(self, hcl: str) -> dict:
        """HCL -> Job JSON via the cluster's own parser (canonicalized)."""
        try:
            return self._call(
                "post", "jobs/parse", json={"JobHCL": hcl, "Canonicalize": True}
            ).json()
        except NomadClientError as exc:
            if exc.status == 400 and "HTTPS server" not in str(exc):
                raise NomadParseError(str(exc).split(": ", 2)[-1]) from None
            raise

    def register(self, job: dict, source: str | None = None) -> dict:
        """Submit a parsed job; ``source`` (the HCL) is stored with it, so the Nomad
        UI and ``nomad job inspect`` show exactly what was rendered."""
        body: dict[str, Any] = {"Job": job}
        if source is not None:
            body["Submission"] = {"Source": source, "Format": "hcl2"}
        return self._call("post", "jobs", json=body).json()

    def job_submission(self, job_id: str, version: int = 0, namespace: str | None = None) -> dict:
        return self._call(
            "get", f"job/{_quote(job_id)}/submission", params={"version": version, **_ns(namespace)}
        ).json()

    def deregister(
        self,
        job_id: str,
        purge: bool = False,
        timeout: float | None = None,
        namespace: str | None = None,
    ) -> dict:
        """Stop a job by its exact ID (Nomad answers 200 even for unknown IDs)."""
        params = {"purge": "true"} if purge else {}
        params.update(_ns(namespace or self.settings.namespace))
        return self._call("delete", "job/" + _quote(job_id), params=params, timeout=timeout).json()

    def job(self, job_id: str, namespace: str | None = None) -> dict | None:
        try:
            return self._call("get", "job/" + _quote(job_id), params=_ns(namespace)).json()
        except NomadClientError as exc:
            if exc.status == 404:
                return None
            raise

    def list_jobs(
        self,
        prefix: str | None = None,
        filter_expr: str | None = None,
        namespace: str | None = None,
    ) -> list[dict]:
        params = {"meta": "true", **_ns(namespace)}
        if prefix:
            params["prefix"] = prefix
        if filter_expr:
            params["filter"] = filter_expr
        return self._call("get", "jobs", params=params).json()

    def blocking_get(
        self, path: str, index: int = 0, wait_s: float = BLOCKING_WAIT_S, params: dict | None = None
    ) -> tuple[Any, int]:
        """A blocking query: returns when the result changes past ``index`` or on timeout."""
        query = dict(params or {})
        if index:
            query.update(index=str(index), wait=f"{int(wait_s)}s")
        response = self._call("get", path, params=query, timeout=wait_s * 1.1 + self.timeout)
        return response.json(), int(response.headers.get("X-Nomad-Index", 0))

    def job_allocations(
        self,
        job_id: str,
        index: int = 0,
        wait_s: float = BLOCKING_WAIT_S,
        namespace: str | None = None,
    ):
        return self.blocking_get(
            f"job/{_quote(job_id)}/allocations", index, wait_s, {"all": "true", **_ns(namespace)}
        )

    def job_evaluations(
        self,
        job_id: str,
        index: int = 0,
        wait_s: float = BLOCKING_WAIT_S,
        namespace: str | None = None,
    ) -> tuple[list[dict], int]:
        """A job's evaluations, as a blocking query past ``index``."""
        return self.blocking_get(f"job/{_quote(job_id)}/evaluations", index, wait_s, _ns(namespace))

    def allocation(self, alloc_id: str) -> dict:
        return self._call("get", "allocation/" + _quote(alloc_id)).json()

    def alloc_logs(self, alloc_id: str, task: str, stream: str, tail_bytes: int) -> str:
        """The last ``tail_bytes`` of a task's stdout/stderr ('' before the task starts)."""
        params = {
            "task": task,
            "type": stream,
            "origin": "end",
            "offset": str(tail_bytes),
            "plain": "true",
            "follow": "false",
        }
        try:
            response = self._call("get", "client/fs/logs/" + _quote(alloc_id), params=params)
        except NomadClientError as exc:
            if exc.status in (404, 400) or "not started" in str(exc):
                return ""
            raise
        return response.content.decode("utf-8", errors="replace")

    def leader(self) -> str:
        return self._call("get", "status/leader", retry=False).json()


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
    from .jobspec import TlsMaterial

    task_dir = "/etc/metaflow-nomad/tls" if driver == "docker" else task_tls_dir
    return TlsMaterial(address=settings.address, source_dir=task_tls_dir, task_dir=task_dir)


def is_transient(status: int | None, text: str) -> bool:
    """Worth retrying: no answer at all, overload, or a server-side hiccup."""
    if status is None:
        return True
    if status not in TRANSIENT_STATUS:
        return False
    return not any(marker in text for marker in PERMANENT_500_MARKERS)


def _explain_tls(settings: ConnectionSettings, exc: nomad_exc.BaseNomadException) -> str | None:
    """A TLS failure, in terms of the setting that fixes it (None if not a TLS failure).

    Under TLS 1.3 the server checks the client certificate after the client thinks
    the handshake is done, so its alert often loses the race with our request and
    shows up as a bare EOF or reset.  A TLS 1.2 handshake, where that check happens
    inside the handshake, then recovers the server's actual reason.
    """
    cause = getattr(exc, "nomad_resp", None)
    if not isinstance(cause, requests.exceptions.RequestException):
        return None
    text = str(cause)
    explained = _classify_tls(settings, text)
    if explained:
        return explained
    is_ssl = isinstance(cause, requests.exceptions.SSLError)
    aborted = any(m in text for m in ("Connection aborted", "Connection broken", "reset by peer"))
    if settings.address.startswith("http://") and aborted and _speaks_tls(settings.address):
        return f"the cluster serves HTTPS: set {SETTING['address']} to https://..."
    if settings.address.startswith("https://") and (is_ssl or aborted):
        probe = _tls12_handshake_error(settings)
        explained = _classify_tls(settings, probe) if probe else None
        if explained:
            return explained
    if is_ssl:
        return (
            f"TLS handshake with {settings.address} failed ({text}); check "
            f"{SETTING['ca_cert']}, {SETTING['client_cert']} and {SETTING['client_key']}."
        )
    return None


def _classify_tls(settings: ConnectionSettings, text: str) -> str | None:
    upper = text.upper()
    if "WRONG_VERSION_NUMBER" in upper:
        return (
            f"{settings.address} does not speak TLS; use http:// in {SETTING['address']} "
            "or enable TLS on the cluster."
        )
    if "MISMATCH" in upper or "DOESN'T MATCH" in upper:
        name = settings.tls_server_name or urllib.parse.urlsplit(settings.address).hostname
        return (
            f"the server's certificate is not valid for the name {name!r}: set "
            f"{SETTING['tls_server_name']} to a name in the certificate, e.g. "
            "server.<region>.nomad."
        )
    if "CERTIFICATE_VERIFY_FAILED" in upper:
        if "EXPIRED" in upper:
            return (
                "the server's certificate has expired; renew it on the cluster (verification "
                f"can only be turned off with {SETTING['skip_verify']}, which is unsafe)."
            )
        if settings.ca_cert:
            return (
                "the server's certificate is not signed by the CA in "
                f"{SETTING['ca_cert']} ({settings.ca_cert}): point it at the cluster's CA."
            )
        return (
            "the server's certificate cannot be verified with the system's trusted CAs: set "
            f"{SETTING['ca_cert']} to the cluster's CA certificate."
        )
    rejected = ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE", "BAD_CERTIFICATE")
    if not settings.client_cert and any(alert in upper for alert in rejected):
        return (
            "the cluster requires a client certificate: set "
            f"{SETTING['client_cert']} and {SETTING['client_key']}."
        )
    if "CERTIFICATE_EXPIRED" in upper:
        return (
            f"the cluster rejected the client certificate in {SETTING['client_cert']} "
            f"({settings.client_cert}) because it has expired: renew it."
        )
    if "UNKNOWN_CA" in upper or "BAD_CERTIFICATE" in upper:
        return (
            f"the cluster rejected the client certificate in {SETTING['client_cert']} "
            f"({settings.client_cert}): it is not signed by the cluster's CA."
        )
    return None


def _speaks_tls(address: str, timeout: float = 5) -> bool:
    """Whether the server at an http:// address actually answers a TLS handshake.

    A plain-HTTP POST to Nomad's HTTPS port is often cut off with a reset before
    Nomad's "HTTP request to an HTTPS server" reply can be read.
    """
    parts = urllib.parse.urlsplit(address)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        sock = socket.create_connection((parts.hostname, parts.port or 80), timeout)
        with sock, context.wrap_socket(sock, server_hostname=parts.hostname):
            return True
    except ssl.SSLError as exc:
        return "ALERT" in str(exc).upper()
    except OSError:
        return False


def _tls12_handshake_error(settings: ConnectionSettings, timeout: float = 5) -> str | None:
    """The error of a TLS 1.2 handshake with the same material (None if it succeeds)."""
    parts = urllib.parse.urlsplit(settings.address)
    if settings.skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=settings.ca_cert)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        if settings.client_cert and settings.client_key:
            context.load_cert_chain(settings.client_cert, settings.client_key)
        with socket.create_connection((parts.hostname, parts.port or 443), timeout) as sock:
            server_name = settings.tls_server_name or parts.hostname
            with context.wrap_socket(sock, server_hostname=server_name):
                return None
    except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
        return str(exc)


def _job_namespace(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("Job"), dict):
        return body["Job"].get("Namespace")
    return None


def _ns(namespace: str | None) -> dict:
    return {"namespace": namespace} if namespace else {}


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _describe(exc: nomad_exc.BaseNomadException) -> tuple[int | None, str]:
    response = getattr(exc, "nomad_resp", None)
    if isinstance(response, requests.Response):
        return response.status_code, response.text.strip()
    return None, str(response or exc)


def _message(method: str, path: str, status: int | None, text: str) -> str:
    path = path.split("?")[0]
    if status is None:
        return f"{method.upper()} /v1/{path}: cannot reach Nomad ({text})"
    return f"{method.upper()} /v1/{path} returned HTTP {status}: {text}"
