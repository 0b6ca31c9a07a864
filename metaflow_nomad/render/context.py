"""The template context: the typed contract between metaflow-nomad and a template.

``TemplateContext`` lists every variable a template may use, with its meaning;
``nomad_templates/README.md`` documents the same table and a test holds the two
together.  One constructor, ``template_context``, builds it for every kind of job
(a run's step, a deployed step, ``doctor``'s probe and plan, a deployment's
runner) from a ``JobRequest`` and the run's ``RenderInputs``; the dict a
template sees is made at the template boundary (``as_template_vars``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Union

from metaflow_nomad.model import (
    META_TEMPLATE,
    META_TEMPLATE_SHA256,
    META_TEMPLATE_VERSION,
    NODE_NAME_ENV,
    TASK_NAME,
    TaskLaunch,
    TlsMaterial,
)
from metaflow_nomad.render.exact_env import exact_env
from metaflow_nomad.render.hcl import HclRaw
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.parallel import ParallelGang
from metaflow_nomad.render.templates import TEMPLATE_API_VERSION, Features, LoadedTemplate
from metaflow_nomad.settings import StepSettings

COMMAND_ENV = "METAFLOW_NOMAD_COMMAND_B64"
EXACT_ENV = "METAFLOW_NOMAD_EXACT_ENV_B64"
# Nomad interpolates ${...} in args and env at runtime, with no escape.  The step's
# script is therefore shipped base64-encoded (an alphabet without '$' or '{') and
# decoded by a fixed bootstrap that only uses bare $VAR references.  Env values
# Nomad or HCL would change travel the same way, as exports run first.  The
# registry credentials (feature registry_auth) are for Nomad's pull, not the step.
REGISTRY_AUTH_ENV = ("METAFLOW_NOMAD_REGISTRY_USERNAME", "METAFLOW_NOMAD_REGISTRY_PASSWORD")
BOOTSTRAP_ARGS = (
    "-c",
    f"unset {' '.join(REGISTRY_AUTH_ENV)}; "
    f'eval "$(printf %s "${EXACT_ENV}" | base64 -d)"; '
    f'eval "$(printf %s "${COMMAND_ENV}" | base64 -d)"',
)
KILL_TIMEOUT = "30s"


@dataclass(frozen=True)
class TaskIds:
    """The ``metaflow`` variable: whose task the job runs.

    ``attempt`` is an int in a run's job; in a deployed step job the ids other than
    the flow and step are strings Nomad fills in from the dispatch meta at start.
    """

    flow_name: str
    run_id: str
    step_name: str
    task_id: str
    attempt: Union[int, str]  # noqa: UP007 - read by get_type_hints on Python 3.9
    user: str


@dataclass(frozen=True)
class Dispatch:
    """The ``parameterized`` block of a deployed flow's step job."""

    meta_required: tuple[str, ...]
    meta_optional: tuple[str, ...]


@dataclass(frozen=True)
class RunnerTrigger:
    """What starts a runner job: a dispatch (with parameters) or a cron schedule."""

    kind: str
    meta_optional: tuple[str, ...] = ()
    cron: str | None = None
    time_zone: str | None = None


@dataclass(frozen=True)
class JobRequest:
    """One job to render, besides the run-wide ``RenderInputs``.

    ``meta`` holds the job's own Meta keys (a task's ids, a deployment's keys);
    the ``meta`` setting goes under them and the template's identity over them.
    ``script_ref``, when set, is the Nomad runtime reference that delivers the
    encoded script at start (a deployed step's dispatch meta) instead of
    ``launch.script``.  ``uses_tls`` is False for a job that must never carry TLS
    material (a runner reaches Nomad through its Task API socket).  ``parallel``
    is set for an attempt of a ``@parallel`` step: its gang of nodes.
    """

    job_id: str
    settings: StepSettings
    launch: TaskLaunch
    meta: Mapping[str, str]
    ids: TaskIds | None = None
    script_ref: str | None = None
    dispatch: Dispatch | None = None
    trigger: RunnerTrigger | None = None
    deployment: Mapping[str, Any] | None = None
    task_name: str = TASK_NAME
    kill_timeout: str = KILL_TIMEOUT
    uses_tls: bool = True
    parallel: ParallelGang | None = None

    def tls(self, inputs: RenderInputs) -> TlsMaterial | None:
        return inputs.tls_for(self.settings.driver) if self.uses_tls else None

    def features(self, inputs: RenderInputs) -> Features:
        """The template's optional parts this job needs."""
        return Features(
            gpu=self.settings.gpu > 0,
            mtls=self.tls(inputs) is not None,
            service_auth=inputs.service_auth_variable is not None,
            registry_auth=self.settings.docker is not None
            and self.settings.docker.registry_auth is not None,
            task_api=self.settings.task_api,
            parallel=self.parallel is not None,
        )


@dataclass(frozen=True)
class TemplateContext:
    """Every variable a template may use, and nothing else.

    nomad_templates/README.md's table describes each field; a test holds the
    table and these fields together.  Nested values are plain data (dicts and
    lists) so that a template reads them as ``docker.volumes`` or ``meta``.
    """

    job_id: str
    region: str | None
    nomad_namespace: str | None
    node_pool: str | None
    datacenters: list
    priority: int | None
    constraints: list
    meta: dict
    task_name: str
    driver: str
    image: str | None
    docker: dict | None
    command: str
    args: list
    env: dict
    cpu: int
    memory: int
    disk: int
    gpu: int
    gpu_vendor: str
    kill_timeout: str
    features: dict
    tls: dict | None
    service_auth: dict | None
    metaflow: dict | None
    values: dict
    dispatch: dict | None
    trigger: dict | None
    deployment: dict | None
    parallel: dict | None
    template_api: str

    def as_template_vars(self) -> dict[str, Any]:
        """The dict a template renders with (nested values stay plain data)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def template_context(
    request: JobRequest, template: LoadedTemplate, inputs: RenderInputs
) -> TemplateContext:
    """The one constructor of a template's variables, for every kind of job."""
    settings = request.settings
    tls = request.tls(inputs)
    return TemplateContext(
        job_id=request.job_id,
        region=settings.region,
        nomad_namespace=settings.nomad_namespace,
        node_pool=settings.node_pool,
        datacenters=list(settings.datacenters),
        priority=settings.priority,
        constraints=[dict(c) for c in settings.constraints],
        meta=job_meta(settings.meta, request.meta, template),
        task_name=request.task_name,
        driver=settings.driver,
        image=settings.image,
        docker=_docker(settings),
        command="/bin/bash",
        args=list(BOOTSTRAP_ARGS),
        env=task_env(request, tls),
        cpu=settings.cpu,
        memory=settings.memory,
        disk=settings.disk,
        gpu=settings.gpu,
        gpu_vendor=settings.gpu_vendor,
        kill_timeout=request.kill_timeout,
        features=request.features(inputs).as_dict(),
        tls=None if tls is None else _plain(tls, ("address", "source_dir", "task_dir")),
        service_auth=_service_auth(inputs),
        metaflow=None if request.ids is None else _plain(request.ids),
        values=dict(inputs.values),
        dispatch=None if request.dispatch is None else _plain(request.dispatch),
        trigger=None if request.trigger is None else _plain(request.trigger),
        deployment=None if request.deployment is None else dict(request.deployment),
        parallel=None if request.parallel is None else request.parallel.as_template_vars(),
        template_api=TEMPLATE_API_VERSION,
    )


def job_meta(
    setting_meta: Mapping[str, str], own: Mapping[str, str], template: LoadedTemplate
) -> dict[str, str]:
    """The job's Meta: the ``meta`` setting, then the job's own keys and the
    template's identity (ours win)."""
    meta = dict(setting_meta)
    meta.update(own)
    meta.update(
        {
            META_TEMPLATE: template.name,
            META_TEMPLATE_VERSION: template.api_version,
            META_TEMPLATE_SHA256: template.sha256,
        }
    )
    return meta


def task_env(request: JobRequest, tls: TlsMaterial | None) -> dict[str, Any]:
    """The task's environment: the ``env`` setting, then the launch's; values Nomad
    would change exported exactly; the encoded script; the TLS variables."""
    env = dict(request.settings.env)
    env.update(request.launch.env)
    env, exports = exact_env(env)
    if exports:
        env[EXACT_ENV] = base64.b64encode(exports.encode()).decode()
    env[COMMAND_ENV] = (
        request.script_ref or base64.b64encode(request.launch.script.encode()).decode()
    )
    env[NODE_NAME_ENV] = HclRaw('"${node.unique.name}"')
    if tls is not None:
        base = tls.task_dir.rstrip("/")
        env.update(
            {
                "NOMAD_ADDR": tls.address,
                "NOMAD_CACERT": f"{base}/{tls.ca_file}",
                "NOMAD_CLIENT_CERT": f"{base}/{tls.cert_file}",
                "NOMAD_CLIENT_KEY": f"{base}/{tls.key_file}",
            }
        )
    return env


def _service_auth(inputs: RenderInputs) -> dict[str, str] | None:
    """Where the jobs read the metadata service's headers (feature ``service_auth``)."""
    path = inputs.service_auth_variable
    return None if path is None else {"variable": path}


def _docker(settings: StepSettings) -> dict[str, Any] | None:
    options = settings.docker
    if options is None:
        return None
    return {
        "network_mode": options.network_mode,
        "force_pull": options.force_pull,
        "image_pull_timeout": options.image_pull_timeout,
        "runtime": options.runtime,
        "volumes": list(options.volumes),
        "registry_auth": None
        if options.registry_auth is None
        else {"variable": options.registry_auth},
    }


def _plain(value: Any, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A frozen record as the template's plain dict (tuples as lists)."""
    names = names or tuple(f.name for f in fields(value))
    return {
        name: list(item) if isinstance(item, tuple) else item
        for name in names
        for item in (getattr(value, name),)
    }
