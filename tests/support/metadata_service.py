"""Metaflow's metadata service in tests: metaflow-local-service, and gates in front of it.

``metadata_service`` starts metaflow-local-service (PyPI, 0.2.0: the service API on
FastAPI/uvicorn, persisting in the local metadata layout under its own root) as a
subprocess on a free port, and stops it by its pid.  Three of its limits matter here:

* it assigns a new numeric id to every run it is asked to create, while the official
  service keeps the id the client sends.  Metaflow registers a run under its own id
  that way (a deployed run's ``nomad-dispatch-...``, a resume's ``-r1``), so the
  fixture's server keeps a non-numeric id, as the official service does;
* it has no route for one artifact by name (``GET .../tasks/T/artifacts/NAME``), which
  the client uses for ``task["_success"]`` (``Run.successful``): the fixture adds it;
* it checks no header at all.

``ServiceGate`` is therefore an HTTP front, on a port of its own, that refuses a
request without the API key (403, as the official service's API gateway answers) and
records every request it forwards: which URL the launcher and the tasks used, and that
every task carried the key.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from metaflow_nomad.testing.ports import free_port
from metaflow_nomad.testing.processes import stop_process
from tests.support.flows import clean_environ, client_script

API_KEY_HEADER = "x-api-key"
FLOW = "service_flow.py"
FLOW_NAME = "ServiceFlow"
# The packaged default of METAFLOW_NOMAD_SERVICE_AUTH_VARIABLE, and the file the
# feature's template renders the headers into (nomad_templates/v1/features/service_auth.j2).
VARIABLE = "nomad/jobs"
SECRETS_FILE = "secrets/metaflow-service.env"
# Hop-by-hop headers a proxy must not forward (RFC 9110 7.6.1), plus the length it sets.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}

FORBIDDEN = b'{"message": "Forbidden"}'
# The service process: metaflow-local-service's app, with what the official service has
# and it lacks (client-supplied run ids, one artifact by name).
SERVICE_MAIN = '''
import sys

import uvicorn
from fastapi import HTTPException
from metaflow_local_service import server, store

_create_run = store.create_run


def create_run(flow_name, body):
    """Keep a non-numeric run id the client sends, as the official service does."""
    run_id = str(body.get("run_number") or "")
    if not run_id or run_id.isdigit():
        return _create_run(flow_name, body)
    store.get_or_create_flow(flow_name, body)
    record = store._build_run_record(flow_name, run_id, body)
    provider = store._local()
    provider._save_meta(provider._create_and_get_metadir(flow_name, run_id), {"_self": record})
    return record


store.create_run = create_run
port, root = int(sys.argv[1]), sys.argv[2]
app = server.create_app(root)
TASK = "/flows/{flow}/runs/{run}/steps/{step}/tasks/{task}"


def artifact(flow, run, step, task, name, attempt=None):
    """One artifact by name (``task["_success"]``), of the latest attempt unless given."""
    found = [a for a in store.get_artifacts(flow, run, step, task, attempt) if a["name"] == name]
    if not found:
        raise HTTPException(status_code=404, detail="Artifact not found")
    return max(found, key=lambda a: int(a.get("attempt_id") or 0))


app.get(TASK + "/artifacts/{name}")(artifact)
app.get(TASK + "/artifacts/{name}/attempt/{attempt}")(artifact)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
'''


@dataclass
class MetadataService:
    """A running metaflow-local-service: its URL and where it keeps what it is sent."""

    url: str
    root: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


def start_metadata_service(
    root: Path, timeout: float = 30, port: int | None = None
) -> MetadataService:
    """metaflow-local-service on a free loopback port (or ``port``: a restart of a
    stopped service on its own port and root), once it answers ``/ping``."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = open(root / "service.log", "ab")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVICE_MAIN, str(port), str(root)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    log.close()
    service = MetadataService(f"http://127.0.0.1:{port}", root, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the service exited: {(root / 'service.log').read_text()}")
        try:
            urllib.request.urlopen(service.url + "/ping", timeout=1).close()
            return service
        except OSError:
            time.sleep(0.2)
    service.stop()
    raise AssertionError(f"the service did not answer within {timeout}s")


@pytest.fixture(scope="module")
def metadata_service(tmp_path_factory) -> Iterator[MetadataService]:
    service = start_metadata_service(tmp_path_factory.mktemp("metadata-service"))
    try:
        yield service
    finally:
        service.stop()


@dataclass(frozen=True)
class Seen:
    """One request a gate forwarded (or refused)."""

    method: str
    path: str
    authorized: bool


@dataclass
class ServiceGate:
    """An HTTP front for the service on its own loopback port.

    With ``api_key`` set it answers 403 to a request whose ``x-api-key`` header is
    not that key, and forwards nothing; every request is recorded in ``seen``.
    """

    upstream: str
    api_key: str | None = None
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self):
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                key = self.headers.get(API_KEY_HEADER)
                authorized = gate.api_key is None or key == gate.api_key
                gate.seen.append(Seen(self.command, self.path, authorized))
                if not authorized:
                    self._reply(
                        403, {"Content-Type": "application/json"}, b'{"message":"Forbidden"}'
                    )
                    return
                status, headers, content = gate.forward(self.command, self.path, body, self.headers)
                self._reply(status, headers, content)

            def _reply(self, status: int, headers: dict, content: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def forward(self, method: str, path: str, body: bytes | None, headers) -> tuple:
        host, port = self.upstream.split("://", 1)[1].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            content = response.read()
            kept = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            return response.status, kept, content
        finally:
            connection.close()

    def requests_for(self, flow_name: str, run_id: str) -> list[Seen]:
        """The requests about one run (its steps, tasks, artifacts, metadata)."""
        prefix = f"/flows/{flow_name}/runs/{run_id}/"
        return [s for s in self.seen if s.path.startswith(prefix)]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@pytest.fixture(scope="module")
def service_gates(metadata_service) -> Iterator[tuple[ServiceGate, ServiceGate]]:
    """A public and an internal gate to the service, both requiring one fresh API key."""
    import secrets

    key = "mf-key-" + secrets.token_urlsafe(24)
    public = ServiceGate(metadata_service.url, key)
    internal = ServiceGate(metadata_service.url, key)
    try:
        yield public, internal
    finally:
        public.stop()
        internal.stop()


def service_env(public: ServiceGate, internal: ServiceGate | None = None) -> dict[str, str]:
    """A launcher's settings for the service behind ``public`` (and its internal URL)."""
    env = {
        "METAFLOW_DEFAULT_METADATA": "service",
        "METAFLOW_SERVICE_URL": public.url,
        "METAFLOW_SERVICE_AUTH_KEY": public.api_key or "",
    }
    if internal is not None:
        env["METAFLOW_SERVICE_INTERNAL_URL"] = internal.url
    return env


def headers_variable(api_key: str) -> dict[str, str]:
    """The Nomad Variable's items an operator stores for the tasks (docs/metadata-service.md)."""
    return {"METAFLOW_SERVICE_HEADERS": json.dumps({API_KEY_HEADER: api_key})}


def put_headers_variable(agent, api_key: str, namespace: str = "default") -> None:
    """What an operator stores once: the tasks' headers, in the Nomad Variable
    ``nomad/jobs`` (docs/metadata-service.md), with the agent's management token."""
    body = {"Namespace": namespace, "Path": VARIABLE, "Items": headers_variable(api_key)}
    agent.api("PUT", f"/v1/var/{VARIABLE}?namespace={namespace}", body)


def delete_headers_variable(agent, namespace: str = "default") -> None:
    agent.api("DELETE", f"/v1/var/{VARIABLE}?namespace={namespace}")


READ_BACK = """
import json, sys
from metaflow import Run, namespace
from metaflow.cards import get_cards
namespace(None)
run = Run(sys.argv[1])
start = run["start"].task
print(json.dumps({
    "successful": run.successful,
    "tags": sorted(run.user_tags),
    "system_tags": sorted(run.system_tags),
    "namespace_seen": start.data.namespace_seen,
    "own_alloc": start.data.own_alloc,
    "start_alloc": start.metadata_dict.get("nomad-alloc-id"),
    "start_namespace": run["end"].task.data.start_namespace,
    "card": get_cards(start, id="notes")[0].get(),
}))
"""


def read_back(workdir, service_url: str, pathspec: str) -> dict:
    """The run through the Metaflow client, asking the service directly (not via a gate)."""
    env = {
        **clean_environ(),
        "METAFLOW_DEFAULT_METADATA": "service",
        "METAFLOW_SERVICE_URL": service_url,
        "METAFLOW_HOME": str(workdir / "mfhome"),
        "USER": "tester",
    }
    out = client_script(workdir, env, READ_BACK, pathspec, timeout=120)
    return json.loads(out.splitlines()[-1])


def card_shows(html: str) -> str:
    """What a card shows: its page carries the components as base64 JSON (``__MF_DATA__``)."""
    encoded = re.findall(r'__MF_DATA__\["[^"]+"\] = "([^"]+)"', html)
    assert encoded, "no card data in the page"
    return "\n".join(base64.b64decode(e).decode() for e in encoded)
