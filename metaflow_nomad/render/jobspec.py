"""Job request + the run's render inputs -> template context -> HCL -> Job JSON.

``render_job`` is the single path for every job: a run's step (the runtime plans
each attempt, and ``metaflow-nomad render`` shows the same), a deployed step,
``doctor``'s probe and plan, and a deployment's runner.
The cluster is the authority on parsing (``POST /v1/jobs/parse``); the offline
check only proves the HCL is syntactically valid.
"""

from __future__ import annotations

from dataclasses import dataclass

from metaflow_nomad.errors import NomadParseError
from metaflow_nomad.model import JobIdentity, TaskLaunch
from metaflow_nomad.render.context import (
    JobRequest,
    TaskIds,
    TemplateContext,
    template_context,
)
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.parallel import ParallelGang
from metaflow_nomad.render.template_origins import render_origins
from metaflow_nomad.render.templates import (
    STEP_TEMPLATE,
    LoadedTemplate,
    load_step_template,
    load_template,
    render_template,
)
from metaflow_nomad.settings import StepSettings


@dataclass(frozen=True)
class RenderedJob:
    job_id: str
    hcl: str
    template: LoadedTemplate
    context: TemplateContext


def step_request(
    settings: StepSettings,
    identity: JobIdentity,
    launch: TaskLaunch,
    parallel: ParallelGang | None = None,
) -> JobRequest:
    """A run's job for one task attempt: its ids are its Meta and its ``metaflow``;
    a ``@parallel`` step's attempt runs its whole gang (``parallel``)."""
    return JobRequest(
        job_id=identity.job_id,
        settings=settings,
        launch=launch,
        meta=identity.to_meta(),
        ids=TaskIds(
            flow_name=identity.flow_name,
            run_id=identity.run_id,
            step_name=identity.step_name,
            task_id=identity.task_id,
            attempt=identity.attempt,
            user=identity.user,
        ),
        parallel=parallel,
    )


def job_template(request: JobRequest, inputs: RenderInputs, default: str) -> LoadedTemplate:
    """The request's template: a step's keeps its features whatever it is named."""
    if default == STEP_TEMPLATE:
        return load_step_template(
            request.settings.template,
            request.features(inputs),
            inputs.flow_dir,
            inputs.templates_dir,
        )
    return load_template(request.settings.template, default, inputs.flow_dir, inputs.templates_dir)


def render_context(template: LoadedTemplate, context: TemplateContext) -> RenderedJob:
    return RenderedJob(
        job_id=context.job_id,
        hcl=render_template(template, context.as_template_vars()),
        template=template,
        context=context,
    )


def render_job(
    request: JobRequest, inputs: RenderInputs, default: str = STEP_TEMPLATE
) -> RenderedJob:
    """Render one job (nothing is sent)."""
    template = job_template(request, inputs, default)
    return render_context(template, template_context(request, template, inputs))


def parse_jobspec(rendered: RenderedJob, client) -> dict:
    """Parse through the cluster; on rejection, point at the template line."""
    try:
        job = client.parse(rendered.hcl)
    except NomadParseError as exc:
        raise NomadParseError(explain_parse_error(exc, rendered)) from None
    if job.get("ID") != rendered.job_id:
        raise NomadParseError(
            f"The template {rendered.template.path} produced job ID {job.get('ID')!r}, but "
            f"metaflow-nomad tracks this task as {rendered.job_id!r}. Keep `job {{{{ job_id }}}}`."
        )
    return job


def explain_parse_error(error: NomadParseError, rendered: RenderedJob) -> str:
    """The rendered line Nomad rejected -> template file:line + rendered lines."""
    if error.line is None:
        return f"{error}\n(template: {rendered.template.path})"
    line = error.line
    origins = render_origins(rendered.template, rendered.context.as_template_vars())
    origin = origins[line - 1] if 0 < line <= len(origins) else rendered.template.path
    lines = rendered.hcl.splitlines()
    excerpt = "\n".join(
        f"{'>' if n == line else ' '} {n:4d} | {lines[n - 1]}"
        for n in range(max(1, line - 2), min(len(lines), line + 2) + 1)
    )
    return (
        f"{origin}: this template line produced rendered line {line}, which Nomad rejected:\n"
        f"{excerpt}\n"
        f"Nomad said: {error.said}"
    )


def check_offline(hcl: str) -> None:
    """Syntax-check HCL without a cluster (python-hcl2). Not a substitute for parse."""
    import hcl2

    try:
        hcl2.loads(hcl)
    except Exception as exc:  # hcl2 raises lark errors of many types
        raise NomadParseError(f"offline HCL syntax check failed: {exc}") from None
