"""Render a deployment's runner job from the runner template family.

Data flows as for a step: settings + what the task runs -> template context ->
HCL -> Job JSON parsed by the cluster.  ``render_runner_job`` is used by both
``nomad-workflows create`` and ``nomad-workflows render``, so the preview is
what a deployment registers.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metaflow_nomad.errors import NomadParseError
from metaflow_nomad.model import META_FLOW_NAME, TaskLaunch
from metaflow_nomad.render.bootstrap import (
    STOP_SIGNAL_TRAPS,
    forward_stop_signals,
)
from metaflow_nomad.render.code_package import code_package_setup
from metaflow_nomad.render.context import JobRequest, RunnerTrigger
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.jobspec import RenderedJob, parse_jobspec, render_job
from metaflow_nomad.render.templates import RUNNER_TEMPLATE
from metaflow_nomad.settings import StepSettings

RUNNER_TASK = "runner"
RUNNER_KILL_TIMEOUT = "90s"
DISPATCH = "dispatch"
SCHEDULE = "schedule"

# Job Meta of runner jobs: what `status`, `list-runs` and `from_deployment` read back.
META_RUNNER_KIND = "metaflow.runner_kind"
META_OWNER = "metaflow.owner"
META_PRODUCTION_TOKEN = "metaflow.production_token"
META_PARAMETERS = "metaflow.parameters"
# The flow's steps, comma-separated: `resume --step` is checked against them, also
# from a Deployer rebuilt by `from_deployment`, whose stand-in flow has other steps.
META_STEPS = "metaflow.steps"

# The runner reaches Nomad only through the Task API socket, with its workload identity.
TASK_API_EXPORT = 'export METAFLOW_NOMAD_ADDRESS="unix://${NOMAD_SECRETS_DIR}/api.sock"'


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


@dataclass(frozen=True)
class RunnerCommands:
    """What a runner runs: the run (``runner``), then, once the run has succeeded,
    the announcement of its finish event (``announce-finish``)."""

    python: str
    run: Sequence[str]
    on_success: Sequence[str]

    def line(self, argv: Sequence[str]) -> str:
        return " ".join([shlex.quote(self.python), "-u", *(shlex.quote(a) for a in argv)])


def runner_launch(
    environment,
    code_package: Mapping[str, str],
    datastore_type: str,
    commands: RunnerCommands,
    env: Mapping[str, str],
) -> TaskLaunch:
    """The runner's script: fetch the code package (once per node), then run the
    runner command with Nomad's stop signals forwarded to it."""
    package = code_package_setup(environment, code_package, datastore_type)
    # Metaflow's mflog helpers then only echo: the runner has no task log of its own.
    setup = " && ".join(["export MFLOG_STDOUT=/dev/null", *package.commands])
    announce = f"if [ $c -eq 0 ]; then {commands.line(commands.on_success)}; fi"
    script = (
        STOP_SIGNAL_TRAPS + '${METAFLOW_INIT_SCRIPT:+eval "${METAFLOW_INIT_SCRIPT}"}\n'
        f"{package.definitions}{setup}\n"
        f"c=$?\n{TASK_API_EXPORT}\n"
        f"{forward_stop_signals(commands.line(commands.run), [announce])}\nexit $c\n"
    )
    return TaskLaunch(script=script, env=dict(env))


def runner_request(job: RunnerJob) -> JobRequest:
    """The runner job as a job request: no task ids, no TLS material."""
    return JobRequest(
        job_id=job.job_id,
        settings=dataclasses.replace(job.settings, template=job.template),
        launch=job.launch,
        meta=job.meta,
        trigger=job.trigger,
        deployment=job.deployment,
        task_name=RUNNER_TASK,
        kill_timeout=RUNNER_KILL_TIMEOUT,
        uses_tls=False,
    )


def render_runner_job(job: RunnerJob, inputs: RenderInputs) -> RenderedJob:
    return render_job(runner_request(job), inputs, RUNNER_TEMPLATE)


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
