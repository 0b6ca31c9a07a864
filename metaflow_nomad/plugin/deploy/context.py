"""What every ``nomad-workflows`` command knows about the flow's deployment.

Built once in the group's callback from the flow, its ``@project`` and
``--name``; the runner's settings (where it runs, its resources) are resolved
from the same layers as a step's, so a bad value fails the same way, before
anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from metaflow_nomad.deploy.naming import (
    deployment_name,
    production_token_prefix,
)
from metaflow_nomad.errors import (
    NomadException,
    NomadSettingsError,
    problems_of,
    raise_problems,
)
from metaflow_nomad.settings import StepSettings, project_defaults_for_step, resolve_step_settings

# How the runner is named in setting errors ("Step '(runner)': setting 'memory' ...").
RUNNER_LABEL = "(runner)"
RUNNER_DEFAULTS = {"cpu": 500, "memory": 1024, "disk": 1024}
# Settings meant for steps only: the runner has its own resources and template.
STEP_ONLY = ("gpu", "gpu_vendor", "template", "pending_timeout")
STEP_ONLY_CONFIG = ("NOMAD_CPU", "NOMAD_MEMORY", "NOMAD_DISK", "NOMAD_TEMPLATE")


@dataclass(frozen=True)
class Deployment:
    name: str
    flow_name: str
    given_name: str | None
    project: str | None
    branch: str | None
    is_production: bool
    token_prefix: str

    @property
    def project_meta(self) -> dict[str, str]:
        if not self.project:
            return {}
        return {"metaflow.project_name": self.project, "metaflow.branch_name": self.branch or ""}


def current_deployment(flow_name: str, given_name: str | None) -> Deployment:
    """The deployment of this flow for the current ``@project`` branch (or ``--name``)."""
    from metaflow import current

    project = current.get("project_name")
    name = deployment_name(
        flow_name, current.get("project_flow_name") if project else None, given_name
    )
    branch = current.get("branch_name") if project else None
    return Deployment(
        name=name,
        flow_name=flow_name,
        given_name=given_name,
        project=project,
        branch=branch,
        is_production=bool(current.get("is_production")) if project else False,
        token_prefix=production_token_prefix(name, project, branch),
    )


def runner_settings(cpu=None, memory=None, disk=None, node_pool=None) -> StepSettings:
    """The runner job's settings: its own resources (the ``--runner-*`` options, else
    RUNNER_DEFAULTS), and the flow-wide layers (METAFLOW_NOMAD_*, ``defaults:`` of
    metaflow_nomad.yaml, NOMAD_*) for where it runs.  Step resource defaults and
    the step template do not apply to it."""
    from metaflow_nomad.config import flow_directory, read_config, read_standard_env
    from metaflow_nomad.plugin.step_settings import load_project_file

    given = {"cpu": cpu, "memory": memory, "disk": disk}
    attributes = {k: RUNNER_DEFAULTS[k] if v is None else v for k, v in given.items()}
    if node_pool is not None:
        attributes["node_pool"] = node_pool
    defaults = project_defaults_for_step(load_project_file(flow_directory()), RUNNER_LABEL)
    for key in (*STEP_ONLY, *attributes):
        defaults.pop(key, None)
    config = {k: v for k, v in read_config().items() if k not in STEP_ONLY_CONFIG}
    try:
        return resolve_step_settings(
            RUNNER_LABEL,
            attributes,
            config=config,
            project_defaults=defaults,
            standard_env=read_standard_env(),
        )
    except NomadException as exc:
        raise_problems([_as_runner_option(problem) for problem in problems_of(exc)])


def _as_runner_option(problem: NomadException) -> NomadException:
    """A value from a --runner-* option (resolved as if from a decorator): say so."""
    if not isinstance(problem, NomadSettingsError) or problem.source != "@nomad":
        return problem
    option = "--runner-" + problem.setting.replace("_", "-")
    return NomadException(
        f"{option} = {problem.value!r} is not valid. Expected {problem.accepted}."
    )


def deployment_namespace() -> str | None:
    """The Nomad namespace the deployment's runner jobs live in."""
    return runner_settings().nomad_namespace
