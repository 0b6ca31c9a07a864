"""Register a deployment: every job rendered and parsed first, then all sent.

Order matters for runs that start meanwhile: the step jobs go first (a runner
only dispatches them), then the runner jobs.  Each job is registered with its
HCL (Nomad's job ``Submission``), so ``nomad job inspect`` and the UI show what
was rendered.  A new version of a runner job does not touch runs already
started: each run is a child job with its own copy, and dispatches the version
of the step jobs it started with (older versions are removed once no run in
flight uses them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.config import STEP_JOBS_ENV
from metaflow_nomad.deploy.naming import schedule_job_id
from metaflow_nomad.deploy.runner_job import SCHEDULE, RunnerJob, parse_runner_job
from metaflow_nomad.deploy.step_jobs import META_STEP_JOBS_VERSION
from metaflow_nomad.model import META_DEPLOYMENT, flow_job_prefix
from metaflow_nomad.render.jobspec import RenderedJob, parse_jobspec

Echo = Callable[[str], None]


def register_deployment(
    client: NomadClient,
    flow_name: str,
    step_jobs: Sequence[RenderedJob],
    runner_jobs: Sequence[tuple[RunnerJob, RenderedJob]],
    namespace: str | None,
    echo: Echo,
) -> list[str]:
    """Parse everything, then register the step jobs and the runner jobs; remove a
    periodic job the flow no longer has and step jobs no run uses any more.
    Returns one line per runner job for the user."""
    steps = [(rendered, parse_jobspec(rendered, client)) for rendered in step_jobs]
    runners = [(job, rendered, parse_runner_job(rendered, client)) for job, rendered in runner_jobs]
    for rendered, job_json in steps:
        client.register(job_json, source=rendered.hcl)
    lines = []
    for job, rendered, job_json in runners:
        client.register(job_json, source=rendered.hcl)
        lines.append(_describe(job, job_json.get("Namespace") or namespace))
    deployment = runner_jobs[0][0].job_id
    if not any(job.trigger.kind == SCHEDULE for job, _ in runner_jobs):
        _drop_schedule(client, deployment, namespace, echo)
    keep = versions_in_use(client, deployment, namespace)
    keep.add(step_jobs[0].context.meta[META_STEP_JOBS_VERSION])
    for job in deployment_step_jobs(client, flow_name, deployment):
        if step_jobs_version(job) not in keep:
            client.deregister(job["ID"], purge=True, namespace=job.get("Namespace"))
    return lines


def deployment_step_jobs(client: NomadClient, flow_name: str, deployment: str) -> list[dict]:
    """The step jobs (every version) a deployment registered."""
    escaped = deployment.replace("\\", "\\\\").replace('"', '\\"')
    jobs = client.list_jobs(
        prefix=flow_job_prefix(flow_name),
        filter_expr=f'Meta["{META_DEPLOYMENT}"] == "{escaped}"',
        namespace="*",
    )
    return [job for job in jobs if not job.get("ParentID")]


def versions_in_use(client: NomadClient, deployment: str, namespace: str | None) -> set[str]:
    """The step jobs' versions that runs in flight dispatch (each run's runner job
    is a copy of the runner job it was started from, with the version in its env)."""
    parents = {deployment, schedule_job_id(deployment)}
    versions = set()
    for stub in client.list_jobs(prefix=deployment, namespace=namespace):
        if stub.get("ParentID") not in parents or stub.get("Status") == "dead":
            continue
        job = client.job(stub["ID"], namespace=stub.get("Namespace")) or {}
        for group in job.get("TaskGroups") or []:
            for task in group.get("Tasks") or []:
                version = (task.get("Env") or {}).get(STEP_JOBS_ENV)
                if version:
                    versions.add(version)
    return versions


def step_jobs_version(job: dict) -> str | None:
    return (job.get("Meta") or {}).get(META_STEP_JOBS_VERSION)


def _drop_schedule(client: NomadClient, deployment: str, namespace: str | None, echo: Echo):
    stale = schedule_job_id(deployment)
    existing = client.job(stale, namespace=namespace)
    if existing is not None and not existing.get("Stop"):
        client.deregister(stale, purge=True, namespace=namespace)
        echo(f"Removed the schedule of the previous version ({stale}): the flow has no @schedule.")


def _describe(job: RunnerJob, namespace: str | None) -> str:
    where = f"Nomad job {job.job_id} (namespace {namespace or 'default'})"
    if job.trigger.kind == SCHEDULE:
        zone = f" {job.trigger.time_zone}" if job.trigger.time_zone else " UTC"
        return f"{where}: runs on the schedule '{job.trigger.cron}'{zone}."
    return f"{where}: runs when triggered."
