"""What the client's calls make of Nomad's error answers, by their class: "no such
job" is None, a task without logs yet is empty logs, rejected HCL is a parse error,
and everything else reaches the caller.  Fake answers; real agents in
tests/integration/test_faults.py and test_templates_cluster.py."""

from __future__ import annotations

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.transport import HttpError, Response
from metaflow_nomad.errors import NomadForbidden, NomadParseError, NomadTlsMismatch


class Answers:
    """A transport that answers every request with one status and text."""

    def __init__(self, status: int, text: str):
        self.status = status
        self.text = text

    def request(self, method, endpoint, params=None, json=None, timeout=None):
        raise HttpError(Response(self.status, {}, self.text.encode()))


def _client(status: int, text: str) -> NomadClient:
    return NomadClient(ConnectionSettings(), transport=Answers(status, text), sleep=lambda _: None)


def test_rejected_hcl_is_a_parse_error_with_nomads_diagnostics():
    client = _client(400, "Failed to parse job: input.hcl:5,7-24: Unsupported argument; no")
    with pytest.raises(NomadParseError) as info:
        client.parse('job "x" {}')
    assert str(info.value) == "input.hcl:5,7-24: Unsupported argument; no"


def test_http_to_an_https_cluster_is_not_a_parse_error():
    client = _client(400, "Client sent an HTTP request to an HTTPS server.\n")
    with pytest.raises(NomadTlsMismatch) as info:
        client.parse('job "x" {}')
    assert "The cluster serves HTTPS" in str(info.value)


def test_unknown_jobs_and_node_pools_are_none():
    assert _client(404, "job not found").job("nope") is None
    assert _client(404, "node pool not found").node_pool("nope") is None


@pytest.mark.parametrize(
    "status, text",
    [(404, 'task "step" not started yet. No logs available'), (400, 'unknown task name "step"')],
    ids=["not-started", "not-yet-on-its-node"],
)
def test_a_task_without_logs_yet_has_empty_logs(status, text):
    assert _client(status, text).alloc_logs("a1", "step", "stderr", 100) == ""


def test_a_denied_lookup_is_not_taken_for_a_missing_job():
    with pytest.raises(NomadForbidden):
        _client(403, "Permission denied").job("secret")
