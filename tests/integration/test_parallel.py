"""Issue 20: a @parallel step on Nomad, its gang of nodes as one job per attempt.

Against the session agent with raw_exec: the gang's nodes find the control through
Nomad (a Nomad-native service and a template), each node is a Metaflow task of its
own (metadata, artifacts, logs), a failing node fails and stops the whole gang,
and @retry reruns it whole.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.lookup import find_jobs
from metaflow_nomad.model import TASK_NAME
from tests.support.cluster import RAW_EXEC, started_cluster
from tests.support.flows import (
    clean_environ,
    flow_cli,
    flow_env,
    flow_overrides,
    read_run,
    start_flow,
    wait_for,
)
from tests.support.nomad_checks import (
    running_allocations,
    settled_allocations,
    wait_no_active_jobs,
)

pytestmark = pytest.mark.integration

FLOW = "parallel_flow.py"
NODES = 3
NODE_LINE = re.compile(r"NODE index=(\d) num_nodes=(\d) main=([0-9a-fA-F.:]+):(\d+) task=(\S+)")
# Every run here is generous: the CI machine runs two test workers on two cores.
RUN_TIMEOUT_S = 420


def _train_jobs(client, run_id: str) -> list[dict]:
    """The run's jobs of step `train` (one per attempt), oldest attempt first."""
    stubs = find_jobs(client, "ParallelFlow", run_id, include_dead=True)
    jobs = [client.job(s["ID"]) for s in stubs]
    train = [j for j in jobs if j["Meta"]["metaflow.step_name"] == "train"]
    return sorted(train, key=lambda j: int(j["Meta"]["metaflow.attempt"]))


def _assert_nothing_left(client, run_id: str) -> None:
    stubs = find_jobs(client, "ParallelFlow", run_id, include_dead=True)
    job_ids = [s["ID"] for s in stubs]
    for job_id in job_ids:
        settled_allocations(lambda job_id=job_id: client.job_allocations(job_id)[0], timeout=60)
    assert running_allocations(client, job_ids) == []
    assert find_jobs(client, "ParallelFlow", run_id) == []


def _node_lines(text: str) -> dict[int, tuple]:
    return {int(m.group(1)): m.groups()[1:] for m in NODE_LINE.finditer(text)}


def test_a_parallel_step_runs_its_gang_as_one_job(run_flow, nomad_client):
    result = run_flow(FLOW, top_args=("--with", "nomad:cpu=100,memory=256"), timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.output
    run_id = result.run_id

    run = read_run(result, f"ParallelFlow/{run_id}")
    train = run["steps"]["train"]
    assert len(train) == NODES, [t["pathspec"] for t in train]
    assert all(t["successful"] for t in train)
    control = next(t for t in train if t["data"]["node"] == 0)
    control_id = control["pathspec"].rsplit("/", 1)[1]
    task_ids = [control_id, f"{control_id}-worker-0", f"{control_id}-worker-1"]
    by_task = {t["pathspec"].rsplit("/", 1)[1]: t["data"] for t in train}
    assert sorted(by_task) == sorted(task_ids)
    for index, task_id in enumerate(task_ids):
        data = by_task[task_id]
        assert data["node"] == index
        assert data["num_nodes"] == NODES
        assert data["control_task_id"] == control_id
        assert (data["main_ip"], data["main_port"]) == (
            control["data"]["main_ip"],
            control["data"]["main_port"],
        )
    assert control["data"]["main_port"].isdigit()
    join = run["steps"]["join"][0]["data"]
    assert join["nodes"] == [0, 1, 2]
    assert sorted(n for _, n, _ in join["client_nodes"]) == [0, 1, 2]

    # One job for the one attempt, whose allocations are the three nodes.
    [job] = _train_jobs(nomad_client, run_id)
    assert job["TaskGroups"][0]["Count"] == NODES
    allocs = settled_allocations(lambda: nomad_client.job_allocations(job["ID"])[0], timeout=60)
    assert sorted(a["Name"] for a in allocs) == [f"{job['ID']}.step[{i}]" for i in range(NODES)]
    assert {a["ClientStatus"] for a in allocs} == {"complete"}

    # Each node's output is in its own task's logs.
    main = f"{control['data']['main_ip']}:{control['data']['main_port']}"
    for index, task_id in enumerate(task_ids):
        logs = flow_cli(result, FLOW, "logs", f"{run_id}/train/{task_id}")
        assert logs.returncode == 0, logs.stdout + logs.stderr
        lines = _node_lines(logs.stdout)
        assert list(lines) == [index], logs.stdout
        assert lines[index] == (str(NODES), *main.rsplit(":", 1), task_id)
    _assert_nothing_left(nomad_client, run_id)


def test_a_failing_node_fails_and_stops_its_gang_and_retry_reruns_it(run_flow, nomad_client):
    """Node 2 fails its first attempt while nodes 0 and 1 would run for ten minutes:
    the attempt fails as one unit, every node of it is stopped, and @retry's second
    attempt (a new job) succeeds."""
    result = run_flow(
        FLOW,
        "--fail-node",
        "2",
        top_args=("--with", "nomad:cpu=100,memory=256"),
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, result.output
    run_id = result.run_id
    assert "node 2 of 3" in result.output, result.output
    assert "node 2 fails on purpose" in result.output, result.output

    first, second = _train_jobs(nomad_client, run_id)
    assert [j["Meta"]["metaflow.attempt"] for j in (first, second)] == ["0", "1"]
    failed_allocs = settled_allocations(
        lambda: nomad_client.job_allocations(first["ID"])[0], timeout=60
    )
    by_index = {a["Name"].rsplit("[", 1)[1].rstrip("]"): a for a in failed_allocs}
    assert sorted(by_index) == ["0", "1", "2"]
    assert by_index["2"]["ClientStatus"] == "failed"
    # The nodes that were still sleeping were stopped by the launcher, not left to run.
    for index in ("0", "1"):
        assert by_index[index]["DesiredStatus"] == "stop", by_index[index]
    allocs = settled_allocations(lambda: nomad_client.job_allocations(second["ID"])[0], timeout=60)
    assert {a["ClientStatus"] for a in allocs} == {"complete"}

    run = read_run(result, f"ParallelFlow/{run_id}")
    train = run["steps"]["train"]
    assert len(train) == NODES
    assert sorted(t["data"]["node"] for t in train) == [0, 1, 2]
    assert {t["data"]["attempt"] for t in train} == {1}
    _assert_nothing_left(nomad_client, run_id)


def test_ctrl_c_stops_every_node_of_the_gang(run_flow, nomad_agent, nomad_client, tmp_path):
    """Every node sleeps (``--fail-node 9``: no node fails, the others wait): Ctrl-C
    on the terminal stops the one job, so no node is left running."""
    env = {**clean_environ(), **flow_overrides(nomad_agent.address, tmp_path)}
    run = start_flow(
        FLOW, tmp_path, env, "--fail-node", "9", top_args=("--with", "nomad:cpu=100,memory=256")
    )
    try:
        run_id = run.wait_run_id(timeout=120)
        job = wait_for(
            lambda: _running_gang(nomad_client, run_id), timeout=240, what="3 running nodes"
        )
        os.killpg(run.proc.pid, signal.SIGINT)  # the terminal's Ctrl-C
        cleanup = wait_no_active_jobs(nomad_client, "ParallelFlow", run_id, [job], timeout=120)
        assert (cleanup.jobs_left, cleanup.allocs_left) == (0, 0), run.output
        assert run.finish(timeout=120) != 0
        assert f"Stopped Nomad job {job} (received SIGINT)" in run.output
    finally:
        run.kill()


def _running_gang(client, run_id: str) -> str | None:
    """The train job's ID once all its nodes run their step."""
    for job in _train_jobs(client, run_id):
        allocs, _ = client.job_allocations(job["ID"])
        states = [(a.get("TaskStates") or {}).get(TASK_NAME, {}).get("State") for a in allocs]
        if states.count("running") == NODES:
            return job["ID"]
    return None


@pytest.fixture(scope="module")
def raw_exec_cluster():
    cluster = started_cluster(RAW_EXEC)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_gang_spreads_over_the_nodes_of_a_production_cluster(raw_exec_cluster, tmp_path):
    """3 servers, 3 clients in 2 datacenters, ACL and mTLS: the nodes of one gang on
    three client nodes (distinct_hosts) still find their control through Nomad."""
    cluster = raw_exec_cluster
    (tmp_path / "metaflow_nomad.yaml").write_text(
        "defaults:\n  constraints:\n    - operator: distinct_hosts\n      value: 'true'\n"
    )
    env = flow_env(None, tmp_path, cluster.connection_env(cluster.management_token))
    run = start_flow(FLOW, tmp_path, env, top_args=("--with", "nomad:cpu=100,memory=256"))
    run.env = env
    assert run.wait(RUN_TIMEOUT_S) == 0, run.output
    client = NomadClient(cluster.connection_settings(cluster.management_token))
    [job] = _train_jobs(client, run.run_id)
    allocs = settled_allocations(lambda: client.job_allocations(job["ID"])[0], timeout=60)
    assert {a["ClientStatus"] for a in allocs} == {"complete"}
    assert len({a["NodeID"] for a in allocs}) == NODES
    train = read_run(run, f"ParallelFlow/{run.run_id}")["steps"]["train"]
    assert sorted(t["data"]["node"] for t in train) == [0, 1, 2]
    control = next(t["data"] for t in train if t["data"]["node"] == 0)
    assert {(t["data"]["main_ip"], t["data"]["main_port"]) for t in train} == {
        (control["main_ip"], control["main_port"])
    }
    _assert_nothing_left(client, run.run_id)
