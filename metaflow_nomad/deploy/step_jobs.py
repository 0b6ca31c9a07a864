"""A deployment's step jobs: rendered and registered by ``create``, dispatched by runs.

In Nomad 1.6 a workload identity may dispatch, read and stop jobs but not
register new ones (``Job.Register`` only accepts ACL tokens), and the agent's
``/v1/jobs/parse`` rejects it when the agent is also a server.  So a deployed
run does not render or register anything: ``create``, with the deployer's own
credentials, renders each step's job from its template as a *parameterized*
job, parses and registers it; the run's launcher dispatches it once per task
attempt, with the attempt's ids and its bootstrap script as dispatch meta.
This also means a template error fails ``create``, not a production run.

Step jobs are versioned by a hash of everything they were rendered from: a
redeploy that changes them registers a new version next to the old one, so a
run in flight keeps dispatching the step jobs it started with.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import shlex
from collections.abc import Mapping

from metaflow_nomad.errors import NomadException
from metaflow_nomad.model import (
    META_ATTEMPT,
    META_DEPLOYMENT,
    META_FLOW_NAME,
    META_RUN_ID,
    META_STEP_NAME,
    META_TASK_ID,
    META_USER,
    JobIdentity,
    TaskLaunch,
    deployed_step_job_id,
)
from metaflow_nomad.render.command_line import INPUT_PATHS_CHUNK
from metaflow_nomad.render.context import Dispatch, JobRequest, TaskIds, template_context
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.jobspec import RenderedJob, job_template, render_context
from metaflow_nomad.render.templates import STEP_TEMPLATE
from metaflow_nomad.settings import StepSettings

META_STEP_JOB = "metaflow.step_job"
META_STEP_JOBS_VERSION = "metaflow.step_jobs_version"
COMMAND_META = "mf_command"
INPUT_PATHS_META = "mf_input_paths_{}"
MAX_INPUT_PATH_CHUNKS = 64
IDENTITY_META = (META_FLOW_NAME, META_RUN_ID, META_STEP_NAME, META_TASK_ID, META_ATTEMPT, META_USER)
_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INPUT_PATHS_ENV = re.compile(r"^METAFLOW_INPUT_PATHS_(\d+)$")


def _runtime(meta_key: str) -> str:
    """A value Nomad fills in from the dispatch meta when the task starts."""
    return "${NOMAD_META_" + meta_key + "}"


def step_job_request(
    flow_name: str, step_name: str, settings: StepSettings, deployment: str
) -> JobRequest:
    """The step's parameterized job (its ID and version are set once all steps'
    jobs are known).

    The per-attempt fields of the contract (``metaflow.run_id``, ``task_id``,
    ``attempt``, ``user``) are Nomad runtime references to the dispatch meta.
    """
    return JobRequest(
        job_id="",
        settings=settings,
        launch=TaskLaunch(script="", env={}),
        meta={META_DEPLOYMENT: deployment, META_STEP_JOB: step_name},
        ids=TaskIds(
            flow_name=flow_name,
            run_id=_runtime(META_RUN_ID),
            step_name=step_name,
            task_id=_runtime(META_TASK_ID),
            attempt=_runtime(META_ATTEMPT),
            user=_runtime(META_USER),
        ),
        script_ref=_runtime(COMMAND_META),
        dispatch=Dispatch(
            meta_required=(*IDENTITY_META, COMMAND_META),
            meta_optional=tuple(INPUT_PATHS_META.format(i) for i in range(MAX_INPUT_PATH_CHUNKS)),
        ),
    )


def generation(deployment: str, contexts) -> str:
    """A short hash of everything the step jobs are rendered from."""
    digest = hashlib.sha256(deployment.encode())
    for template, context in contexts:
        digest.update(template.sha256.encode())
        digest.update(json.dumps(context.as_template_vars(), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:8]


def render_step_jobs(
    flow_name: str, deployment: str, steps: Mapping[str, StepSettings], inputs: RenderInputs
) -> tuple[str, list[RenderedJob]]:
    """Every step's parameterized job, and the version they make up together."""
    contexts = []
    for step, settings in steps.items():
        request = step_job_request(flow_name, step, settings, deployment)
        template = job_template(request, inputs, STEP_TEMPLATE)
        contexts.append((template, template_context(request, template, inputs)))
    version = generation(deployment, contexts)
    rendered = []
    for step, (template, context) in zip(steps, contexts):
        context = dataclasses.replace(
            context,
            job_id=deployed_step_job_id(flow_name, version, step),
            meta={**context.meta, META_STEP_JOBS_VERSION: version},
        )
        rendered.append(render_context(template, context))
    return version, rendered


def dispatch_meta(identity: JobIdentity, launch: TaskLaunch) -> dict[str, str]:
    """One task attempt as dispatch meta: its ids (the job's Meta, which lookups
    match on) and its bootstrap script with the task's environment exported.

    Large joins' input paths keep travelling in chunks, one meta key each, as
    they do in a registered job's env.
    """
    chunks = {}
    exports = []
    for name, value in sorted(launch.env.items()):
        match = _INPUT_PATHS_ENV.match(name)
        if match:
            chunks[int(match.group(1))] = (name, value)
            continue
        if not _SHELL_NAME.match(name):
            raise NomadException(
                f"Step '{identity.step_name}': environment variable {name!r} is not a valid "
                "shell name, which a deployed run's task needs. Rename it."
            )
        exports.append(f"export {name}={shlex.quote(value)}")
    if len(chunks) > MAX_INPUT_PATH_CHUNKS:
        raise NomadException(
            f"Step '{identity.step_name}': its input paths take more than "
            f"{MAX_INPUT_PATH_CHUNKS * INPUT_PATHS_CHUNK // 1024} KB, more than a deployed "
            "run can dispatch. Reduce the fan-in of this join."
        )
    meta = identity.to_meta()
    for index, (name, value) in sorted(chunks.items()):
        key = INPUT_PATHS_META.format(index)
        meta[key] = value
        exports.append(f'export {name}="$NOMAD_META_{key}"')
    script = "\n".join(exports) + "\n" + launch.script
    meta[COMMAND_META] = base64.b64encode(script.encode()).decode()
    return meta
