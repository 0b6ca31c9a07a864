"""A deployed run across runner attempts: start it, or resume it after a lost runner.

Nomad replaces a runner whose allocation is lost (its node went down, was
drained, or the allocation was stopped).  The new runner has the same job ID,
so the same base run id, and finds the earlier attempts in the datastore: an
attempt counts once it has persisted the run's parameters, which is what
Metaflow's ``resume`` clones from.  The next attempt resumes the latest one as
``<run id>-r<n>``, reusing every task that finished; a run that already ended
well is not run again.
"""

from __future__ import annotations

from dataclasses import dataclass

from metaflow_nomad.deploy.naming import attempt_run_id

PARAMETERS_STEP = "_parameters"


@dataclass(frozen=True)
class RunnerAttempt:
    """What this runner does: start ``run_id`` fresh, or resume ``origin_run_id`` into it."""

    run_id: str
    origin_run_id: str | None
    earlier: tuple[str, ...]
    already_succeeded: bool = False


def plan_runner_attempt(flow_datastore, base_run_id: str, end_step: str = "end") -> RunnerAttempt:
    earlier = []
    while _has_parameters(flow_datastore, attempt_run_id(base_run_id, len(earlier))):
        earlier.append(attempt_run_id(base_run_id, len(earlier)))
    if not earlier:
        return RunnerAttempt(run_id=base_run_id, origin_run_id=None, earlier=())
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
