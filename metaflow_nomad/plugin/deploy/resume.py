"""What ``nomad-workflows resume`` checks before it dispatches anything.

A resume is a dispatch of the runner job with the run to resume as dispatch
meta; the runner then runs Metaflow's ``resume`` (see ``deploy.attempts``).  A
wrong run id, a wrong step or a deployment made before resume existed would
only fail inside the runner, minutes later: they are refused here instead.
"""

from __future__ import annotations

from metaflow_nomad.deploy.attempts import PARAMETERS_STEP, RESUME_META
from metaflow_nomad.deploy.runner_job import META_STEPS
from metaflow_nomad.errors import NomadException


class ResumeRefused(NomadException):
    headline = "Cannot resume"


def check_resume(obj, runner_job: dict, origin_run_id: str, step: str | None) -> None:
    """Refuse a resume the runner could not do, with what to do instead."""
    flow_name = obj.flow.name
    missing = missing_resume_meta(runner_job)
    if missing:
        raise ResumeRefused(
            f"The deployment {obj.deployment.name} was created before `resume` existed (its "
            f"runner job does not accept {', '.join(missing)}). Redeploy it first: "
            "nomad-workflows create"
        )
    steps = deployed_steps(runner_job)
    if step is not None and step not in steps:
        raise ResumeRefused(
            f"--step {step} is not a step of the deployed {flow_name}; its steps are: "
            f"{', '.join(steps)}."
        )
    if not obj.flow_datastore.get_task_datastores(run_id=origin_run_id, steps=[PARAMETERS_STEP]):
        raise ResumeRefused(
            f"No run {origin_run_id} of {flow_name} in the datastore "
            f"{obj.flow_datastore.datastore_root}: there is nothing to resume. Give the id of "
            "a run that started (`list-runs` shows the deployment's runs)."
        )


def missing_resume_meta(runner_job: dict) -> list[str]:
    """The resume meta keys the deployed runner job does not accept."""
    accepted = set((runner_job.get("ParameterizedJob") or {}).get("MetaOptional") or [])
    return [key for key in RESUME_META if key not in accepted]


def deployed_steps(runner_job: dict) -> list[str]:
    """The deployed flow's steps (from the runner job: the caller's flow may be the
    stand-in ``from_deployment`` writes)."""
    steps = (runner_job.get("Meta") or {}).get(META_STEPS) or ""
    return [name for name in steps.split(",") if name]
