"""Issue 4 items 1, 3 and 7 on a real agent: tracking that explains itself, logs, metadata."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from metaflow_nomad.api.lookup import find_jobs
from metaflow_nomad.runtime.logs import raw_log_tails
from metaflow_nomad.runtime.tracking import JobTracker
from metaflow_nomad.testing.cleanup import kill_processes_under, unmount_under
from metaflow_nomad.testing.local_agent import interpreter_path
from metaflow_nomad.testing.ports import free_port
from tests.support.flows import flow_env, start_flow, wait_for

pytestmark = pytest.mark.integration

TASK = "metaflow"


def _only_alloc(client, job_id: str) -> dict:
    allocs, _ = client.job_allocations(job_id)
    assert len(allocs) == 1, allocs
    return allocs[0]


def test_states_are_reported_and_output_streams_while_the_task_runs(
    nomad_agent, nomad_client, tmp_path
):
    env = flow_env(nomad_agent.address, tmp_path, {"PYTHONUNBUFFERED": "1"})
    run = start_flow("track_stream_flow.py", tmp_path, env)
    try:
        wait_for(lambda: "STREAM-FIRST" in run.output, 150, "the first line", 0.05)
        # The first line reached the launcher's output while the task still runs:
        # the step does not go on until this test lets it.
        seen = run.output
        assert "STREAM-SECOND" not in seen
        run_id = run.wait_run_id()
        [job] = find_jobs(nomad_client, "TrackStreamFlow", run_id)
        assert _only_alloc(nomad_client, job["ID"])["ClientStatus"] == "running"
        marker = Path(f"/tmp/mf-nomad-stream-{run_id}")
        marker.touch()
        try:
            assert run.finish(120) == 0, run.output
        finally:
            marker.unlink()
    finally:
        run.finish(5)
    output = run.output
    [node] = requests.get(f"{nomad_agent.address}/v1/nodes", timeout=10).json()
    order = [
        "Task is queued, waiting for placement...",
        f"Task placed on node {node['Name']}",
        f"Task is running on node {node['Name']}",
        "STREAM-FIRST",
        "STREAM-SECOND",
        "Task finished with exit code 0",
    ]
    positions = [output.index(marker) for marker in order]
    assert positions == sorted(positions), output

    logs = subprocess.run(
        [sys.executable, "track_stream_flow.py", "--no-pylint", "logs", f"{run_id}/start"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert logs.returncode == 0, logs.stderr
    assert "STREAM-FIRST" in logs.stdout and "STREAM-SECOND" in logs.stdout

    # Task metadata, read back through the Metaflow client API.
    reader = (
        "import json; from metaflow import Flow, namespace; namespace(None); "
        f"print(json.dumps(Flow('TrackStreamFlow')['{run_id}']['start'].task.metadata_dict))"
    )
    meta = json.loads(
        subprocess.run(
            [sys.executable, "-c", reader],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    alloc = _only_alloc(nomad_client, job["ID"])
    assert meta["nomad-job-id"] == job["ID"]
    assert meta["nomad-alloc-id"] == alloc["ID"]
    assert meta["nomad-node-name"] == alloc["NodeName"]
    assert meta["nomad-datacenter"] == "dc1"
    assert meta["nomad-namespace"] == "default"
    assert meta["nomad-region"] == "global"
    assert meta["nomad-template"] == job["Meta"]["metaflow.template"]
    assert meta["nomad-template-version"] == job["Meta"]["metaflow.template_version"] == "v1"
    assert meta["nomad-template-sha256"] == job["Meta"]["metaflow.template_sha256"]


def _batch_job(job_id: str, driver: str, command: str, args: list[str], memory: int) -> dict:
    return {
        "ID": job_id,
        "Name": job_id,
        "Type": "batch",
        "Datacenters": ["dc1"],
        "TaskGroups": [
            {
                "Name": "step",
                "Count": 1,
                "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "Tasks": [
                    {
                        "Name": TASK,
                        "Driver": driver,
                        "Config": {"command": command, "args": args},
                        "Resources": {"CPU": 100, "MemoryMB": memory},
                    }
                ],
            }
        ],
    }


def _track(client, job: dict, memory: int) -> tuple[JobTracker, list[str]]:
    messages: list[str] = []
    client.register(job)
    tracker = JobTracker(client, job["ID"], TASK, messages.append, memory_mb=memory).start()
    assert tracker.wait_finished(60), messages
    return tracker, messages


def test_driver_failure_is_explained_and_missing_logs_are_handled(nomad_agent, nomad_client):
    job = _batch_job("track-no-binary", "raw_exec", "/nonexistent/mf-binary", [], memory=32)
    tracker, messages = _track(nomad_client, job, 32)
    outcome = tracker.outcome()
    assert outcome.status == "failed"
    assert "Driver Failure" in outcome.message and "/nonexistent/mf-binary" in outcome.message
    assert any(m.startswith("Nomad task event: Driver Failure") for m in messages), messages
    # The task never started: Nomad's logs API answers 404, the tail is just empty.
    response = requests.get(
        f"{nomad_agent.address}/v1/client/fs/logs/{outcome.alloc_id}",
        params={"task": TASK, "type": "stderr", "plain": "true"},
        timeout=10,
    )
    assert response.status_code == 404, response.text
    assert raw_log_tails(nomad_client, outcome.alloc_id, TASK) == {"stdout": [], "stderr": []}


@pytest.fixture()
def drained_node(nomad_agent):
    """Drains the agent's only node on demand, and always makes it eligible again."""
    [node] = requests.get(f"{nomad_agent.address}/v1/nodes", timeout=10).json()
    url = f"{nomad_agent.address}/v1/node/{node['ID']}/drain"

    def drain():
        body = {"DrainSpec": {"Deadline": 1_000_000_000, "IgnoreSystemJobs": True}}
        requests.post(url, json=body, timeout=10).raise_for_status()

    yield drain
    requests.post(url, json={"DrainSpec": None, "MarkEligible": True}, timeout=10)
    wait_for(
        lambda: (
            requests.get(f"{nomad_agent.address}/v1/node/{node['ID']}", timeout=10).json()[
                "SchedulingEligibility"
            ]
            == "eligible"
        ),
        30,
        "the node to be eligible again",
    )


def test_drained_node_fails_the_task_and_stops_the_job(run_flow, nomad_client, drained_node):
    marker = run_flow.workdir / "running.marker"
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(
            r=run_flow("track_drain_flow.py", "--marker", str(marker), timeout=120)
        )
    )
    thread.start()
    try:
        wait_for(marker.exists, 120, "the step to run")
        drained_node()
    finally:
        thread.join(120)
    run = result["r"]
    assert run.returncode != 0
    assert "Nomad stopped the task to migrate it off node mf-nomad-test" in run.output
    assert "Use @retry to retry" in run.output
    [job] = find_jobs(nomad_client, "TrackDrainFlow", run.run_id, include_dead=True)
    assert nomad_client.job(job["ID"])["Stop"] is True
    allocs, _ = nomad_client.job_allocations(job["ID"])
    assert [a["ClientStatus"] for a in allocs] == ["complete"]
    assert allocs[0]["DesiredStatus"] == "stop"


@pytest.fixture()
def doomed_client(nomad_agent, tmp_path):
    """A second, client-only agent in its own node pool, that the test can kill -9.

    The session agent is server and client in one process, so its node can never
    miss heartbeats; a separate client can, which is what makes allocations lost.
    """
    data_dir = tmp_path / "doomed-client"
    data_dir.mkdir()
    http, rpc, serf = free_port(), free_port(), free_port()
    config = data_dir / "client.hcl"
    config.write_text(
        f"""
name       = "mf-doomed-client"
datacenter = "dc1"
data_dir   = "{data_dir / "data"}"
bind_addr  = "127.0.0.1"
ports {{
  http = {http}
  rpc  = {rpc}
  serf = {serf}
}}
advertise {{
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}}
client {{
  enabled   = true
  servers   = ["127.0.0.1:{nomad_agent.ports["rpc"]}"]
  node_pool = "doomed"
}}
plugin "raw_exec" {{
  config {{
    enabled = true
  }}
}}
"""
    )
    env = dict(os.environ, PATH=interpreter_path())
    with open(data_dir / "agent.log", "wb") as log:
        proc = subprocess.Popen(
            [nomad_agent.binary, "agent", "-config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def ready():
        nodes = requests.get(f"{nomad_agent.address}/v1/nodes", timeout=10).json()
        return any(n["Name"] == "mf-doomed-client" and n["Status"] == "ready" for n in nodes)

    try:
        wait_for(ready, 60, "the second client to be ready", 0.3)
        yield lambda: os.killpg(proc.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        kill_processes_under(data_dir)
        unmount_under(data_dir)


def test_lost_allocation_fails_the_task_and_stops_the_job(run_flow, nomad_client, doomed_client):
    marker = run_flow.workdir / "running.marker"
    result = {}
    env = {"METAFLOW_NOMAD_NODE_POOL": "doomed"}
    thread = threading.Thread(
        target=lambda: result.update(
            r=run_flow("track_drain_flow.py", "--marker", str(marker), env=env, timeout=150)
        )
    )
    thread.start()
    try:
        wait_for(marker.exists, 120, "the step to run")
        killed_at = time.monotonic()
        doomed_client()
    finally:
        thread.join(150)
    detected_after = time.monotonic() - killed_at
    run = result["r"]
    assert run.returncode != 0
    assert "Task placed on node mf-doomed-client" in run.output
    assert (
        "Task ended lost: the allocation is lost (its node mf-doomed-client went away" in run.output
    )
    assert "(task lost)." in run.output
    [job] = find_jobs(nomad_client, "TrackDrainFlow", run.run_id, include_dead=True)
    job = nomad_client.job(job["ID"])
    assert job["Stop"] is True
    allocs, _ = nomad_client.job_allocations(job["ID"])
    assert [a["ClientStatus"] for a in allocs] == ["lost"]
    print(f"lost detected {detected_after:.1f}s after the client was killed")
