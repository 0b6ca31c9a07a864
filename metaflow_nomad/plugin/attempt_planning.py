"""Plan a task attempt in Metaflow's runtime process, then start its light launcher.

Metaflow's runtime starts every task as a second copy of the flow's CLI; for a
``@nomad`` step that process would import Metaflow and parse the flow again only
to render a job, which the runtime, already holding both, does in a millisecond.
So ``runtime_step_cli`` renders the job here, has the cluster parse it, decides
where the logs land, and hands the resulting ``AttemptPlan`` to
``python -m metaflow_nomad.runtime.attempt``, which never imports Metaflow.
``render`` goes through the same ``prepare_job`` with the same kind of
``CLIArgs``, so it still prints exactly what is submitted.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import os
import shutil
import sys
import tempfile

from metaflow_nomad.config import STEP_JOBS_ENV, profile_exports
from metaflow_nomad.errors import NomadException, one_line_error
from metaflow_nomad.runtime.plan import LAUNCHER_MODULE, AttemptPlan, Dispatch, write_plan
from metaflow_nomad.runtime.task_metadata import SERVICE_HEADERS_ENV


def plan_attempt(deco, cli_args) -> AttemptPlan:
    """The attempt that ``cli_args`` (the runtime's local ``step`` command) describes.

    A user or cluster error (a template the cluster rejects, an unreadable
    file) becomes the plan's ``error``: the launcher reports it for this task
    and nothing is submitted.
    """
    from metaflow_nomad.render.pipeline import FlowObjects, StepInvocation

    objects = FlowObjects(
        flow=deco.flow,
        graph=deco.graph,
        environment=deco.environment,
        flow_datastore=deco.flow_datastore,
        metadata_type=cli_args.top_level_options["metadata"],
    )
    code_package = {
        "url": deco.package_url,
        "sha": deco.package_sha,
        "metadata": deco.package_metadata,
    }
    lease = type(deco).run_lease
    run_env = lease.task_env() if lease is not None else {}
    invocation = StepInvocation.from_cli_args(cli_args, objects, code_package, run_env)
    identity = invocation.identity
    settings = deco.settings
    datastore = objects.flow_datastore
    plan = AttemptPlan(
        identity=identity,
        namespace=settings.nomad_namespace,
        description=f"{settings.driver}, {settings.describe_resources()}",
        pending_timeout=settings.pending_timeout,
        memory_mb=settings.memory,
        placement=settings.describe_placement(),
        run_time_limit=deco.run_time_limit,
        logs=invocation.logs,
        minutes_between_retries=_minutes_between_retries(objects.graph[identity.step_name]),
        metadata_sync_root=(
            datastore.datastore_root
            if objects.metadata_type == "local" and datastore.TYPE != "local"
            else None
        ),
        metadata_type=objects.metadata_type,
        local_metadata_dir=_local_metadata_dir(objects.metadata_type, identity),
        metadata_service_url=_service_url() if objects.metadata_type == "service" else None,
        ui_url=_ui_url(),
        sample_usage=True,
        cpu_cores=_cpu_cores(settings.cpu),
        num_nodes=invocation.gang.num_nodes if invocation.gang is not None else 1,
    )
    try:
        step_jobs = os.environ.get(STEP_JOBS_ENV)
        if step_jobs and invocation.gang is not None:
            raise NomadException(
                f"Step '{identity.step_name}': a @parallel step cannot run in a deployed "
                "flow yet (its step job runs one task). Run the flow with `run`."
            )
        if step_jobs:
            return dataclasses.replace(plan, dispatch=_dispatch(invocation, step_jobs))
        return _with_job(plan, invocation, settings)
    except (NomadException, OSError) as exc:
        return dataclasses.replace(plan, error=one_line_error(exc))


def _local_metadata_dir(metadata_type: str, identity) -> str | None:
    """With local metadata: the task's ``_meta`` directory, where the launcher
    writes its records (``runtime.task_metadata``) as Metaflow's provider would."""
    from metaflow.plugins.datastores.local_storage import LocalStorage

    from metaflow_nomad.render.metadata_snapshot import META_DIR, local_metadata_root

    if metadata_type != "local":
        return None
    # As Metaflow's provider finds it: the run's --datastore-root, else configuration.
    root = LocalStorage.datastore_root or local_metadata_root()
    if root is None:
        return None
    task = (identity.flow_name, identity.run_id, identity.step_name, str(identity.task_id))
    return os.path.join(root, *task, META_DIR)


@functools.lru_cache(maxsize=1)
def _service_url() -> str | None:
    """The metadata service this runtime records to (Metaflow's SERVICE_URL), read once."""
    from metaflow.metaflow_config import SERVICE_URL

    return SERVICE_URL


@functools.lru_cache(maxsize=1)
def _service_headers() -> str:
    """Metaflow's SERVICE_HEADERS (with the API key it adds), as JSON, read once."""
    import json

    from metaflow.metaflow_config import SERVICE_HEADERS

    return json.dumps(dict(SERVICE_HEADERS))


@functools.lru_cache(maxsize=1)
def _ui_url() -> str:
    """The UI's base for this runtime's cluster, found once for every attempt."""
    from metaflow_nomad.api.ui_links import ui_base_url

    return ui_base_url(_runtime_client().settings.address)


def _cpu_cores(cpu_mhz: int | None) -> float | None:
    """The request in cores, as Nomad's usage Percent counts them (MHz per vCPU)."""
    from metaflow_nomad.settings import DEFAULT_MHZ_PER_VCPU

    try:
        mhz_per_vcpu = float(_run_config().get("NOMAD_MHZ_PER_VCPU", DEFAULT_MHZ_PER_VCPU))
    except ValueError:
        return None
    return cpu_mhz / mhz_per_vcpu if cpu_mhz and mhz_per_vcpu > 0 else None


def hand_to_launcher(cli_args, plan: AttemptPlan) -> None:
    """Make the runtime start the light launcher on ``plan`` instead of the flow's CLI."""
    path = os.path.join(_plan_directory(), f"{plan.job_id}.json")
    write_plan(plan, path)
    cli_args.env.update(_launcher_environment())
    if plan.metadata_service_url:
        cli_args.env[SERVICE_HEADERS_ENV] = _service_headers()
    cli_args.entrypoint = [sys.executable, "-m", LAUNCHER_MODULE]
    cli_args.top_level_options = {}
    cli_args.commands = []
    cli_args.command_args = [path]
    cli_args.command_options = {}


def _with_job(plan: AttemptPlan, invocation, settings) -> AttemptPlan:
    """Render the attempt's job and have the cluster parse it; store the flow's
    metadata snapshot the task restores, if it needs one."""
    from metaflow_nomad.render.jobspec import parse_jobspec
    from metaflow_nomad.render.metadata_snapshot import save_snapshot
    from metaflow_nomad.render.pipeline import prepare_job

    client = _runtime_client()
    rendered = prepare_job(invocation, settings, _run_render_inputs(), _run_config())
    job = parse_jobspec(rendered, client)
    if invocation.metadata_snapshot is not None:
        save_snapshot(invocation.objects.flow_datastore, invocation.metadata_snapshot)
    return dataclasses.replace(
        plan,
        job=job,
        hcl=rendered.hcl,
        template_name=rendered.template.name,
        namespace=job.get("Namespace"),
    )


def _dispatch(invocation, step_jobs: str) -> Dispatch:
    """In a deployed run: the deployment's step job, this attempt's meta, and the
    idempotency token that names the attempt."""
    from metaflow_nomad.deploy.step_jobs import dispatch_meta
    from metaflow_nomad.model import deployed_step_job_id
    from metaflow_nomad.render.pipeline import build_step_launch

    identity = invocation.identity
    launch = build_step_launch(invocation, _run_config())
    return Dispatch(
        parent_job_id=deployed_step_job_id(identity.flow_name, step_jobs, identity.step_name),
        meta=dispatch_meta(identity, launch),
        token=identity.job_id,
    )


def _minutes_between_retries(node) -> int:
    retry = next((d for d in node.decorators if d.name == "retry"), None)
    return int(retry.attributes.get("minutes_between_retries", 2)) if retry else 0


@functools.lru_cache(maxsize=1)
def _run_config() -> dict[str, str]:
    """The launcher's settings (environment and Metaflow profile), read once per runtime."""
    from metaflow_nomad.config import read_config

    return read_config()


@functools.lru_cache(maxsize=1)
def _runtime_client():
    """One client (and one connection pool) for every attempt this runtime plans."""
    from metaflow_nomad.api.client import default_client

    return default_client()


@functools.lru_cache(maxsize=1)
def _run_render_inputs():
    """The run's render inputs, collected once for every attempt this runtime plans."""
    from metaflow_nomad.plugin.render_inputs import render_inputs

    return render_inputs(_runtime_client().settings)


@functools.lru_cache(maxsize=1)
def _launcher_environment() -> dict[str, str]:
    """The Metaflow profile's values, read once per runtime, for every launcher."""
    return profile_exports()


@functools.lru_cache(maxsize=1)
def _plan_directory() -> str:
    """A private directory for this runtime's plan files; each launcher removes its
    own, and whatever is left (a launcher that never started) goes at exit."""
    path = tempfile.mkdtemp(prefix="metaflow-nomad-plans-")
    atexit.register(shutil.rmtree, path, True)
    return path
