"""A deployed run across runner attempts: start it, or resume it after a lost runner.

Nomad replaces a runner whose allocation is lost (its node went down, was
drained, or the allocation was stopped).  The new runner has the same job ID,
so the same base run id, and finds the earlier attempts in the datastore: an
attempt counts once it has persisted the run's parameters, which is what
Metaflow's ``resume`` clones from.  The next attempt resumes the latest one as
``<run id>-r<n>``, reusing every task that finished; a run that already ended
well is not run again.

A run dispatched by ``nomad-workflows resume`` takes the same path from its
first attempt: it resumes the run it was given (``requested``) under its own id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from metaflow_nomad.deploy.naming import attempt_run_id

PARAMETERS_STEP = "_parameters"
# Optional dispatch meta of a runner job besides the flow's parameters: `resume`
# dispatches the run to resume (and the step to run again, if any).
META_RESUME_ORIGIN = "metaflow.resume_origin_run_id"
META_RESUME_STEP = "metaflow.resume_step"
RESUME_META = (META_RESUME_ORIGIN, META_RESUME_STEP)


@dataclass(frozen=True)
class ResumeRequest:
    """What ``nomad-workflows resume`` dispatched: the run to resume, and the step
    to run again even if it finished (with everything after it)."""

    origin_run_id: str
    step: str | None = None


def resume_request(job_meta: Mapping[str, str]) -> ResumeRequest | None:
    """The resume a runner job was dispatched for (its job's Meta), or None for a run."""
    origin = job_meta.get(META_RESUME_ORIGIN)
    if not origin:
        return None
    return ResumeRequest(origin, job_meta.get(META_RESUME_STEP) or None)


@dataclass(frozen=True)
class RunnerAttempt:
    """What this runner does: start ``run_id`` fresh, or resume ``origin_run_id`` into
    it (running ``step_to_rerun`` again, if set)."""

    run_id: str
    origin_run_id: str | None
    earlier: tuple[str, ...]
    already_succeeded: bool = False
    step_to_rerun: str | None = None


def plan_runner_attempt(
    flow_datastore,
    base_run_id: str,
    end_step: str = "end",
    requested: ResumeRequest | None = None,
) -> RunnerAttempt:
    """This runner's attempt.  A lost runner's replacement resumes what the lost one
    left, whether that was a run or a resume: the resume it was asked for started
    from ``requested``, and what finished since is only in the later attempt."""
    earlier = []
    while _has_parameters(flow_datastore, attempt_run_id(base_run_id, len(earlier))):
        earlier.append(attempt_run_id(base_run_id, len(earlier)))
    if not earlier:
        if requested is None:
            return RunnerAttempt(run_id=base_run_id, origin_run_id=None, earlier=())
        return RunnerAttempt(
            run_id=base_run_id,
            origin_run_id=requested.origin_run_id,
            earlier=(),
            step_to_rerun=requested.step,
        )
    latest = earlier[-1]
    return RunnerAttempt(
        run_id=attempt_run_id(base_run_id, len(earlier)),
        origin_run_id=latest,
        earlier=tuple(earlier),
        already_succeeded=_succeeded(flow_datastore, latest, end_step),
    )


def _has_parameters(flow_datastore, run_id: str) -> bool:
    return bool(flow_datastore.get_task_datastores(run_id=run_id, steps=[PARAMETERS_STEP]))


def _succeeded(flow_datastore, run_id: str, end_step: str) -> bool:
    ends = flow_datastore.get_task_datastores(run_id=run_id, steps=[end_step])
    return any(ds.get("_task_ok", False) for ds in ends)


def latest_client_run(flow_name: str, base_run_id: str):
    """The Metaflow ``Run`` of the latest attempt of a deployed run, or None yet."""
    from metaflow import Run
    from metaflow.exception import MetaflowNotFound

    found = None
    attempt = 0
    while True:
        try:
            found = Run(
                f"{flow_name}/{attempt_run_id(base_run_id, attempt)}", _namespace_check=False
            )
        except MetaflowNotFound:
            return found
        attempt += 1
