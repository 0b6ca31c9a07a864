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

import random
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import nomad.api.exceptions as nomad_exc
import requests
from nomad.api.base import Requester
from requests.adapters import HTTPAdapter

from metaflow_nomad.api.connection import SETTING, ConnectionSettings
from metaflow_nomad.api.diagnosis import (
    check_tls_files,
    describe_failure,
    explain_api_error,
    explain_tls_failure,
    is_transient,
    job_namespace,
)
from metaflow_nomad.api.task_api import (
    SOCKET_BASE_URL,
    UnixSocketAdapter,
    is_unix_address,
    socket_path,
)
from metaflow_nomad.errors import NomadClientError, NomadParseError

# Nomad adds up to wait/16 of jitter to a blocking query; leave room for it.
BLOCKING_WAIT_S = 30
# Backoff between attempts: FIRST_BACKOFF_S doubling up to max_backoff, times a
# jitter in [JITTER_LOW, 1].  With the defaults six attempts wait at least
# 0.75 * (1 + 2 + 4 + 8 + 12) = 20.25 s even when every attempt fails at once
# (connection refused), and at most 27 s; against a hung agent each attempt also
# spends its timeout.  Either way a 20 s API outage is ridden out.
FIRST_BACKOFF_S = 1.0
JITTER_LOW = 0.75


class _ServerNameAdapter(HTTPAdapter):
    """Verify the server certificate against a fixed name (NOMAD_TLS_SERVER_NAME)."""

    def __init__(self, server_name: str):
        self._server_name = server_name
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self._server_name
        kwargs["assert_hostname"] = self._server_name
        super().init_poolmanager(*args, **kwargs)


def _requester(settings: ConnectionSettings, timeout: float) -> Requester:
    """python-nomad's HTTP layer, set up the way the official CLI authenticates."""
    # Unlike python-nomad (verify=False), verify unless explicitly told not to.
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


class NomadClient:
    """The Nomad API, with retries, blocking queries and explained errors."""

    def __init__(
        self,
        settings: ConnectionSettings,
        timeout: float = 10,
        max_attempts: int = 6,
        max_backoff: float = 12.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[float, float], float] = random.uniform,
        transport: Requester | None = None,
    ):
        """``sleep``, ``jitter`` and the HTTP ``transport`` (python-nomad's
        ``Requester``) are injectable, so that the retry policy and its backoff
        budget are unit-tested without waiting and without a cluster."""
        self.settings = settings
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._jitter = jitter
        self.request_count = 0
        self._checked_tls_files = False
        self._api = transport or _requester(settings, timeout)

    def min_retry_wait(self) -> float:
        """The least total backoff before a transient failure is given up on."""
        delays = [FIRST_BACKOFF_S * 2**n for n in range(self.max_attempts - 1)]
        return sum(min(self.max_backoff, d) * JITTER_LOW for d in delays)

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
            check_tls_files(self.settings)
            self._checked_tls_files = True
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
                status, text = describe_failure(exc)
                tls_problem = explain_tls_failure(self.settings, exc)
                if tls_problem:
                    raise NomadClientError(
                        f"{method.upper()} /v1/{path}: {tls_problem}", status
                    ) from None
                if not is_transient(status, text) or attempt == attempts:
                    raise NomadClientError(
                        self._explain(method, path, status, text, params, json), status
                    ) from None
            self._sleep(min(self.max_backoff, delay) * self._jitter(JITTER_LOW, 1.0))
            delay *= 2
        raise AssertionError("unreachable")

    def _explain(self, method, path, status, text, params, body) -> str:
        message = explain_api_error(self.settings, method, path, status, text)
        if status == 403:
            namespace = (params or {}).get("namespace") or job_namespace(body)
            return f"{message}. {self._explain_denied(namespace)}"
        return message

    def _explain_denied(self, namespace: str | None) -> str:
        """Tell a missing, an unknown and an under-privileged token apart.

        Nomad answers all three with the same ``403 Permission denied``; looking the
        token up (``/v1/acl/token/self``) is what separates them.
        """
        namespace = namespace or self.settings.namespace or "default"
        if is_unix_address(self.settings.address):
            return (
                f"This task's workload identity is not allowed to do this in namespace "
                f"'{namespace}'. A deployed flow's runner needs its ACL policy bound to its "
                "runner job: `python FLOW.py nomad-workflows policy` prints the policy and "
                "the `nomad acl policy apply` command. (Nomad also stops accepting the "
                "identity as soon as the task's allocation is being stopped.)"
            )
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
            status, text = describe_failure(exc)
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

    def dispatch(
        self,
        job_id: str,
        meta: dict[str, str],
        namespace: str | None = None,
        idempotency_token: str | None = None,
    ) -> str:
        """Dispatch a parameterized job; returns the dispatched child's ID.

        Retried on transient failures only with an ``idempotency_token``: Nomad then
        answers a repeated dispatch with the child the first one made, where a
        plain retry of a dispatch whose answer was lost would start a second one.
        """
        body: dict[str, Any] = {"Meta": meta}
        if idempotency_token:
            body["IdempotencyToken"] = idempotency_token
        answer = self._call(
            "post",
            f"job/{_quote(job_id)}/dispatch",
            params=_ns(namespace),
            json=body,
            retry=bool(idempotency_token),
        ).json()
        return answer["DispatchedJobID"]

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


def _ns(namespace: str | None) -> dict:
    return {"namespace": namespace} if namespace else {}


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")
