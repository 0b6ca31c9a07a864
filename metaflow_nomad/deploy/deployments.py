"""A deployment's runner jobs and runs, as Nomad knows them.

Every run of a deployment is a child job of one of its runner jobs (a dispatch
of the parameterized job, or a launch of the periodic one); its run id is
derived from the child's ID (``naming.run_id_for_runner_job``).  Its state is
the runner's: the runner exits with the flow's outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.lookup import find_jobs, stop_jobs
from metaflow_nomad.deploy.event_dispatch import forget_pending
from metaflow_nomad.deploy.naming import (
    attempt_run_id,
    base_run_id,
    run_id_for_runner_job,
    schedule_job_id,
)
from metaflow_nomad.deploy.registration import (
    deployment_step_jobs,
    step_jobs_version,
    versions_in_use,
)
from metaflow_nomad.deploy.runner_job import RUNNER_TASK
from metaflow_nomad.deploy.triggers import describe_events, read_triggers
from metaflow_nomad.errors import NomadClientError, NomadException

PENDING, RUNNING, SUCCEEDED, FAILED, TERMINATED = (
    "Pending",
    "Running",
    "Succeeded",
    "Failed",
    "Terminated",
)
TERMINAL_ALLOC = ("complete", "failed", "lost")


class RunNotFound(NomadException):
    headline = "Run not found"


@dataclass(frozen=True)
class DeployedRun:
    """One run of a deployment: its runner job and what became of it."""

    run_id: str
    job_id: str
    namespace: str
    submitted: int  # unix nanoseconds
    state: str
    detail: str
    attempts: int
    triggered_by: str = ""


def dispatch(
    client: NomadClient, deployment: str, meta: dict[str, str], namespace: str | None
) -> str:
    """Start a run: dispatch the parameterized runner job; returns the run id."""
    return run_id_for_runner_job(client.dispatch(deployment, meta, namespace))


def runner_children(client: NomadClient, deployment: str, namespace: str | None) -> list[dict]:
    """Every run's runner job of the deployment, newest first."""
    parents = {deployment, schedule_job_id(deployment)}
    stubs = client.list_jobs(prefix=deployment, namespace=namespace)
    children = [s for s in stubs if s.get("ParentID") in parents]
    return sorted(children, key=lambda s: s.get("SubmitTime", 0), reverse=True)


def find_run(client: NomadClient, deployment: str, run_id: str, namespace: str | None) -> dict:
    """The runner job of ``run_id`` (or of the run it resumes)."""
    wanted = base_run_id(run_id)
    for stub in runner_children(client, deployment, namespace):
        if run_id_for_runner_job(stub["ID"]) == wanted:
            return stub
    raise RunNotFound(
        f"No run {run_id} of deployment {deployment} in Nomad namespace "
        f"{namespace or 'default'}. `list-runs` shows its runs."
    )


def describe_run(client: NomadClient, stub: dict) -> DeployedRun:
    """A run's state from its runner job and the runner's allocations."""
    namespace = stub.get("Namespace") or "default"
    allocs, _ = client.job_allocations(stub["ID"], namespace=namespace)
    allocs = sorted(allocs, key=lambda a: a.get("CreateIndex", 0))
    state, detail = _state(stub, allocs)
    return DeployedRun(
        run_id=run_id_for_runner_job(stub["ID"]),
        job_id=stub["ID"],
        namespace=namespace,
        submitted=int(stub.get("SubmitTime") or 0),
        state=state,
        detail=detail,
        attempts=max(1, len(allocs)),
        triggered_by=describe_events(stub.get("Meta") or {}),
    )


def _state(stub: dict, allocs: list[dict]) -> tuple[str, str]:
    last = allocs[-1] if allocs else None
    if stub.get("Stop"):
        return TERMINATED, "the runner job was stopped"
    if last is None or stub.get("Status") == "pending":
        return PENDING, "waiting for the runner to be placed"
    status = last.get("ClientStatus")
    if status in ("pending", "running") or stub.get("Status") == "running":
        return (RUNNING, "") if status == "running" else (PENDING, "the runner is starting")
    if status == "complete":
        return SUCCEEDED, ""
    return FAILED, _failure_reason(last)


def _failure_reason(alloc: dict) -> str:
    events = ((alloc.get("TaskStates") or {}).get(RUNNER_TASK) or {}).get("Events") or []
    for event in reversed(events):
        if event.get("ExitCode"):
            return f"the runner exited with code {event['ExitCode']} (the flow failed)"
        message = event.get("DisplayMessage") or event.get("Message")
        if event.get("Type") in ("Killed", "Driver Failure", "Setup Failure") and message:
            return message
    return f"the runner's allocation ended {alloc.get('ClientStatus')}"


def terminate(
    client: NomadClient,
    stub: dict,
    flow_name: str,
    echo: Callable[[str], None],
    wait_s: float = 150,
) -> int:
    """Stop the runner, wait until it is gone, then stop whatever step job of any of
    the run's attempts is still active (no orphans).  Returns the step jobs stopped."""
    namespace = stub.get("Namespace") or "default"
    client.deregister(stub["ID"], namespace=namespace)
    echo(f"Stopped runner job {stub['ID']}; waiting for the runner to stop its steps...")
    deadline = time.monotonic() + wait_s
    allocs: list[dict] = []
    while time.monotonic() < deadline:
        allocs, _ = client.job_allocations(stub["ID"], namespace=namespace)
        if all(a.get("ClientStatus") in TERMINAL_ALLOC for a in allocs):
            break
        time.sleep(1)
    else:
        echo("The runner did not stop in time; stopping its step jobs directly.")
    run_id = run_id_for_runner_job(stub["ID"])
    stopped = 0
    for attempt in range(max(1, len(allocs))):
        jobs = find_jobs(client, flow_name, attempt_run_id(run_id, attempt))
        left = [job for job in jobs if not job.get("Stop")]
        stopped += stop_jobs(client, left, purge=False, echo=echo)
    return stopped


def delete(
    client: NomadClient, flow_name: str, deployment: str, namespace: str | None
) -> tuple[list[str], list[str]]:
    """Deregister (and purge) the deployment's runner jobs, and its step jobs that no
    run uses, and forget the events it was still waiting on: nothing may start it
    later.  Runs in flight go on.  Returns (deleted, kept) job IDs."""
    deleted, kept = [], []
    runner = client.job(deployment, namespace=namespace)
    if runner is not None and len(read_triggers(runner.get("Meta") or {})) > 1:
        forget_pending(client, deployment, namespace)
    for job_id in (deployment, schedule_job_id(deployment)):
        if client.job(job_id, namespace=namespace) is None:
            continue
        _purge(client, job_id, namespace)
        deleted.append(job_id)
    in_use = versions_in_use(client, deployment, namespace)
    for job in deployment_step_jobs(client, flow_name, deployment):
        if step_jobs_version(job) in in_use:
            kept.append(job["ID"])
            continue
        _purge(client, job["ID"], job.get("Namespace"))
        deleted.append(job["ID"])
    return deleted, kept


def _purge(client: NomadClient, job_id: str, namespace: str | None) -> None:
    try:
        client.deregister(job_id, purge=True, namespace=namespace)
    except NomadClientError as exc:
        raise NomadException(f"Could not delete job {job_id}: {exc}") from None
