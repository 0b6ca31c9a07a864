"""The client's retry loop with a fake clock: which failures are retried, how long
the backoff waits, and when it gives up.  The real answers of a cluster (outages,
restarts, permission errors) are covered against agents in
tests/integration/test_faults.py; here the policy itself is pinned, fast."""

from __future__ import annotations

import pytest

from metaflow_nomad.api.client import FIRST_BACKOFF_S, JITTER_LOW, NomadClient
from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.transport import HttpError, NoAnswer, Response
from metaflow_nomad.errors import NomadClientError


def _response(status: int, text: str = "", body: str = "{}") -> Response:
    return Response(status, {}, (text or body).encode())


class ScriptedTransport:
    """Answers each request with the next scripted outcome: a status or 'refused'."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def request(self, method, endpoint, params=None, json=None, timeout=None):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if outcome == "refused":
            raise NoAnswer("Connection failed: [Errno 111] Connection refused")
        status, text = outcome
        if status < 400:
            return _response(status, body=text or "{}")
        raise HttpError(_response(status, text))


class FakeClock:
    def __init__(self):
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def _client(transport, clock, jitter=lambda low, high: low, **kw) -> NomadClient:
    return NomadClient(
        ConnectionSettings(), sleep=clock.sleep, jitter=jitter, transport=transport, **kw
    )


def test_transient_failures_are_retried_with_doubling_backoff_then_succeed():
    transport = ScriptedTransport("refused", (503, "No cluster leader"), (500, ""), (200, "[]"))
    clock = FakeClock()
    assert _client(transport, clock).list_jobs() == []
    assert transport.calls == 4
    assert clock.slept == [JITTER_LOW * FIRST_BACKOFF_S * 2**n for n in range(3)]


def test_backoff_is_capped_and_the_budget_is_what_min_retry_wait_promises():
    transport = ScriptedTransport(*["refused"] * 6)
    clock = FakeClock()
    client = _client(transport, clock, max_attempts=6, max_backoff=12.0)
    with pytest.raises(NomadClientError) as info:
        client.list_jobs()
    assert transport.calls == 6
    assert clock.slept == [0.75, 1.5, 3.0, 6.0, 9.0]
    assert sum(clock.slept) == pytest.approx(client.min_retry_wait())
    assert "cannot reach Nomad at http://127.0.0.1:4646" in str(info.value)


def test_jitter_never_shortens_below_its_floor_nor_exceeds_the_cap():
    clock = FakeClock()
    client = _client(ScriptedTransport(*["refused"] * 6), clock, jitter=lambda low, high: high)
    with pytest.raises(NomadClientError):
        client.list_jobs()
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 12.0]


@pytest.mark.parametrize(
    "status, text",
    [
        (400, "Failed to parse job"),
        (403, "Permission denied"),
        (404, "job not found"),
        (500, "1 error occurred: Task group g validation failed"),
        (500, 'job "x" is in nonexistent namespace "nope"'),
    ],
)
def test_permanent_failures_are_not_retried(status, text):
    transport = ScriptedTransport((status, text), (200, "[]"))
    clock = FakeClock()
    with pytest.raises(NomadClientError) as info:
        # job() swallows 404; list_jobs does not.
        _client(transport, clock).list_jobs()
    assert clock.slept == []
    assert info.value.status == status
    assert transport.calls == 1


def test_a_denied_request_with_a_token_looks_the_token_up_once_and_names_it():
    transport = ScriptedTransport((403, "Permission denied"), (403, "ACL token not found"))
    clock = FakeClock()
    client = NomadClient(
        ConnectionSettings(token="t0k3n-value"), sleep=clock.sleep, transport=transport
    )
    with pytest.raises(NomadClientError) as info:
        client.list_jobs()
    assert transport.calls == 2 and clock.slept == []
    assert "Nomad does not know the ACL token in METAFLOW_NOMAD_TOKEN (or NOMAD_TOKEN)" in str(
        info.value
    )
    assert "t0k3n-value" not in str(info.value)


def test_retry_false_gives_up_after_one_attempt():
    transport = ScriptedTransport("refused", (200, '"127.0.0.1:4647"'))
    clock = FakeClock()
    with pytest.raises(NomadClientError):
        _client(transport, clock).leader()
    assert transport.calls == 1 and clock.slept == []


def test_a_dispatch_is_retried_only_when_it_carries_an_idempotency_token():
    answer = (200, '{"DispatchedJobID": "step/dispatch-1-a"}')
    retried = ScriptedTransport((503, "No cluster leader"), answer)
    assert _client(retried, FakeClock()).dispatch("step", {}, None, "run-1-attempt-0") == (
        "step/dispatch-1-a"
    )
    assert retried.calls == 2
    once = ScriptedTransport((503, "No cluster leader"), answer)
    with pytest.raises(NomadClientError):
        _client(once, FakeClock()).dispatch("step", {})
    assert once.calls == 1
