"""Issue 5 item 4: cluster faults injected into real agents while a run is in flight,
and the client's retry policy checked against real answers (not mocks).

Every fault test starts its own agent: the faults (SIGSTOP, restart) must never
hit the session agent other tests share.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.errors import NomadClientError, NomadParseError
from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent
from metaflow_nomad.testing.ports import free_port
from tests.support.flows import agent_flow_env, agent_path_env, start_flow, wait_for
from tests.support.nomad_checks import probe_hcl, settled_allocations

pytestmark = pytest.mark.integration

OUTAGE_S = 20
HCL = probe_hcl("fault-probe")


@pytest.fixture()
def own_agent():
    agent = LocalAgent(options=AgentOptions(env=agent_path_env()))
    agent.start()
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def acl_agent():
    agent = LocalAgent(options=AgentOptions(acl=True))
    agent.start()
    yield agent
    agent.stop()


def _marker_lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _only_job(agent: LocalAgent, run_id: str) -> dict:
    stubs = [j for j in agent.api("GET", "/v1/jobs?prefix=mf-faultflow-") if run_id in j["ID"]]
    assert len(stubs) == 1, [j["ID"] for j in stubs]
    return stubs[0]


def _assert_ran_once_and_completed(agent, flow, marker):
    lines = _marker_lines(marker)
    assert [line.split()[0] for line in lines] == ["started", "finished"], lines
    job = _only_job(agent, flow.run_id)
    allocs = settled_allocations(
        lambda: agent.api("GET", f"/v1/job/{job['ID']}/allocations?all=true")
    )
    assert [a["ClientStatus"] for a in allocs] == ["complete"]
    events = [e["Type"] for e in allocs[0]["TaskStates"]["metaflow"]["Events"]]
    assert events.count("Started") == 1, events
    assert "fault flow done" in flow.output


def test_run_survives_a_20s_api_outage(own_agent, tmp_path):
    """SIGSTOP freezes the whole agent (server, client, HTTP): requests hang, and the
    blocking query in flight simply waits.  The task ends during the outage; its
    launcher learns that from the task's exit file, not from the frozen API, and the
    job is complete in Nomad once the agent is back."""
    marker = tmp_path / "marker"
    flow = start_flow(
        "fault_flow.py",
        tmp_path / "run",
        agent_flow_env(own_agent, tmp_path / "run"),
        "--seconds",
        "8",
        "--marker",
        str(marker),
    )
    try:
        wait_for(lambda: _marker_lines(marker), 120, "the step to start on Nomad")
        own_agent.pause()
        paused_at = time.monotonic()
        time.sleep(OUTAGE_S)
        assert len(_marker_lines(marker)) == 2  # the step finished during the outage
    finally:
        own_agent.resume()
    assert time.monotonic() - paused_at >= OUTAGE_S
    assert flow.wait(180) == 0, flow.output
    _assert_ran_once_and_completed(own_agent, flow, marker)
    assert "cannot reach Nomad" not in flow.output


def test_running_task_survives_an_agent_restart_and_is_tracked_to_completion(own_agent, tmp_path):
    """The agent (server with a persistent data dir, and client) restarts while the
    step runs; the raw_exec executor outlives it and the new client reattaches."""
    marker = tmp_path / "marker"
    flow = start_flow(
        "fault_flow.py",
        tmp_path / "run",
        agent_flow_env(own_agent, tmp_path / "run"),
        "--seconds",
        "12",
        "--marker",
        str(marker),
    )
    wait_for(lambda: _marker_lines(marker), 120, "the step to start on Nomad")
    old_pid = own_agent.process.pid
    own_agent.restart(kill_tasks=False)
    assert own_agent.process.pid != old_pid
    # Restarted before the step could finish: the task really was in flight.
    assert len(_marker_lines(marker)) == 1
    assert flow.wait(180) == 0, flow.output
    _assert_ran_once_and_completed(own_agent, flow, marker)


# -- the retry policy against real answers --------------------------------------


def _client(agent: LocalAgent, **kw) -> NomadClient:
    token = kw.pop("token", agent.management_token)
    return NomadClient(dataclasses.replace(agent.connection_settings(), token=token), **kw)


def _invalid_job(client: NomadClient):
    job = client.parse(HCL)
    job["TaskGroups"][0]["Count"] = -1
    return lambda: client.register(job)


def _job_in_unknown_namespace(client: NomadClient):
    job = client.parse(HCL)
    job["Namespace"] = "nope"
    return lambda: client.register(job)


# (case, token?, prepare(client) -> the failing call, expected HTTP status)
PERMANENT = [
    ("404-unknown-job", True, lambda c: lambda: c._call("get", "job/no-such-job"), 404),
    ("400-unparsable-hcl", True, lambda c: lambda: c.parse('job "x" {'), None),
    ("403-no-token", False, lambda c: c.list_jobs, 403),
    ("500-validation-failed", True, _invalid_job, 500),
    ("500-nonexistent-namespace", True, _job_in_unknown_namespace, 500),
]


@pytest.mark.parametrize(
    "with_token, prepare, status", [p[1:] for p in PERMANENT], ids=[p[0] for p in PERMANENT]
)
def test_permanent_errors_are_not_retried(acl_agent, with_token, prepare, status):
    client = _client(acl_agent, token=acl_agent.management_token if with_token else None)
    failing_call = prepare(client)
    before = client.request_count
    started = time.monotonic()
    with pytest.raises((NomadClientError, NomadParseError)) as exc:
        failing_call()
    assert client.request_count == before + 1
    assert time.monotonic() - started < 1.0
    if status is not None:
        assert exc.value.status == status


def test_refused_connections_are_retried_with_bounded_backoff():
    client = NomadClient(
        ConnectionSettings(address=f"http://127.0.0.1:{free_port()}"), max_attempts=4
    )
    started = time.monotonic()
    with pytest.raises(NomadClientError) as exc:
        client.list_jobs()
    elapsed = time.monotonic() - started
    assert client.request_count == 4
    assert "cannot reach Nomad" in str(exc.value)
    # 0.75 * (1 + 2 + 4) <= waited <= 1 + 2 + 4 (+ slack for three refused connects).
    assert client.min_retry_wait() <= elapsed <= 7 + 2


def test_a_hung_agent_is_retried_until_it_answers(own_agent):
    """Calls made while the agent is frozen time out and are retried; the call that
    spans the outage returns normally once it resumes."""
    client = _client(own_agent, timeout=2)
    result: dict = {}

    def call():
        result["jobs"] = client.list_jobs()

    own_agent.pause()
    try:
        worker = threading.Thread(target=call)
        worker.start()
        time.sleep(5)
        assert worker.is_alive()
    finally:
        own_agent.resume()
    worker.join(60)
    assert result["jobs"] == []
    assert client.request_count >= 2


def test_a_blocking_query_in_flight_survives_an_outage(own_agent):
    client = _client(own_agent)
    _, index = client.blocking_get("jobs")
    result: dict = {}

    def watch():
        result["answer"] = client.blocking_get("jobs", index=index, wait_s=15)

    worker = threading.Thread(target=watch)
    worker.start()
    time.sleep(1)
    own_agent.pause()
    time.sleep(8)
    own_agent.resume()
    worker.join(60)
    jobs, new_index = result["answer"]
    assert jobs == [] and new_index >= index
    assert client.request_count == 2
