"""Render a deployment's runner job from the runner template family.

Data flows as for a step: settings + what the task runs -> template context ->
HCL -> Job JSON parsed by the cluster.  ``render_runner_job`` is used by both
``nomad-workflows create`` and ``nomad-workflows render``, so the preview is
what a deployment registers.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metaflow_nomad.errors import NomadParseError
from metaflow_nomad.model import (
    META_FLOW_NAME,
    META_TEMPLATE,
    META_TEMPLATE_SHA256,
    META_TEMPLATE_VERSION,
    TaskLaunch,
)
from metaflow_nomad.render.bootstrap import (
    STOP_SIGNAL_TRAPS,
    forward_stop_signals,
)
from metaflow_nomad.render.code_package import code_package_setup
from metaflow_nomad.render.jobspec import (
    BOOTSTRAP_ARGS,
    COMMAND_ENV,
    RenderedJob,
    parse_jobspec,
    placement_context,
)
from metaflow_nomad.render.templates import (
    TEMPLATE_API_VERSION,
    LoadedTemplate,
    load_template,
    render_template,
)
from metaflow_nomad.settings import StepSettings

RUNNER_TEMPLATE = "runner"
RUNNER_TASK = "runner"
RUNNER_KILL_TIMEOUT = "90s"
DISPATCH = "dispatch"
SCHEDULE = "schedule"

# Job Meta of runner jobs: what `status`, `list-runs` and `from_deployment` read back.
META_DEPLOYMENT = "metaflow.deployment"
META_RUNNER_KIND = "metaflow.runner_kind"
META_OWNER = "metaflow.owner"
META_PRODUCTION_TOKEN = "metaflow.production_token"
META_PROJECT = "metaflow.project_name"
META_BRANCH = "metaflow.branch_name"
META_PARAMETERS = "metaflow.parameters"
META_STEP_NAMES = "metaflow.step_names"

# The runner reaches Nomad only through the Task API socket, with its workload identity.
TASK_API_EXPORT = 'export METAFLOW_NOMAD_ADDRESS="unix://${NOMAD_SECRETS_DIR}/api.sock"'


@dataclass(frozen=True)
class RunnerTrigger:
    """What starts the runner job: a dispatch (with parameters) or a cron schedule."""

    kind: str
    meta_optional: tuple[str, ...] = ()
    cron: str | None = None
    time_zone: str | None = None


@dataclass(frozen=True)
class RunnerJob:
    """Everything a runner job is rendered from."""

    job_id: str
    trigger: RunnerTrigger
    settings: StepSettings
    launch: TaskLaunch
    meta: Mapping[str, str]
    deployment: Mapping[str, Any]
    template: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)


def runner_launch(
    environment,
    code_package: Mapping[str, str],
    datastore_type: str,
    python: str,
    runner_argv: Sequence[str],
    env: Mapping[str, str],
) -> TaskLaunch:
    """The runner's script: fetch the code package (once per node), then run the
    runner command with Nomad's stop signals forwarded to it."""
    package = code_package_setup(environment, code_package, datastore_type)
    # Metaflow's mflog helpers then only echo: the runner has no task log of its own.
    setup = " && ".join(["export MFLOG_STDOUT=/dev/null", *package.commands])
    command = " ".join([shlex.quote(python), "-u", *(shlex.quote(a) for a in runner_argv)])
    script = (
        STOP_SIGNAL_TRAPS + '${METAFLOW_INIT_SCRIPT:+eval "${METAFLOW_INIT_SCRIPT}"}\n'
        f"{package.definitions}{setup}\n"
        f"c=$?\n{TASK_API_EXPORT}\n{forward_stop_signals(command)}\nexit $c\n"
    )
    return TaskLaunch(script=script, env=dict(env))


def runner_context(job: RunnerJob, template: LoadedTemplate) -> dict[str, Any]:
    """The variables a runner template may use (nomad_templates/README.md)."""
    settings = job.settings
    env = dict(settings.env)
    env.update(job.launch.env)
    env[COMMAND_ENV] = base64.b64encode(job.launch.script.encode()).decode()
    meta = dict(settings.meta)
    meta.update(job.meta)
    meta.update(
        {
            META_TEMPLATE: template.name,
            META_TEMPLATE_VERSION: template.api_version,
            META_TEMPLATE_SHA256: template.sha256,
        }
    )
    return {
        "job_id": job.job_id,
        **placement_context(settings),
        "meta": meta,
        "trigger": {
            "kind": job.trigger.kind,
            "meta_optional": list(job.trigger.meta_optional),
            "cron": job.trigger.cron,
            "time_zone": job.trigger.time_zone,
        },
        "task_name": RUNNER_TASK,
        "driver": settings.driver,
        "image": settings.image,
        "command": "/bin/bash",
        "args": list(BOOTSTRAP_ARGS),
        "env": env,
        "cpu": settings.cpu,
        "memory": settings.memory,
        "disk": settings.disk,
        "kill_timeout": RUNNER_KILL_TIMEOUT,
        "deployment": dict(job.deployment),
        "values": dict(job.values),
        "template_api": TEMPLATE_API_VERSION,
    }


def render_runner_job(
    job: RunnerJob, flow_dir: str | None = None, templates_dir: str | None = None
) -> RenderedJob:
    template = load_template(job.template, RUNNER_TEMPLATE, flow_dir, templates_dir)
    context = runner_context(job, template)
    return RenderedJob(
        job_id=job.job_id,
        hcl=render_template(template, context),
        template=template,
        context=context,
    )


def parse_runner_job(rendered: RenderedJob, client) -> dict:
    """Parse through the cluster (a rejection points at the template line); the
    job must keep its ID and the meta the life-cycle commands read."""
    job = parse_jobspec(rendered, client)
    if (job.get("Meta") or {}).get(META_FLOW_NAME) is None:
        raise NomadParseError(
            f"The runner template {rendered.template.path} dropped the job's meta; keep "
            "`meta = {{ meta }}`: status, list-runs and terminate read it."
        )
    return job
