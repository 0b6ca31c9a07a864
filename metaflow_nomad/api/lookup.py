"""Find and stop the Nomad jobs of Metaflow runs (``nomad list``, ``nomad kill``,
and the launcher's no-orphans backstop).

Jobs are found by their flow's ID prefix and selected by their ``Meta`` (run,
user), server-side; they are stopped by exact ID only, so a prefix can never
reach someone else's job.
"""

from __future__ import annotations

from collections.abc import Callable

from metaflow_nomad.api.client import NomadClient, default_client
from metaflow_nomad.errors import NomadClientError
from metaflow_nomad.model import (
    META_FLOW_NAME,
    META_RUN_ID,
    META_USER,
    JobIdentity,
    flow_job_prefix,
)

ACTIVE_STATUSES = ("pending", "running")


def find_jobs(
    client: NomadClient,
    flow_name: str,
    run_id: str | None = None,
    user: str | None = None,
    prefix: str | None = None,
    include_dead: bool = False,
) -> list[dict]:
    """Jobs of this flow (optionally one run / one user / one ID prefix), newest first.

    The run and the user are matched on the jobs' Meta, server-side: a deployed
    run's tasks are dispatched children whose IDs do not carry the run id.
    """
    search_prefix = prefix or flow_job_prefix(flow_name)
    clauses = [f'Meta["{META_FLOW_NAME}"] == "{_bexpr(flow_name)}"']
    if run_id:
        clauses.append(f'Meta["{META_RUN_ID}"] == "{_bexpr(run_id)}"')
    if user:
        clauses.append(f'Meta["{META_USER}"] == "{_bexpr(user)}"')
    jobs = client.list_jobs(prefix=search_prefix, filter_expr=" and ".join(clauses), namespace="*")
    if not include_dead:
        jobs = [j for j in jobs if j.get("Status") in ACTIVE_STATUSES]
    return sorted(jobs, key=lambda j: j.get("SubmitTime", 0), reverse=True)


def _bexpr(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def stop_jobs(
    client: NomadClient, jobs: list[dict], purge: bool, echo: Callable[[str], None]
) -> int:
    stopped = 0
    for job in jobs:
        try:
            client.deregister(job["ID"], purge=purge, namespace=job.get("Namespace"))
            stopped += 1
            echo(f"Stopped Nomad job {job['ID']}{' (purged)' if purge else ''}.")
        except NomadClientError as exc:
            echo(f"Could not stop Nomad job {job['ID']}: {exc}")
    return stopped


def stop_run_jobs(flow_name: str, run_id: str, echo: Callable[[str], None]) -> int:
    """Stop every still-active job of a run; used when the launcher ends abnormally.

    This is the last thing standing between an interrupted run and an orphaned job,
    so it waits out a slow or busy agent (up to about a minute) rather than give up."""
    client = default_client(timeout=10, max_attempts=4)
    try:
        jobs = find_jobs(client, flow_name, run_id)
    except NomadClientError as exc:
        echo(f"Could not list the run's Nomad jobs to stop them: {exc}")
        return 0
    return stop_jobs(client, jobs, purge=False, echo=echo)


def stop_previous_attempts(
    client: NomadClient,
    identity: JobIdentity,
    echo: Callable[[str], None],
) -> int:
    """Before a retry, stop earlier attempts' jobs that are still active.

    An attempt's launcher that was SIGKILLed (or OOM-killed) cannot stop its job,
    and the runtime retries at once.  The earlier jobs are found by their Meta:
    this very task of this run, an earlier attempt.
    """
    stopped = 0
    for job in find_jobs(client, identity.flow_name, identity.run_id):
        other = JobIdentity.from_meta(job.get("Meta"))
        if job.get("Stop") or not identity.same_task(other) or other.attempt >= identity.attempt:
            continue
        client.deregister(job["ID"], namespace=job.get("Namespace"))
        stopped += 1
        echo(f"Stopped Nomad job {job['ID']} (a previous attempt whose launcher died).")
    return stopped
