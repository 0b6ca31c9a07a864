"""Failed API requests as typed errors that name the setting that fixes them, and
the transient/permanent policy that decides whether a failure is retried.

``classify_failure`` is the one place that reads Nomad's status and answer: Nomad
has no error codes, only words, so callers catch ``NomadNotFound``,
``NomadForbidden``... instead of matching text that a Nomad release may reword.
A failed handshake reaches the transport as a bare SSL error, a reset or an EOF;
the classifier turns it into "set METAFLOW_NOMAD_CACERT to the cluster's CA" and
the like, probing the server itself where the error alone does not say why.
Pure functions, apart from those TLS probes and the token lookup a denial needs.
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
from metaflow_nomad.api.task_api import is_unix_address
from metaflow_nomad.api.transport import HttpError, NoAnswer, tls_context
from metaflow_nomad.errors import (
    NomadAclDisabled,
    NomadBadRequest,
    NomadClientError,
    NomadForbidden,
    NomadNotFound,
    NomadParseError,
    NomadTlsError,
    NomadTlsMismatch,
    NomadTokenMissing,
    NomadUnknownNamespace,
    NomadUnknownNodePool,
    NomadUnreachable,
    sentence,
)

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
# Nomad's own words for the failures callers tell apart (read by classify_failure only).
HTTPS_ANSWER = "HTTP request to an HTTPS server"
ACL_DISABLED_ANSWER = "ACL support disabled"
NOT_STARTED_ANSWER = "not started"
# A server that does not find the token in its own copy of the cluster's state.
TOKEN_NOT_FOUND_ANSWER = "ACL token not found"
PARSE_PREAMBLE = "Failed to parse job: "
NO_REGION_ANSWER = "No path to region"
NO_NAMESPACE_ANSWER = "nonexistent namespace"
NO_NODE_POOL_ANSWER = re.compile(r'nonexistent node pool "([^"]*)"')


def classify_failure(
    settings: ConnectionSettings,
    request: str,
    failure: HttpError | NoAnswer,
    namespace: str | None,
    own_token: Callable[[], dict],
) -> tuple[NomadClientError, bool]:
    """The typed error for a failed ``request`` ("GET /v1/jobs"), and whether
    retrying it may help.

    The one place that reads Nomad's status and answer, once.  ``namespace`` is
    the one the request was about and ``own_token`` looks the token up
    (``/v1/acl/token/self``): a denial says which token lacks what, where.
    """
    if isinstance(failure, NoAnswer):
        tls = _tls_failure(settings, failure)
        if tls is not None:
            kind, detail = tls
            return kind(detail, request), False
        return NomadUnreachable(unreachable_message(settings, str(failure)), request), True
    status = failure.response.status_code
    raw = failure.response.text.strip()
    transient = is_transient(status, raw)
    answer = one_line(raw) or f"HTTP {status}"
    if status == 400 and HTTPS_ANSWER in answer:
        detail = f"{answer}. The cluster serves HTTPS: set {SETTING['address']} to https://..."
        return NomadTlsMismatch(detail, request, status), transient
    if status == 403:
        kind, why, own = _why_denied(settings, namespace, own_token)
        if own is not None and TOKEN_NOT_FOUND_ANSWER in answer:
            # The lookup (a query the server forwards to the leader) found the token the
            # server itself did not: a server that (re)started and has not yet applied
            # the raft log answers so for a few seconds.  Retried.
            why = lagging_server_message(settings)
            return kind(f"{answer}. {why}", request, status, explanation=why), True
        return kind(f"{answer}. {why}", request, status, explanation=why), transient
    if status == 404 or NOT_STARTED_ANSWER in answer:
        return NomadNotFound(answer, request, status), transient
    if status == 400 and ACL_DISABLED_ANSWER in answer:
        return NomadAclDisabled(answer, request, status), transient
    if status == 400:
        reason = answer.removeprefix(PARSE_PREAMBLE)
        return NomadBadRequest(answer, request, status, reason=reason), transient
    if status == 500:
        return _missing_on_cluster(answer, request, status), transient
    return NomadClientError(answer, request, status), transient


def _missing_on_cluster(answer: str, request: str, status: int) -> NomadClientError:
    """A 500 naming a region, namespace or node pool the cluster lacks, with where to
    choose another; any other 500 as it is."""
    pool = NO_NODE_POOL_ANSWER.search(answer)
    if pool:
        detail = (
            f"{answer}. Create the node pool (`nomad node pool apply`), or choose another "
            "with METAFLOW_NOMAD_NODE_POOL or @nomad(node_pool=...)."
        )
        return NomadUnknownNodePool(detail, request, status, node_pool=pool.group(1))
    if NO_NAMESPACE_ANSWER in answer:
        detail = (
            f"{answer}. Create the namespace, or choose another with "
            f"{SETTING['namespace']} or @nomad(nomad_namespace=...)."
        )
        return NomadUnknownNamespace(detail, request, status)
    if NO_REGION_ANSWER in answer:
        return NomadClientError(f"{answer}. Check {SETTING['region']}.", request, status)
    return NomadClientError(answer, request, status)


def _tls_failure(
    settings: ConnectionSettings, failure: NoAnswer
) -> tuple[type[NomadTlsError], str] | None:
    """A TLS failure's class, and what to set to fix it (None if not a TLS failure).

    Under TLS 1.3 the server checks the client certificate after the client thinks
    the handshake is done, so its alert often loses the race with our request and
    shows up as a bare EOF or reset.  A TLS 1.2 handshake, where that check happens
    inside the handshake, then recovers the server's actual reason.
    """
    text = str(failure)
    explained = _classify_tls(settings, text)
    if explained:
        return explained
    if settings.address.startswith("http://") and failure.aborted and _speaks_tls(settings.address):
        return (
            NomadTlsMismatch,
            f"the cluster serves HTTPS: set {SETTING['address']} to https://...",
        )
    if settings.address.startswith("https://") and (failure.tls or failure.aborted):
        probe = _tls12_handshake_error(settings)
        explained = _classify_tls(settings, probe) if probe else None
        if explained:
            return explained
    if failure.tls:
        return NomadTlsError, (
            f"TLS handshake with {settings.address} failed ({text}); check "
            f"{SETTING['ca_cert']}, {SETTING['client_cert']} and {SETTING['client_key']}."
        )
    return None


def _classify_tls(
    settings: ConnectionSettings, text: str
) -> tuple[type[NomadTlsError], str] | None:
    """OpenSSL's reason (its names, in the error's text) -> the setting that fixes it."""
    upper = text.upper()
    if "WRONG_VERSION_NUMBER" in upper:
        return NomadTlsMismatch, (
            f"{settings.address} does not speak TLS; use http:// in {SETTING['address']} "
            "or enable TLS on the cluster."
        )
    problem = _certificate_problem(settings, upper)
    return (NomadTlsError, problem) if problem else None


def _certificate_problem(settings: ConnectionSettings, upper: str) -> str | None:
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
        return "ALERT" in (exc.reason or "")
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


def _why_denied(
    settings: ConnectionSettings, namespace: str | None, own_token: Callable[[], dict]
) -> tuple[type[NomadForbidden], str, dict | None]:
    """Tell a missing, an unknown and an under-privileged token (or a task's workload
    identity) apart, and say what to change; with the token as the lookup found it
    (None when it was not looked up, or not found).

    Nomad answers all of them with the same ``403 Permission denied``; looking the
    token up (``own_token``: ``/v1/acl/token/self``) is what separates them.
    """
    namespace = namespace or settings.namespace or "default"
    if is_unix_address(settings.address):
        why = (
            f"This task's workload identity is not allowed to do this in namespace "
            f"'{namespace}'. A deployed flow's runner needs its ACL policy bound to its "
            "runner job: `python FLOW.py nomad-workflows policy` prints the policy and "
            "the `nomad acl policy apply` command. (Nomad also stops accepting the "
            "identity as soon as the task's allocation is being stopped.)"
        )
        return NomadForbidden, why, None
    if not settings.token:
        return NomadTokenMissing, sentence(missing_token_clause(namespace)), None
    try:
        own = own_token()
    except (HttpError, NoAnswer) as exc:
        if isinstance(exc, HttpError) and exc.response.status_code in (403, 404):
            return NomadForbidden, unknown_token_message(), None
        text = exc.response.text.strip() if isinstance(exc, HttpError) else str(exc)
        why = f"Check {SETTING['token']} (looking the token up failed: {text})."
        return NomadForbidden, why, None
    policies = ", ".join(own.get("Policies") or []) or "none"
    why = (
        f"The ACL token in {SETTING['token']} (name '{own.get('Name') or '-'}', policies: "
        f"{policies}) is not allowed to do this in namespace '{namespace}'. Use a token "
        f"whose policy covers that namespace, or choose a namespace it covers with "
        f"{SETTING['namespace']} or @nomad(nomad_namespace=...)."
    )
    return NomadForbidden, why, own


def missing_token_clause(namespace: str) -> str:
    """Why a request without a token was denied; a clause, as doctor says it after
    "denied: " (a denial's message makes it a sentence)."""
    return (
        f"no ACL token is set and this cluster enforces ACLs: set {SETTING['token']} "
        f"to the Secret ID of a token allowed to submit jobs in namespace '{namespace}'."
    )


def lagging_server_message(settings: ConnectionSettings) -> str:
    """The cluster knows the token, the server that answered does not yet."""
    return (
        f"The cluster knows the ACL token in {SETTING['token']}, but the server at "
        f"{settings.address} does not yet: it has just (re)started and is catching up "
        "with the cluster's state."
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


# Nomad's HCL diagnostic: ``input.hcl:L,C-C: Summary; Detail``.
_PARSE_DIAGNOSTIC = re.compile(r"input\.hcl:(\d+),(\d+)-(?:(\d+),)?(\d+): (.*)")


def parse_rejection(reason: str) -> NomadParseError:
    """The parse endpoint's rejection, with the line and diagnostic it names as data."""
    match = _PARSE_DIAGNOSTIC.search(reason)
    if match is None:
        return NomadParseError(reason)
    return NomadParseError(reason, line=int(match.group(1)), said=match.group(5))
