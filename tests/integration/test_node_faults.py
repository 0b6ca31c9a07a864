"""Client nodes that are lost or frozen mid-task, on the production-shaped cluster
(3 servers, 3 raw_exec clients in 2 datacenters, ACL and mTLS).

Nomad 1.6 replaces a lost allocation of a batch job inside the same job, whatever
its reschedule policy.  What must hold: the launcher says which node was lost and
@retry runs the task again as a new attempt; the replacement never runs the step
(the attempt is claimed by its first allocation), so no finished task's files
change after it ended.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.model import CLAIMED_ELSEWHERE
from tests.support.cluster import RAW_EXEC, started_cluster
from tests.support.flows import FlowRun, flow_env, read_run, start_flow, wait_for

pytestmark = pytest.mark.integration

FLOW = "NodeFaultFlow"
LOST = "the allocation is lost (its node {node} went away"


@pytest.fixture(scope="module")
def cluster():
    cluster = started_cluster(RAW_EXEC)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture()
def client(cluster) -> NomadClient:
    return NomadClient(cluster.connection_settings(cluster.management_token))


def start(cluster, tmp_path: Path, *args: str, seconds: int = 6):
    env = flow_env(
        None,
        tmp_path,
        {**cluster.connection_env(cluster.management_token), "WORK_SECONDS": str(seconds)},
    )
    run = start_flow("node_fault_flow.py", tmp_path, env, *args)
    run.env = {}
    return run, run.wait_run_id()


def work_jobs(client: NomadClient, run_id: str) -> list[dict]:
    jobs = client.list_jobs(prefix="mf-nodefaultflow-")
    return sorted(
        (j for j in jobs if (j.get("Meta") or {}).get("metaflow.run_id") == run_id),
        key=lambda j: j["Meta"]["metaflow.attempt"],
    )


def running_alloc(client: NomadClient, run_id: str) -> dict:
    def running():
        for job in work_jobs(client, run_id):
            allocs, _ = client.job_allocations(job["ID"])
            return next((a for a in allocs if a["ClientStatus"] == "running"), None)
        return None

    return wait_for(running, 60, "the work task running")


def files_of(task_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(task_dir)): p.stat().st_mtime_ns for p in task_dir.rglob("*")}


def exit_code(alloc: dict) -> int | None:
    for event in (alloc.get("TaskStates") or {}).get("metaflow", {}).get("Events") or []:
        if event.get("Type") == "Terminated":
            return int((event.get("Details") or {}).get("exit_code", -1))
    return None


def assert_replacements_never_ran_the_step(client, tmp_path, run_id, job_id, first) -> None:
    """The attempt is claimed by its first allocation, so a replacement Nomad placed in
    the same attempt either exited on the claim or was stopped with the attempt's job
    (before or while it claimed); it ends neither running nor by its own success."""
    task_id = client.job(job_id)["Meta"]["metaflow.task_id"]
    task_dir = tmp_path / ".metaflow" / FLOW / run_id / "work" / task_id
    assert (task_dir / "0.nomad_claim").read_text() == first["ID"]
    for alloc in client.job_allocations(job_id)[0]:
        if alloc["ID"] == first["ID"]:
            continue

        def ended(alloc_id=alloc["ID"]):
            full = client.allocation(alloc_id)
            return None if full["ClientStatus"] == "running" else full

        full = wait_for(ended, 30, "the replacement to end")
        code = exit_code(full)
        assert code == CLAIMED_ELSEWHERE or (full["DesiredStatus"] == "stop" and code != 0), full


def test_a_frozen_node_never_runs_a_finished_task_again(cluster, client, tmp_path):
    run, run_id = start(cluster, tmp_path)
    first = running_alloc(client, run_id)
    node = first["NodeName"]
    cluster.freeze_client(node)
    frozen_at = time.monotonic()
    try:
        assert run.finish(timeout=120) == 0, run.output
        task_id = client.job(first["JobID"])["Meta"]["metaflow.task_id"]
        task_dir = tmp_path / ".metaflow" / FLOW / run_id / "work" / task_id
        before = files_of(task_dir)
        [work] = read_run(run, f"{FLOW}/{run_id}")["steps"]["work"]
        job_id = first["JobID"]

        def replacement_ended():
            allocs, _ = client.job_allocations(job_id)
            others = [a for a in allocs if a["ID"] != first["ID"]]
            ended = [a for a in others if a["ClientStatus"] in ("complete", "failed")]
            return ended and client.allocation(ended[0]["ID"])

        replacement = wait_for(replacement_ended, 90, "Nomad's replacement allocation")
        replaced_after = time.monotonic() - frozen_at
    finally:
        cluster.thaw_client(node)
    print(
        f"frozen {node}; replacement {replacement['ID'][:8]} on {replacement['NodeName']} "
        f"exited on the claim {replaced_after:.1f}s after the freeze"
    )
    assert replacement["NodeName"] != node
    assert exit_code(replacement) == CLAIMED_ELSEWHERE
    assert (task_dir / "0.nomad_claim").read_text() == first["ID"]
    assert files_of(task_dir) == before, "a finished task's files changed after it ended"
    [again] = read_run(run, f"{FLOW}/{run_id}")["steps"]["work"]
    assert again["data"]["value"] == work["data"]["value"]
    assert run.output.count("work done") == 1


@dataclass
class LostNode:
    """A run whose work task's node was killed (the machine lost) while it worked."""

    run: FlowRun
    run_id: str
    first: dict
    node: str
    killed_at: float


@contextmanager
def node_lost_mid_work(cluster, client, tmp_path: Path, *args: str) -> Iterator[LostNode]:
    """Start the flow, kill the work task's node once the step works; afterwards the
    launcher is gone and the node is back, whatever the test found."""
    run, run_id = start(cluster, tmp_path, *args, seconds=20)
    first = running_alloc(client, run_id)
    node = first["NodeName"]
    wait_for(lambda: "work started" in run.output, 30, "the step to start")
    cluster.kill_client(node)
    try:
        yield LostNode(run, run_id, first, node, time.monotonic())
    finally:
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGKILL)
        cluster.restart_member(node)


def test_a_lost_node_fails_the_attempt_and_retry_runs_it_elsewhere(cluster, client, tmp_path):
    retry = ("--with", "retry:times=1,minutes_between_retries=0")
    with node_lost_mid_work(cluster, client, tmp_path, *retry) as lost:
        run, run_id, first, node = lost.run, lost.run_id, lost.first, lost.node
        wait_for(lambda: LOST.format(node=node) in run.output, 120, "the launcher to say so")
        said_after = time.monotonic() - lost.killed_at
        assert run.finish(timeout=180) == 0, run.output
    print(
        f"lost {node}: the launcher said so {said_after:.1f}s after the kill; the run ended "
        f"{time.monotonic() - lost.killed_at:.1f}s after it"
    )
    output = run.output
    jobs = work_jobs(client, run_id)
    assert [j["Meta"]["metaflow.attempt"] for j in jobs] == ["0", "1"]
    attempt_1, _ = client.job_allocations(jobs[1]["ID"])
    assert [a["ClientStatus"] for a in attempt_1] == ["complete"]
    assert attempt_1[0]["NodeName"] != node
    assert_replacements_never_ran_the_step(client, tmp_path, run_id, jobs[0]["ID"], first)
    assert output.count("work done") == 1
    [work] = read_run(run, f"{FLOW}/{run_id}")["steps"]["work"]
    assert work["successful"] is True


def test_a_lost_node_without_retry_fails_the_step_naming_the_node(cluster, client, tmp_path):
    with node_lost_mid_work(cluster, client, tmp_path) as lost:
        run, run_id, first, node = lost.run, lost.run_id, lost.first, lost.node
        assert run.finish(timeout=180) != 0, run.output
    print(
        f"lost {node} without @retry: the run failed {time.monotonic() - lost.killed_at:.1f}s later"
    )
    output = run.output
    assert LOST.format(node=node) in output
    assert "Traceback (most recent call last)" not in output
    jobs = work_jobs(client, run_id)
    assert [j["Meta"]["metaflow.attempt"] for j in jobs] == ["0"]
    wait_for(
        lambda: all(j["Status"] == "dead" for j in work_jobs(client, run_id)),
        30,
        "the attempt's job to be stopped",
    )
    assert_replacements_never_ran_the_step(client, tmp_path, run_id, jobs[0]["ID"], first)
    assert "work done" not in output
