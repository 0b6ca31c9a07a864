"""Issue 4 item 4 on a real agent: @retry, @timeout, @catch and no-retry submission failures."""

from __future__ import annotations

import time

import pytest

from metaflow_nomad.api.lookup import find_jobs
from tests.support.nomad_checks import settled_allocations

pytestmark = pytest.mark.integration


def _jobs(client, flow_name: str, run_id: str) -> dict[str, dict]:
    return {j["ID"]: j for j in find_jobs(client, flow_name, run_id, include_dead=True)}


def _wait_allocs_terminal(client, job_id: str, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        allocs, _ = client.job_allocations(job_id)
        if all(a["ClientStatus"] in ("complete", "failed", "lost") for a in allocs):
            return allocs
        assert time.monotonic() < deadline, allocs
        time.sleep(0.2)


def test_foreach_with_one_transient_failure_completes(run_flow, nomad_client):
    result = run_flow("track_retry_flow.py", "--max-workers", "4")
    assert result.returncode == 0, result.output
    assert f"total of squares: {sum(i * i for i in range(20))}" in result.output
    jobs = _jobs(nomad_client, "TrackRetryFlow", result.run_id)
    by_task: dict[str, list[str]] = {}
    for job_id, job in jobs.items():
        by_task.setdefault(job["Meta"]["metaflow.task_id"], []).append(job_id)
    assert len(by_task) == 20
    retried = {task: ids for task, ids in by_task.items() if len(ids) > 1}
    assert len(retried) == 1, retried
    [(task_id, job_ids)] = retried.items()
    # One Nomad job per attempt; Nomad itself never restarted nor rescheduled.
    prefix = f"mf-trackretryflow-{result.run_id}-square-{task_id}-"
    assert sorted(job_ids) == [prefix + "0", prefix + "1"]
    for job_id in jobs:
        allocs, _ = nomad_client.job_allocations(job_id)
        assert len(allocs) == 1, (job_id, allocs)
        assert allocs[0]["TaskStates"]["metaflow"]["Restarts"] == 0
    statuses = {
        j: settled_allocations(lambda j=j: nomad_client.job_allocations(j)[0])[0]["ClientStatus"]
        for j in job_ids
    }
    assert statuses == {prefix + "0": "failed", prefix + "1": "complete"}
    assert "transient failure of item 7" in result.output
    assert result.output.count("Task is starting (retry).") == 1


def test_timeout_is_enforced_inside_the_task(run_flow, nomad_client):
    result = run_flow("track_timeout_flow.py")
    assert result.returncode != 0
    assert "Step start timed out after 0 hours, 0 minutes, 2 seconds" in result.output
    assert "the launcher stopped job" not in result.output
    [job_id] = _jobs(nomad_client, "TrackTimeoutFlow", result.run_id)
    assert nomad_client.job(job_id)["Status"] == "dead"


def test_launcher_stops_a_task_that_ignores_its_timeout(run_flow, nomad_client):
    started = time.monotonic()
    result = run_flow("track_timeout_flow.py", "--ignore-alarm", "true")
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "timed out after" not in result.output
    assert (
        "The task ran past its time limit of 2s (@timeout) and did not stop itself within "
        "5.2s more, so the launcher stopped job"
    ) in result.output
    # The step sleeps 60 s: the launcher ended it long before.
    assert elapsed < 45, elapsed
    [job_id] = _jobs(nomad_client, "TrackTimeoutFlow", result.run_id)
    assert nomad_client.job(job_id)["Stop"] is True
    allocs = _wait_allocs_terminal(nomad_client, job_id)
    assert [a["DesiredStatus"] for a in allocs] == ["stop"]


def test_catch_inside_the_task(run_flow, nomad_client):
    result = run_flow("track_catch_flow.py")
    assert result.returncode == 0, result.output
    assert "failure stored:" in result.output and "caught failure on nomad" in result.output
    assert list(_jobs(nomad_client, "TrackCatchFlow", result.run_id)) == [
        f"mf-trackcatchflow-{result.run_id}-start-1-0"
    ]


def test_catch_fallback_runs_locally_after_the_nomad_attempt_dies(run_flow, nomad_client):
    result = run_flow("track_catch_flow.py", "--hard", "true")
    assert result.returncode == 0, result.output
    assert "the task exited with code 3" in result.output
    assert "Task fallback is starting to handle the failure." in result.output
    assert "FailureHandledByCatch" in result.output
    # The fallback attempt (1) is not a Nomad job, as with @kubernetes.
    assert list(_jobs(nomad_client, "TrackCatchFlow", result.run_id)) == [
        f"mf-trackcatchflow-{result.run_id}-start-1-0"
    ]


def _assert_not_retried(result) -> None:
    assert result.returncode != 0
    assert result.output.count("Task failed.") == 1, result.output
    assert "This failed task will not be retried." in result.output
    assert "(retry)" not in result.output


def test_unknown_namespace_fails_the_run_before_any_task(run_flow, nomad_client):
    """The run's first-contact check finds it, so no attempt is made, let alone retried."""
    before = nomad_client.list_jobs(prefix="mf-tracksubmitflow-", namespace="*")
    result = run_flow("track_submit_flow.py", env={"METAFLOW_NOMAD_NAMESPACE": "no-such-ns"})
    assert result.returncode == 1
    assert "Cannot submit jobs in namespace 'no-such-ns': the namespace does not exist" in (
        result.output
    )
    assert "Task is starting" not in result.output
    assert nomad_client.list_jobs(prefix="mf-tracksubmitflow-", namespace="*") == before


BROKEN_TEMPLATE = """{# metaflow-nomad-template-api: v1 #}
{% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
{% block task_extra %}
      this is = = not hcl
{% endblock %}
"""


def test_template_that_nomad_rejects_is_not_retried(run_flow, nomad_client):
    template = run_flow.workdir / "broken.nomad.hcl.j2"
    template.write_text(BROKEN_TEMPLATE)
    result = run_flow("track_submit_flow.py", env={"METAFLOW_NOMAD_TEMPLATE": str(template)})
    _assert_not_retried(result)
    assert "Nomad rejected the rendered jobspec: " in result.output
    assert "Traceback" not in result.output
    assert _jobs(nomad_client, "TrackSubmitFlow", result.run_id) == {}
