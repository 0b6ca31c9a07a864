"""Metaflow's metadata service, as ``doctor`` checks it: from the launcher, in the
Nomad Variable the tasks read its headers from, and from inside a task.

No Metaflow and no third-party library (HTTP with urllib): the probe task
(``render.probe_task``) runs this with whatever Python the task's image has.
Header values (the API key) are sent and compared, never shown: a line names the
headers and the settings that hold them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.diagnosis import one_line
from metaflow_nomad.api.doctor import FAIL, INFO, OK, WARN, Check
from metaflow_nomad.errors import NomadClientError, NomadForbidden, NomadNotFound

# The Variable's item a task gets as its METAFLOW_SERVICE_HEADERS (feature service_auth).
HEADERS_ITEM = "METAFLOW_SERVICE_HEADERS"
DEFAULT_VARIABLE = "nomad/jobs"
AUTH_SETTINGS = "METAFLOW_SERVICE_AUTH_KEY (or METAFLOW_SERVICE_HEADERS)"
PING_TIMEOUT_S = 5.0
DENIED = (401, 403)


@dataclass(frozen=True)
class Ping:
    """What ``GET <url>/ping`` got: the HTTP status and the service's version, or
    (``status`` None) why nothing answered."""

    status: int | None
    version: str | None = None
    error: str | None = None


def ping(url: str, headers: Mapping[str, str], timeout: float = PING_TIMEOUT_S) -> Ping:
    """``GET <url>/ping`` with ``headers``, as Metaflow's service client sends them."""
    request = urllib.request.Request(url.rstrip("/") + "/ping", headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Ping(response.status, response.headers.get("METADATA_SERVICE_VERSION"))
    except urllib.error.HTTPError as exc:
        return Ping(exc.code)
    except (urllib.error.URLError, OSError) as exc:  # refused, unknown host, TLS, timeout
        return Ping(None, error=str(getattr(exc, "reason", exc)))


def header_names(headers: Mapping[str, str]) -> str:
    return ", ".join(sorted(headers)) or "none"


def check_from_launcher(url: str | None, headers: Mapping[str, str]) -> Check:
    """The service as this launcher (and Metaflow's runtime in it) reaches it."""
    name = "metadata service"
    if not url:
        return Check(FAIL, name, "METAFLOW_SERVICE_URL is not set: set it to the service's URL")
    answer = ping(url, headers)
    if answer.status is None:
        return Check(
            FAIL, name, f"nothing answered at {url} ({answer.error}): check METAFLOW_SERVICE_URL"
        )
    if answer.status in DENIED:
        return Check(
            FAIL,
            name,
            f"{url} refused /ping (HTTP {answer.status}): set {AUTH_SETTINGS} to what the "
            "service accepts",
        )
    if answer.status != 200:
        return Check(
            FAIL,
            name,
            f"{url} answered /ping with HTTP {answer.status}: check METAFLOW_SERVICE_URL",
        )
    return Check(OK, name, f"{url} answered /ping (service {answer.version or 'version unknown'})")


def tasks_url(url: str | None, internal_url: str | None) -> Check:
    """Where tasks and runners reach the service (``METAFLOW_SERVICE_INTERNAL_URL``
    when set: render.bootstrap gives it to them as their METAFLOW_SERVICE_URL)."""
    if internal_url and internal_url != url:
        return Check(
            INFO, "tasks' service URL", f"{internal_url} (from METAFLOW_SERVICE_INTERNAL_URL)"
        )
    return Check(
        INFO,
        "tasks' service URL",
        f"{url} (METAFLOW_SERVICE_URL; set METAFLOW_SERVICE_INTERNAL_URL if the cluster's "
        "nodes reach the service at another address)",
    )


def check_headers_variable(
    client: NomadClient, path: str | None, namespace: str, headers: Mapping[str, str]
) -> Check:
    """Will tasks in ``namespace`` get the headers?  The Variable the ``service_auth``
    template reads, looked up with the launcher's token (its values are never shown)."""
    name = "service auth"
    if path is None:
        return Check(
            INFO, name, f"this launcher sends no headers ({AUTH_SETTINGS} unset): nor will tasks"
        )
    where = f"the Nomad Variable {path} in namespace '{namespace}'"
    try:
        variable, _ = client.blocking_get(f"var/{path}", params={"namespace": namespace})
    except NomadNotFound:
        return Check(
            FAIL,
            name,
            f"no Nomad Variable {path} in namespace '{namespace}', so tasks would send no "
            f"{HEADERS_ITEM}: store it (docs/metadata-service.md): nomad var put -namespace "
            f"{namespace} {path} {HEADERS_ITEM}=<the headers as JSON>",
        )
    except NomadForbidden:
        return Check(
            WARN,
            name,
            f"this launcher's token may not read {where}, so doctor cannot tell whether tasks "
            f"get {HEADERS_ITEM} (they read it with their workload identity): "
            "doctor --probe shows what a task gets",
        )
    except NomadClientError as exc:
        return Check(WARN, name, f"{where} could not be read: {one_line(exc.detail)}")
    return _headers_item_check(variable.get("Items") or {}, where, headers)


def _headers_item_check(items: Mapping[str, str], where: str, headers: Mapping[str, str]):
    name = "service auth"
    if HEADERS_ITEM not in items:
        return Check(
            FAIL,
            name,
            f"{where} has no item {HEADERS_ITEM} (it has: {header_names(items)}), so tasks "
            "would send no headers: add it (docs/metadata-service.md)",
        )
    try:
        stored = json.loads(items[HEADERS_ITEM])
    except ValueError:
        stored = None
    if not isinstance(stored, dict):
        return Check(
            FAIL,
            name,
            f"the item {HEADERS_ITEM} of {where} is not a JSON object of header names to "
            'values, which Metaflow needs: store it as e.g. {"x-api-key": "..."}',
        )
    got = f"tasks get {HEADERS_ITEM} ({header_names(stored)}) from {where}"
    if stored == dict(headers):
        return Check(OK, name, f"{got}, the same as this launcher's")
    return Check(
        WARN,
        name,
        f"{got}, which differ from this launcher's (values not shown): fine if the tasks "
        "have a key of their own",
    )


def task_ping_line(url: str | None, headers: Mapping[str, str]) -> tuple[bool, str]:
    """The service as a task reaches it (``doctor --probe``): whether it answered, and
    the line that says so, with what to change if not."""
    if not url:
        return False, "the task has no METAFLOW_SERVICE_URL: set METAFLOW_SERVICE_URL"
    sent = f"the task's headers ({header_names(headers)})"
    answer = ping(url, headers)
    if answer.status is None:
        return False, (
            f"nothing answered at {url} from the task ({answer.error}): set "
            "METAFLOW_SERVICE_INTERNAL_URL to the service's URL as the cluster's nodes reach it"
        )
    if answer.status in DENIED:
        return False, (
            f"{url} refused /ping with {sent} (HTTP {answer.status}): tasks get "
            f"{HEADERS_ITEM} from the Nomad Variable named by "
            "METAFLOW_NOMAD_SERVICE_AUTH_VARIABLE (docs/metadata-service.md)"
        )
    if answer.status != 200:
        return False, f"{url} answered /ping with HTTP {answer.status} to the task"
    return True, f"{url} answered /ping with {sent}"
