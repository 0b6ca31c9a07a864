"""The only module that talks to Nomad.

It wraps python-nomad for the connection (address, token, TLS, namespace,
region) and adds what python-nomad lacks: blocking queries (``index``/``wait``),
TLS verification on by default, bounded retries with backoff for transient
errors (and none for permanent ones), escaping of IDs in URL paths, and a request
counter for the benchmarks.
"""

from __future__ import annotations

import random
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nomad.api.exceptions as nomad_exc
import requests
from nomad.api.base import Requester

from .config import is_truthy
from .errors import NomadClientError, NomadParseError

DEFAULT_ADDRESS = "http://127.0.0.1:4646"
# Nomad adds up to wait/16 of jitter to a blocking query; leave room for it.
BLOCKING_WAIT_S = 30
TRANSIENT_STATUS = {500, 502, 503, 504, 429}


@dataclass(frozen=True)
class ConnectionSettings:
    address: str = DEFAULT_ADDRESS
    token: str | None = None
    region: str | None = None
    namespace: str | None = None
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
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
            skip_verify=is_truthy(config.get("NOMAD_SKIP_VERIFY")),
        )

    def __repr__(self) -> str:  # never show the token
        return f"ConnectionSettings(address={self.address!r}, namespace={self.namespace!r})"


class NomadClient:
    def __init__(
        self,
        settings: ConnectionSettings,
        timeout: float = 10,
        max_attempts: int = 6,
        max_backoff: float = 8.0,
    ):
        self.settings = settings
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self.request_count = 0
        verify: bool | str = not settings.skip_verify
        if settings.ca_cert and verify:
            verify = settings.ca_cert
        cert = ()
        if settings.client_cert and settings.client_key:
            cert = (settings.client_cert, settings.client_key)
        self._api = Requester(
            address=settings.address.rstrip("/"),
            token=settings.token,
            region=settings.region,
            namespace=settings.namespace,
            timeout=timeout,
            verify=verify,
            cert=cert,
            session=requests.Session(),
        )

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
        """One API call with bounded exponential backoff on transient failures."""
        attempts = self.max_attempts if retry else 1
        delay = 0.25
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
                transient = status is None or status in TRANSIENT_STATUS
                if (
                    not transient
                    or attempt == attempts
                    or "job already exists" in text
                    or "Permission denied" in text
                ):
                    raise NomadClientError(_message(method, path, status, text), status) from None
            time.sleep(min(self.max_backoff, delay) * (0.5 + random.random() / 2))
            delay *= 2
        raise AssertionError("unreachable")

    # -- jobs --------------------------------------------------------------------

    def parse(self, hcl: str) -> dict:
        """HCL -> Job JSON via the cluster's own parser (canonicalized)."""
        try:
            return self._call(
                "post", "jobs/parse", json={"JobHCL": hcl, "Canonicalize": True}
            ).json()
        except NomadClientError as exc:
            if exc.status == 400:
                raise NomadParseError(str(exc).split(": ", 2)[-1]) from None
            raise

    def register(self, job: dict) -> dict:
        return self._call("post", "jobs", json={"Job": job}).json()

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

    def job_evaluations(self, job_id: str, namespace: str | None = None) -> list[dict]:
        return self._call("get", f"job/{_quote(job_id)}/evaluations", params=_ns(namespace)).json()

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
