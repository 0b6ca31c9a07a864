"""doctor's metadata service lines: a real HTTP server on loopback for the pings, a
stub of the Nomad client for the Variable; no line ever shows a header's value."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from metaflow_nomad.api.metadata_service import (
    check_from_launcher,
    check_headers_variable,
    task_ping_line,
    tasks_url,
)
from metaflow_nomad.errors import NomadForbidden, NomadNotFound
from metaflow_nomad.testing.ports import free_port
from tests.support.variables import Variables

KEY = "secret-key-value"


@pytest.fixture(scope="module")
def service():
    """/ping answers 200 with the key, 403 without, like the service behind its gateway."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            return None

        def do_GET(self):
            if self.headers.get("x-api-key") != KEY:
                self.send_response(403)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("METADATA_SERVICE_VERSION", "2.5.1")
            self.end_headers()
            self.wfile.write(b"pong")

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_launcher_line_says_the_version_or_what_to_set(service):
    ok = check_from_launcher(service, {"x-api-key": KEY})
    assert ok.line() == f"  ok    metadata service: {service} answered /ping (service 2.5.1)"
    refused = check_from_launcher(service + "/", {"x-api-key": "wrong"})
    assert refused.failed and refused.detail == (
        f"{service}/ refused /ping (HTTP 403): set METAFLOW_SERVICE_AUTH_KEY (or "
        "METAFLOW_SERVICE_HEADERS) to what the service accepts"
    )
    assert "wrong" not in refused.line()
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = check_from_launcher(closed, {})
    assert unreachable.failed and unreachable.detail.startswith(f"nothing answered at {closed} (")
    assert unreachable.detail.endswith("): check METAFLOW_SERVICE_URL")
    assert check_from_launcher(None, {}).detail == (
        "METAFLOW_SERVICE_URL is not set: set it to the service's URL"
    )


def test_the_task_line_names_the_headers_it_sent_never_their_values(service):
    assert task_ping_line(service, {"x-api-key": KEY}) == (
        True,
        f"{service} answered /ping with the task's headers (x-api-key)",
    )
    ok, line = task_ping_line(service, {})
    assert not ok and line.startswith(f"{service} refused /ping with the task's headers (none)")
    assert "METAFLOW_NOMAD_SERVICE_AUTH_VARIABLE" in line
    ok, line = task_ping_line(f"http://127.0.0.1:{free_port()}", {"x-api-key": KEY})
    assert not ok and "set METAFLOW_SERVICE_INTERNAL_URL" in line and KEY not in line


def test_where_tasks_reach_the_service():
    assert tasks_url("https://a", "http://b").line() == (
        "  info  tasks' service URL: http://b (from METAFLOW_SERVICE_INTERNAL_URL)"
    )
    assert tasks_url("https://a", "https://a").detail.startswith("https://a (METAFLOW_SERVICE_URL;")


def _check(answer, headers=None):
    client = Variables(answer)
    check = check_headers_variable(client, "nomad/jobs", "team-a", headers or {"x-api-key": KEY})
    assert client.asked == [("var/nomad/jobs", {"namespace": "team-a"})]
    assert KEY not in check.line()
    return check


def _items(**items):
    return {"Items": items}


def test_the_variable_holds_the_launchers_headers():
    check = _check(_items(METAFLOW_SERVICE_HEADERS=json.dumps({"x-api-key": KEY})))
    assert check.line() == (
        "  ok    service auth: tasks get METAFLOW_SERVICE_HEADERS (x-api-key) from the Nomad "
        "Variable nomad/jobs in namespace 'team-a', the same as this launcher's"
    )


def test_other_headers_in_the_variable_are_a_warning():
    check = _check(_items(METAFLOW_SERVICE_HEADERS=json.dumps({"x-api-key": "task-key"})))
    assert (
        check.status == "warn" and "differ from this launcher's (values not shown)" in check.detail
    )
    assert "task-key" not in check.line()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (NomadNotFound("variable not found", "GET /v1/var/nomad/jobs", 404), "no Nomad Variable "),
        (_items(AWS_ACCESS_KEY_ID="x"), "has no item METAFLOW_SERVICE_HEADERS (it has: AWS_"),
        (_items(METAFLOW_SERVICE_HEADERS="x-api-key: abc"), "is not a JSON object of header"),
    ],
)
def test_tasks_that_would_get_no_headers_fail(answer, expected):
    check = _check(answer)
    assert check.failed and expected in check.detail


def test_a_token_that_may_not_read_variables_is_a_warning_not_a_failure():
    denied = NomadForbidden("Permission denied", "GET /v1/var/nomad/jobs", 403, explanation="")
    check = _check(denied)
    assert check.status == "warn" and "doctor --probe shows what a task gets" in check.detail


def test_a_launcher_without_headers_has_nothing_to_check():
    check = check_headers_variable(Variables({}), None, "default", {})
    assert check.status == "info" and "nor will tasks" in check.detail
