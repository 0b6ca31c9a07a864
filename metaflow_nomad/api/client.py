"""The only module that talks to Nomad.

It sends its requests through ``transport`` (HTTP, TLS and the token) and adds
the API: blocking queries (``index``/``wait``), errors that name the setting to fix,
bounded retries with backoff for transient errors (and none for permanent ones),
escaping of IDs in URL paths, and a request counter for the benchmarks.

Secrets (the token, key material) never enter a message, a repr or a log line:
errors name the *setting*, never its value.
"""

from __future__ import annotations

import random
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.diagnosis import (
    check_tls_files,
    classify_failure,
    job_namespace,
    parse_rejection,
)
from metaflow_nomad.api.transport import HttpError, NoAnswer, Response, Transport
from metaflow_nomad.errors import (
    NomadBadRequest,
    NomadClientError,
    NomadNotFound,
)

# Nomad adds up to wait/16 of jitter to a blocking query; leave room for it.
BLOCKING_WAIT_S = 30
# Backoff between attempts: FIRST_BACKOFF_S doubling up to max_backoff, times a
# jitter in [JITTER_LOW, 1].  With the defaults six attempts wait at least
# 0.75 * (1 + 2 + 4 + 8 + 12) = 20.25 s even when every attempt fails at once
# (connection refused), and at most 27 s; against a hung agent each attempt also
# spends its timeout.  Either way a 20 s API outage is ridden out.
FIRST_BACKOFF_S = 1.0
JITTER_LOW = 0.75


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
        transport: Transport | None = None,
        connect_timeout: float | None = None,
    ):
        """``sleep``, ``jitter`` and the HTTP ``transport`` are injectable, so that
        the retry policy and its backoff budget are unit-tested without waiting and
        without a cluster.
        ``connect_timeout`` bounds the TCP connect alone (a first contact that must
        fail fast); ``timeout`` bounds every request."""
        self.settings = settings
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._jitter = jitter
        self.request_count = 0
        self._checked_tls_files = False
        self._api = transport or Transport(settings, timeout)

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
    ) -> Response:
        """One API call with bounded exponential backoff on transient failures.

        Permanent failures (4xx, TLS, validation) raise at once: retrying them only
        delays the same answer.  Either way the error is the typed one
        ``classify_failure`` makes, whose message names the setting to fix.
        """
        if not self._checked_tls_files:
            check_tls_files(self.settings)
            self._checked_tls_files = True
        attempts = self.max_attempts if retry else 1
        delay = FIRST_BACKOFF_S
        limit = timeout or self.timeout
        for attempt in range(1, attempts + 1):
            self.request_count += 1
            try:
                return self._api.request(
                    method,
                    "v1/" + path,
                    params=dict(params or {}),
                    json=json,
                    timeout=(self.connect_timeout, limit) if self.connect_timeout else limit,
                )
            except (HttpError, NoAnswer) as failure:
                error, transient = classify_failure(
                    self.settings,
                    f"{method.upper()} /v1/{path}",
                    failure,
                    (params or {}).get("namespace") or job_namespace(json),
                    self._own_token,
                )
                if not transient or attempt == attempts:
                    raise error from None
            self._sleep(min(self.max_backoff, delay) * self._jitter(JITTER_LOW, 1.0))
            delay *= 2
        raise AssertionError("unreachable")

    def _own_token(self) -> dict:
        """The token in use, looked up to explain a denial (never retried: the denial
        is already the answer)."""
        self.request_count += 1
        return self._api.request("get", "v1/acl/token/self", timeout=self.timeout).json()

    # -- jobs --------------------------------------------------------------------

    def parse(self, hcl: str, namespace: str | None = None) -> dict:
        """HCL -> Job JSON via the cluster's own parser (canonicalized).

        Nomad checks the parse permission in the request's ``namespace``, not the
        job's, so a capability probe passes the namespace it is about.
        """
        try:
            return self._call(
                "post",
                "jobs/parse",
                params=_ns(namespace),
                json={"JobHCL": hcl, "Canonicalize": True},
            ).json()
        except NomadBadRequest as exc:
            raise parse_rejection(exc.reason) from None

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
        except NomadNotFound:
            return None

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

    def variable(self, path: str, namespace: str | None = None) -> dict | None:
        """A Nomad Variable (``Items`` and ``ModifyIndex``), or None if there is none."""
        try:
            params = _ns(namespace or self.settings.namespace)
            return self._call("get", "var/" + path, params=params).json()
        except NomadNotFound:
            return None

    def put_variable(
        self, path: str, items: dict[str, str], namespace: str | None, cas: int | None = None
    ) -> bool:
        """Write a Variable; with ``cas`` only if its ModifyIndex is still ``cas`` (0: only
        if it does not exist).  False when another writer came first (HTTP 409)."""
        params = _ns(namespace or self.settings.namespace)
        if cas is not None:
            params["cas"] = str(cas)
        body = {"Path": path, "Items": items}
        return self._write_if_current("put", "var/" + path, params, body)

    def delete_variable(self, path: str, namespace: str | None, cas: int | None = None) -> bool:
        """Delete a Variable; with ``cas`` only if unchanged since (False otherwise)."""
        params = _ns(namespace or self.settings.namespace)
        if cas is not None:
            params["cas"] = str(cas)
        return self._write_if_current("delete", "var/" + path, params, None)

    def _write_if_current(self, method: str, path: str, params: dict, body: Any) -> bool:
        try:
            self._call(method, path, params=params, json=body, retry=False)
        except NomadClientError as conflict:
            if conflict.status == 409:
                return False
            raise
        return True

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

    def allocation_stats(self, alloc_id: str) -> dict | None:
        """The allocation's resource usage as its node measures it now
        (``ResourceUsage`` and per-task ``Tasks``); None once the node no longer
        knows it (the allocation ended and was collected).  Tried once: a sample
        missed is only a sample."""
        try:
            return self._call(
                "get", f"client/allocation/{_quote(alloc_id)}/stats", retry=False
            ).json()
        except (NomadNotFound, NomadBadRequest):
            return None

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
        except (NomadNotFound, NomadBadRequest):
            # Not started yet, or not yet known to its node: no logs so far.
            return ""
        return response.content.decode("utf-8", errors="replace")

    def plan(self, job: dict) -> dict:
        """A dry run of the scheduler for ``job``: nothing is registered or placed.

        Needs the same ``submit-job`` capability as a registration, so it doubles
        as a side-effect-free probe of that right.
        """
        return self._call(
            "post", f"job/{_quote(job['ID'])}/plan", json={"Job": job, "Diff": False}
        ).json()

    def leader(self) -> str:
        return self._call("get", "status/leader", retry=False).json()

    def agent_version(self) -> str | None:
        """The version of the agent at the address (needs ``agent:read``)."""
        config = self._call("get", "agent/self", retry=False).json().get("config") or {}
        return (config.get("Version") or {}).get("Version")

    # -- the cluster ----------------------------------------------------------------

    def token_self(self) -> dict:
        """The ACL token in use (its name, type and policies; never shown whole)."""
        return self._call("get", "acl/token/self", retry=False).json()

    def regions(self) -> list[str]:
        return self._call("get", "regions").json()

    def node_pool(self, name: str) -> dict | None:
        try:
            return self._call("get", "node/pool/" + _quote(name)).json()
        except NomadNotFound:
            return None

    def nodes(self) -> list[dict]:
        """Client nodes with their drivers and devices (needs ``node:read``)."""
        return self._call("get", "nodes", params={"resources": "true"}).json()


def _ns(namespace: str | None) -> dict:
    return {"namespace": namespace} if namespace else {}


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def default_client(timeout: float = 10, max_attempts: int = 6) -> NomadClient:
    """A client for the cluster the launcher's settings name."""
    return NomadClient(
        ConnectionSettings.from_environment(),
        timeout=timeout,
        max_attempts=max_attempts,
    )
