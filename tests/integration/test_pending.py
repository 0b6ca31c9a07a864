"""Issue 4 item 2 on a real agent: a task that cannot be placed says why, and gives up."""

from __future__ import annotations

import threading

import pytest

from metaflow_nomad.api.lookup import find_jobs
from tests.support.flows import wait_for

pytestmark = pytest.mark.integration

PENDING = "Task is pending: task group 'step' cannot be placed"


def _assert_gave_up(result, client, flow_name: str, seconds: str, reason: str) -> None:
    assert result.returncode != 0, result.output
    output = result.output
    # The reason is printed while pending, then the task fails with it.
    pending_at = output.index(f"Task is pending: {reason}")
    stopped_at = output.index("(pending timeout).")
    assert pending_at < stopped_at
    assert f"still pending after {seconds} (pending_timeout), so job " in output
    failure = output[output.index("(pending_timeout), so job ") :]
    assert reason in failure
    [job] = find_jobs(client, flow_name, result.run_id, include_dead=True)
    job = client.job(job["ID"])
    assert (job["Status"], job["Stop"]) == ("dead", True)
    allocs, _ = client.job_allocations(job["ID"])
    assert allocs == []


def test_memory_larger_than_any_node(run_flow, nomad_client):
    result = run_flow("track_pending_flow.py", env={"METAFLOW_NOMAD_MEMORY": "10000000"})
    _assert_gave_up(
        result,
        nomad_client,
        "TrackPendingFlow",
        "4s",
        "task group 'step' cannot be placed: 1 node(s) do not have enough free memory "
        "(requested 10000000 MB).",
    )


def test_unknown_datacenter(run_flow, nomad_client):
    result = run_flow(
        "track_pending_flow.py", env={"METAFLOW_NOMAD_DEFAULT_DATACENTERS": "nowhere-dc"}
    )
    _assert_gave_up(
        result,
        nomad_client,
        "TrackPendingFlow",
        "4s",
        "task group 'step' cannot be placed: no ready client node is in the requested "
        "datacenters and node pool (datacenters=['nowhere-dc'])",
    )


def test_unsatisfiable_constraint_with_timeout_from_the_environment(run_flow, nomad_client):
    result = run_flow("track_constraint_flow.py", env={"METAFLOW_NOMAD_PENDING_TIMEOUT": "2"})
    _assert_gave_up(
        result,
        nomad_client,
        "TrackConstraintFlow",
        "2s",
        "task group 'step' cannot be placed: 1 of 1 node(s) were filtered out by constraint "
        "`${attr.kernel.name} = windows`.",
    )


def test_job_stopped_while_pending_ends_the_task_without_retry(run_flow, nomad_client, tmp_path):
    """No pending_timeout here: only the external `nomad job stop` can end the wait."""
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(r=run_flow("track_constraint_flow.py", timeout=120))
    )
    thread.start()
    try:
        # Stop it once the launcher has said why it waits: a stop before the scheduler's
        # first verdict would test a job stopped before it was ever pending.
        output = tmp_path / "output.log"
        wait_for(
            lambda: output.exists() and PENDING in output.read_text(errors="replace"),
            90,
            "the pending diagnosis",
        )
        jobs = find_jobs(nomad_client, "TrackConstraintFlow", None, prefix="mf-trackconstr")
        nomad_client.deregister(jobs[0]["ID"])
    finally:
        thread.join(120)
    run = result["r"]
    assert run.returncode != 0
    assert "the Nomad job was stopped before it was placed" in run.output
    assert "This failed task will not be retried." in run.output
