"""API failures explained in terms of the setting that fixes them, and the
transient/permanent policy that decides whether a failure is retried.

A failed handshake reaches the transport as a bare SSL error, a reset or an EOF;
this module turns it into "set METAFLOW_NOMAD_CACERT to the cluster's CA" and
the like, probing the server itself where the error alone does not say why.
Pure functions, apart from those TLS probes: the client decides what to do.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Any

from metaflow_nomad.api.connection import SETTING, ConnectionSettings
from metaflow_nomad.api.transport import HttpError, NoAnswer, tls_context
from metaflow_nomad.errors import NomadClientError

TRANSIENT_STATUS = {500, 502, 503, 504, 429}
# Nomad answers 500 for some requests that will fail the same way every time.
PERMANENT_500_MARKERS = (
    "job already exists",
    "Permission denied",
    "validation failed",
    "No path to region",
    "nonexistent namespace",
    "nonexistent node pool",
    # Dispatch and periodic-launch refusals: the request, not the server, is wrong.
    "unpermitted metadata keys",
    "required meta keys",
    "is not a parameterized job",
    "non-tracked job",
)


def explain_tls_failure(settings: ConnectionSettings, exc: Exception) -> str | None:
    """A TLS failure, in terms of the setting that fixes it (None if not a TLS failure).

    Under TLS 1.3 the server checks the client certificate after the client thinks
    the handshake is done, so its alert often loses the race with our request and
    shows up as a bare EOF or reset.  A TLS 1.2 handshake, where that check happens
    inside the handshake, then recovers the server's actual reason.
    """
    if not isinstance(exc, NoAnswer):
        return None
    text = str(exc)
    explained = _classify_tls(settings, text)
    if explained:
        return explained
    is_ssl, aborted = exc.tls, exc.aborted
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
    try:
        context = tls_context(settings)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection((parts.hostname, parts.port or 443), timeout) as sock:
            server_name = settings.tls_server_name or parts.hostname
            with context.wrap_socket(sock, server_hostname=server_name):
                return None
    except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
        return str(exc)


def one_line(text: str) -> str:
    """Nomad's multi-error answers ("1 error occurred:\\n\\t* ...") on one line."""
    return " ".join(re.sub(r"\d+ errors? occurred:|^\s*\* ", "", text, flags=re.M).split())


def is_transient(status: int | None, text: str) -> bool:
    """Worth retrying: no answer at all, overload, or a server-side hiccup."""
    if status is None:
        return True
    if status not in TRANSIENT_STATUS:
        return False
    return not any(marker in text for marker in PERMANENT_500_MARKERS)


def job_namespace(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("Job"), dict):
        return body["Job"].get("Namespace")
    return None


def check_tls_files(s: ConnectionSettings) -> None:
    """Fail before any request when a configured TLS file cannot be used."""
    for attr in ("ca_cert", "client_cert", "client_key"):
        path = getattr(s, attr)
        if path and not os.path.isfile(path):
            raise NomadClientError(f"{SETTING[attr]} is set to {path!r}, which is not a file.")
    if bool(s.client_cert) != bool(s.client_key):
        missing = "client_key" if s.client_cert else "client_cert"
        raise NomadClientError(
            f"A client certificate needs both a certificate and its key: set {SETTING[missing]}."
        )


def explain_api_error(
    settings: ConnectionSettings, method: str, path: str, status: int | None, text: str
) -> str:
    """An API failure other than a denial, with the setting that fixes it."""
    message = _message(settings, method, path, status, text)
    hint = api_error_hint(status, text)
    return f"{message}. {hint}" if hint else message


def api_error_hint(status: int | None, text: str) -> str | None:
    """The setting that fixes an HTTP error answer, when the answer says which."""
    if status == 400 and "HTTP request to an HTTPS server" in text:
        return f"The cluster serves HTTPS: set {SETTING['address']} to https://..."
    if status == 500 and "No path to region" in text:
        return f"Check {SETTING['region']}."
    if status == 500 and "nonexistent namespace" in text:
        return (
            f"Create the namespace, or choose another with "
            f"{SETTING['namespace']} or @nomad(nomad_namespace=...)."
        )
    if status == 500 and "nonexistent node pool" in text:
        return (
            "Create the node pool (`nomad node pool apply`), or choose another with "
            "METAFLOW_NOMAD_NODE_POOL or @nomad(node_pool=...)."
        )
    return None


def explain_denied(
    settings: ConnectionSettings, namespace: str | None, own_token: Callable[[], dict]
) -> str:
    """Tell a missing, an unknown and an under-privileged token apart.

    Nomad answers all three with the same ``403 Permission denied``; looking the
    token up (``own_token``: ``/v1/acl/token/self``) is what separates them.
    """
    namespace = namespace or settings.namespace or "default"
    if not settings.token:
        return (
            f"No ACL token is set and this cluster enforces ACLs: set {SETTING['token']} "
            f"to the Secret ID of a token allowed to submit jobs in namespace '{namespace}'."
        )
    try:
        own = own_token()
    except (HttpError, NoAnswer) as exc:
        status, text = describe_failure(exc)
        if status in (403, 404):
            return unknown_token_message()
        return f"Check {SETTING['token']} (looking the token up failed: {text})."
    policies = ", ".join(own.get("Policies") or []) or "none"
    return (
        f"The ACL token in {SETTING['token']} (name '{own.get('Name') or '-'}', policies: "
        f"{policies}) is not allowed to do this in namespace '{namespace}'. Use a token "
        f"whose policy covers that namespace, or choose a namespace it covers with "
        f"{SETTING['namespace']} or @nomad(nomad_namespace=...)."
    )


def unknown_token_message() -> str:
    return (
        f"Nomad does not know the ACL token in {SETTING['token']}: it is wrong, "
        "expired or was deleted. Set it to the Secret ID of a valid token."
    )


def unreachable_message(settings: ConnectionSettings, text: str) -> str:
    """Nomad did not answer: say at which address, where that address came from, and
    which setting to change, in place of the socket's exception text."""
    reason = _short_reason(text)
    where = f"{settings.address} (from {settings.address_source})"
    return (
        f"cannot reach Nomad at {where}: {reason}. Is the agent running there? To use "
        f"another cluster, set {SETTING['address']}."
    )


def _short_reason(text: str) -> str:
    for marker, reason in (
        ("Connection refused", "connection refused"),
        ("timed out", "the connection timed out"),
        ("Name or service not known", "the host name does not resolve"),
        ("No route to host", "no route to host"),
        ("Temporary failure in name resolution", "the host name does not resolve"),
    ):
        if marker in text:
            return reason
    return text


def describe_failure(exc: HttpError | NoAnswer) -> tuple[int | None, str]:
    """The status and text of an error answer; no status when there was no answer."""
    if isinstance(exc, HttpError):
        return exc.response.status_code, exc.response.text.strip()
    return None, str(exc)


def _message(
    settings: ConnectionSettings, method: str, path: str, status: int | None, text: str
) -> str:
    path = path.split("?")[0]
    if status is None:
        return f"{method.upper()} /v1/{path}: {unreachable_message(settings, text)}"
    return f"{method.upper()} /v1/{path} returned HTTP {status}: {text}"
