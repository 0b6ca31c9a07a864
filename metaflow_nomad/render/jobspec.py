"""Settings + task launch -> template context -> HCL -> Job JSON.

``render_jobspec`` is the single path used by both a run (the runtime plans each
attempt) and ``metaflow-nomad render``, so what ``render`` shows is what a step
submits.
The cluster is the authority on parsing (``POST /v1/jobs/parse``); the offline
check only proves the HCL is syntactically valid.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metaflow_nomad.errors import NomadParseError
from metaflow_nomad.model import (
    META_TEMPLATE,
    META_TEMPLATE_SHA256,
    META_TEMPLATE_VERSION,
    NODE_NAME_ENV,
    TASK_NAME,
    JobIdentity,
    TaskLaunch,
    TlsMaterial,
)
from metaflow_nomad.render.exact_env import exact_env
from metaflow_nomad.render.hcl import HclRaw
from metaflow_nomad.render.template_origins import render_origins
from metaflow_nomad.render.templates import (
    TEMPLATE_API_VERSION,
    LoadedTemplate,
    choose_variant,
    load_template,
    render_template,
)
from metaflow_nomad.settings import StepSettings

COMMAND_ENV = "METAFLOW_NOMAD_COMMAND_B64"
EXACT_ENV = "METAFLOW_NOMAD_EXACT_ENV_B64"
# Nomad interpolates ${...} in args and env at runtime, with no escape.  The step's
# script is therefore shipped base64-encoded (an alphabet without '$' or '{') and
# decoded by a fixed bootstrap that only uses bare $VAR references.  Env values
# Nomad or HCL would change travel the same way, as exports run first.
BOOTSTRAP_ARGS = (
    "-c",
    f'eval "$(printf %s "${EXACT_ENV}" | base64 -d)"; '
    f'eval "$(printf %s "${COMMAND_ENV}" | base64 -d)"',
)
KILL_TIMEOUT = "30s"


@dataclass(frozen=True)
class RenderedJob:
    job_id: str
    hcl: str
    template: LoadedTemplate
    context: Mapping[str, Any]


def job_meta(identity: JobIdentity, template: LoadedTemplate, user_meta: Mapping[str, str]):
    """The job's Meta: the user's, then the task identity and the template's (ours win)."""
    meta = dict(user_meta)
    meta.update(identity.to_meta())
    meta.update(
        {
            META_TEMPLATE: template.name,
            META_TEMPLATE_VERSION: template.api_version,
            META_TEMPLATE_SHA256: template.sha256,
        }
    )
    return meta


def build_template_context(
    settings: StepSettings,
    identity: JobIdentity,
    launch: TaskLaunch,
    template: LoadedTemplate,
    tls: TlsMaterial | None = None,
    values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables a template may use (the contract in nomad_templates/README.md)."""
    env = dict(settings.env)
    env.update(launch.env)
    env, exports = exact_env(env)
    if exports:
        env[EXACT_ENV] = base64.b64encode(exports.encode()).decode()
    env[COMMAND_ENV] = base64.b64encode(launch.script.encode()).decode()
    env[NODE_NAME_ENV] = HclRaw('"${node.unique.name}"')
    tls_context = None
    if tls is not None:
        tls_context = {
            "address": tls.address,
            "source_dir": tls.source_dir,
            "task_dir": tls.task_dir,
        }
        base = tls.task_dir.rstrip("/")
        env.update(
            {
                "NOMAD_ADDR": tls.address,
                "NOMAD_CACERT": f"{base}/{tls.ca_file}",
                "NOMAD_CLIENT_CERT": f"{base}/{tls.cert_file}",
                "NOMAD_CLIENT_KEY": f"{base}/{tls.key_file}",
            }
        )
    return {
        "job_id": identity.job_id,
        **placement_context(settings),
        "meta": job_meta(identity, template, settings.meta),
        "task_name": TASK_NAME,
        "driver": settings.driver,
        "image": settings.image,
        "docker": _docker_context(settings),
        "command": "/bin/bash",
        "args": list(BOOTSTRAP_ARGS),
        "env": env,
        "cpu": settings.cpu,
        "memory": settings.memory,
        "disk": settings.disk,
        "gpu": settings.gpu,
        "gpu_vendor": settings.gpu_vendor,
        "kill_timeout": KILL_TIMEOUT,
        "tls": tls_context,
        "metaflow": {
            "flow_name": identity.flow_name,
            "run_id": identity.run_id,
            "step_name": identity.step_name,
            "task_id": identity.task_id,
            "attempt": identity.attempt,
            "user": identity.user,
        },
        "values": dict(values or {}),
        "dispatch": None,
        "template_api": TEMPLATE_API_VERSION,
    }


def placement_context(settings: StepSettings) -> dict[str, Any]:
    """Where a job may run: the same template variables for step and runner jobs."""
    return {
        "region": settings.region,
        "nomad_namespace": settings.nomad_namespace,
        "node_pool": settings.node_pool,
        "datacenters": list(settings.datacenters),
        "priority": settings.priority,
        "constraints": [dict(c) for c in settings.constraints],
    }


def _docker_context(settings: StepSettings) -> dict[str, Any] | None:
    options = settings.docker
    if options is None:
        return None
    return {
        "network_mode": options.network_mode,
        "force_pull": options.force_pull,
        "image_pull_timeout": options.image_pull_timeout,
        "runtime": options.runtime,
        "volumes": list(options.volumes),
    }


def render_jobspec(
    settings: StepSettings,
    identity: JobIdentity,
    launch: TaskLaunch,
    flow_dir: str | None = None,
    templates_dir: str | None = None,
    tls: TlsMaterial | None = None,
    values: Mapping[str, Any] | None = None,
) -> RenderedJob:
    variant = choose_variant(settings.gpu, tls is not None)
    template = load_template(settings.template, variant, flow_dir, templates_dir)
    context = build_template_context(settings, identity, launch, template, tls, values)
    return RenderedJob(
        job_id=context["job_id"],
        hcl=render_template(template, context),
        template=template,
        context=context,
    )


def parse_jobspec(rendered: RenderedJob, client) -> dict:
    """Parse through the cluster; on rejection, point at the template line."""
    try:
        job = client.parse(rendered.hcl)
    except NomadParseError as exc:
        raise NomadParseError(explain_parse_error(str(exc), rendered)) from None
    if job.get("ID") != rendered.job_id:
        raise NomadParseError(
            f"The template {rendered.template.path} produced job ID {job.get('ID')!r}, but "
            f"metaflow-nomad tracks this task as {rendered.job_id!r}. Keep `job {{{{ job_id }}}}`."
        )
    return job


_DIAG_RE = re.compile(r"input\.hcl:(\d+),(\d+)-(?:(\d+),)?(\d+): (.*)")


def explain_parse_error(message: str, rendered: RenderedJob) -> str:
    """Nomad's ``input.hcl:L,C-C: Summary; Detail`` -> template file:line + rendered lines."""
    match = _DIAG_RE.search(message)
    if not match:
        return f"{message}\n(template: {rendered.template.path})"
    line = int(match.group(1))
    origins = render_origins(rendered.template, rendered.context)
    origin = origins[line - 1] if 0 < line <= len(origins) else rendered.template.path
    lines = rendered.hcl.splitlines()
    excerpt = "\n".join(
        f"{'>' if n == line else ' '} {n:4d} | {lines[n - 1]}"
        for n in range(max(1, line - 2), min(len(lines), line + 2) + 1)
    )
    return (
        f"{origin}: this template line produced rendered line {line}, which Nomad rejected:\n"
        f"{excerpt}\n"
        f"Nomad said: {match.group(5)}"
    )


def check_offline(hcl: str) -> None:
    """Syntax-check HCL without a cluster (python-hcl2). Not a substitute for parse."""
    import hcl2

    try:
        hcl2.loads(hcl)
    except Exception as exc:  # hcl2 raises lark errors of many types
        raise NomadParseError(f"offline HCL syntax check failed: {exc}") from None
