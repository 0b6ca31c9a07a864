"""``doctor``'s two questions to the scheduler and the nodes, answered as check lines.

``check_plan``: would the scheduler place a step's job now?  (A plan registers
nothing.)  ``run_probe``: does a tiny job with the step's settings start, fetch
the code package and use the datastore?  The probe job is purged afterwards, and
stopped on any way out (signals included), like a step's job.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from metaflow_nomad.api.diagnosis import one_line
from metaflow_nomad.api.doctor import FAIL, OK, SKIP, Check
from metaflow_nomad.errors import NomadClientError, NomadException
from metaflow_nomad.model import TASK_NAME
from metaflow_nomad.render import probe_task
from metaflow_nomad.render.jobspec import RenderedJob, parse_jobspec
from metaflow_nomad.runtime.guard import JobGuard
from metaflow_nomad.runtime.logs import bootstrap_failure, raw_log_tails
from metaflow_nomad.runtime.outcome import describe_placement_failure
from metaflow_nomad.runtime.tracking import JobTracker
from metaflow_nomad.settings import StepSettings

DEFAULT_PENDING_S = 60.0
RUN_LIMIT_S = 300.0
LOG_BYTES = 16384


def check_plan(client, job: dict, settings: StepSettings) -> Check:
    """The scheduler's own verdict on a step's job, by a plan (nothing is registered)."""
    try:
        plan = client.plan(job)
    except NomadClientError as exc:
        return Check(FAIL, "placement", f"the plan was refused: {one_line(exc.detail)}")
    failure = describe_placement_failure([plan], settings.memory, settings.describe_placement())
    if failure:
        return Check(FAIL, "placement", f"the scheduler would not place it now: {failure}")
    return Check(OK, "placement", "the scheduler would place this step's job now")


@dataclass(frozen=True)
class ProbeDatastore:
    """How the launcher reads (and then removes) what the probe task wrote."""

    read: Callable[[str], bytes | None]
    remove: Callable[[str], None]
    shared_hint: str


@dataclass(frozen=True)
class ProbeResult:
    """What the probe proved (its check lines), and every line the probe task said
    on stdout (``render.probe_task``, prefix removed), read before the job was
    purged: the caller reads the lines of its own checks (the metadata service) there."""

    checks: list[Check]
    said: tuple[str, ...] = ()


def run_probe(
    client,
    rendered: RenderedJob,
    settings: StepSettings,
    token: str,
    datastore: ProbeDatastore,
) -> ProbeResult:
    """Submit the probe job, follow it to its end, purge it, and say what it proved."""
    job = parse_jobspec(rendered, client)
    namespace = job.get("Namespace")
    with JobGuard(client, echo=lambda _: None) as guard:
        guard.watch(rendered.job_id, namespace)
        try:
            client.register(job, source=rendered.hcl)
            result = _follow(client, rendered.job_id, namespace, settings, token, datastore)
        finally:
            checks_cleanup = _purge(client, rendered.job_id, namespace)
            guard.release()
    return ProbeResult([*result.checks, checks_cleanup], result.said)


def _follow(client, job_id, namespace, settings, token, datastore) -> ProbeResult:
    tracker = JobTracker(
        client,
        job_id,
        TASK_NAME,
        echo=lambda _: None,
        namespace=namespace,
        memory_mb=settings.memory,
        placement=settings.describe_placement(),
    ).start()
    pending = settings.pending_timeout or DEFAULT_PENDING_S
    if not tracker.wait_started(pending):
        reason = tracker.pending_reason or "the scheduler has not placed it"
        return ProbeResult(
            [Check(FAIL, "task start", f"still pending after {pending:g}s: {reason}")]
        )
    if not tracker.wait_finished(RUN_LIMIT_S):
        return ProbeResult(
            [Check(FAIL, "task start", f"the probe did not end within {RUN_LIMIT_S:g}s")]
        )
    outcome = tracker.outcome()
    alloc = tracker.allocation or {}
    events = ((alloc.get("TaskStates") or {}).get(TASK_NAME) or {}).get("Events") or []
    if not any(e.get("Type") == "Started" for e in events):
        return ProbeResult([Check(FAIL, "task start", outcome.message or outcome.status)])
    where = f"on node {alloc.get('NodeName')} (allocation {alloc['ID'][:8]})"
    checks = [Check(OK, "task start", f"started {where}")]
    tails = raw_log_tails(client, alloc["ID"], TASK_NAME, LOG_BYTES)
    said = [line[len(probe_task.PREFIX) :] for line in tails["stdout"] if _is_probe(line)]
    failed = [line[len(probe_task.PREFIX) :] for line in tails["stderr"] if _is_probe(line)]
    if probe_task.STARTED not in said:
        why = bootstrap_failure(tails) or outcome.message or outcome.status
        checks.append(Check(FAIL, "code package download", why))
        return ProbeResult([*checks, Check(SKIP, "datastore", "not reached")], tuple(said))
    checks.append(Check(OK, "code package download", "the task fetched and unpacked it"))
    checks.append(_datastore_check(said, failed, token, datastore, outcome.message))
    return ProbeResult(checks, tuple(said))


def _is_probe(line: str) -> bool:
    return line.startswith(probe_task.PREFIX)


def _datastore_check(said, failed, token, datastore: ProbeDatastore, ended: str) -> Check:
    wrote = next((line for line in said if line.startswith("wrote ")), None)
    if wrote is None:
        return Check(FAIL, "datastore", (failed or [ended or "the probe said nothing"])[0])
    url, _, key = wrote[len("wrote ") :].partition(" key ")
    try:
        blob = datastore.read(key)
    finally:
        datastore.remove(url)
    if blob != token.encode():
        return Check(
            FAIL,
            "datastore",
            f"the task wrote {url}, but this launcher cannot read it back: {datastore.shared_hint}",
        )
    return Check(OK, "datastore", f"the task wrote {url} and this launcher read it back")


def _purge(client, job_id: str, namespace: str | None) -> Check:
    try:
        client.deregister(job_id, purge=True, namespace=namespace)
    except NomadException as exc:
        return Check(FAIL, "clean-up", f"could not purge job {job_id}: {exc}")
    return Check(OK, "clean-up", f"job {job_id} stopped and purged")


def remove_local_blob(path: str) -> None:
    """Remove a probe blob (and the metadata file the local store keeps beside it)."""
    for name in (path, path + "_meta"):
        if os.path.isfile(name):
            os.remove(name)
