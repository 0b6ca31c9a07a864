"""``python flow.py nomad step``: the trampoline Metaflow's runtime starts per attempt.

It resolves the attempt's job through the same pipeline as ``render``, hands it
to a ``TaskLauncher`` and maps the verdict to the exit codes the runtime expects.
Everything Nomad-specific happens in the launcher; this module only wires
Metaflow's objects (datastore, metadata, graph) to it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

from metaflow import util
from metaflow._vendor import click
from metaflow.exception import METAFLOW_EXIT_DISALLOW_RETRY
from metaflow.mflog import TASK_LOG_SOURCE

from metaflow_nomad.config import STEP_JOBS_ENV
from metaflow_nomad.errors import NomadClientError, NomadException, NomadJobKilled
from metaflow_nomad.plugin.step_options import step_options


@click.command(help="Execute a single task on Nomad. Used internally by Metaflow's runtime.")
@click.argument("step-name")
@click.argument("code-package-metadata")
@click.argument("code-package-sha")
@click.argument("code-package-url")
@click.option("--run-time-limit", default=5 * 24 * 60 * 60, type=int)
@step_options
@click.option("--num-parallel", default=None, type=int, help="Not supported with @nomad.")
@click.pass_context
def step(
    ctx,
    step_name,
    code_package_metadata,
    code_package_sha,
    code_package_url,
    run_time_limit,
    num_parallel,
    **kwargs,
):
    from metaflow_nomad.api.lookup import default_client
    from metaflow_nomad.render.pipeline import StepInvocation, find_nomad_decorator, prepare_job
    from metaflow_nomad.runtime.launcher import TaskLauncher

    invocation = StepInvocation(
        obj=ctx.obj,
        top_level_params=ctx.parent.parent.params,
        step_name=step_name,
        step_options=kwargs,
        code_package={
            "url": code_package_url,
            "sha": code_package_sha,
            "metadata": code_package_metadata,
        },
    )
    identity = invocation.identity
    echo, echo_log = _echoes(ctx.obj, identity.label)
    settings = find_nomad_decorator(ctx.obj.flow, step_name).settings
    client = default_client()
    if identity.attempt:
        _prepare_retry(client, identity, settings, ctx.obj.graph[step_name], echo)
    step_jobs = os.environ.get(STEP_JOBS_ENV)
    rendered = dispatched = None
    try:
        if num_parallel:
            raise NomadException("@parallel is not supported with @nomad yet.")
        if step_jobs:
            dispatched = _dispatch_request(invocation, step_jobs)
        else:
            settings, rendered = prepare_job(invocation, client.settings)
    except (NomadException, OSError) as exc:
        _give_up(echo, exc)
    if invocation.metadata_snapshot is not None and not dispatched:
        from metaflow_nomad.render.metadata_snapshot import save_snapshot

        save_snapshot(ctx.obj.flow_datastore, invocation.metadata_snapshot)
    with TaskLauncher(client, rendered, settings, echo, echo_log) as launcher:
        try:
            if dispatched:
                parent, meta, token = dispatched
                launcher.dispatch(parent, meta, settings.nomad_namespace, token)
            else:
                launcher.submit()
        except (NomadException, OSError) as exc:
            launcher.abandon(reason="submission failed")
            # Nothing ran, so there is no task metadata to sync back.
            _give_up(echo, exc)
        try:
            launcher.follow(
                run_time_limit,
                _task_logs(ctx.obj.flow_datastore, identity),
                on_started=lambda alloc: _register_node_name(ctx.obj.metadata, identity, alloc),
            )
        except NomadJobKilled as exc:
            echo(str(exc))
            sys.exit(METAFLOW_EXIT_DISALLOW_RETRY)
        finally:
            _sync_metadata(ctx.obj, identity)


def _give_up(echo, exc: Exception) -> NoReturn:
    """A user or cluster error before the task ran: what went wrong and what to do,
    without a traceback, and an exit code that tells the runtime not to retry (the
    same settings would fail the same way)."""
    if isinstance(exc, NomadException):
        echo(f"{exc.headline}: {exc.message}")
    else:
        echo(f"{exc.__class__.__name__}: {exc}")
    sys.exit(METAFLOW_EXIT_DISALLOW_RETRY)


def _dispatch_request(invocation, step_jobs: str) -> tuple[str, dict, str]:
    """In a deployed run: the deployment's step job to dispatch, this attempt's meta,
    and the idempotency token that names the attempt."""
    from metaflow_nomad.config import read_config
    from metaflow_nomad.deploy.step_jobs import dispatch_meta
    from metaflow_nomad.model import deployed_step_job_id
    from metaflow_nomad.render.pipeline import build_step_launch

    identity = invocation.identity
    launch = build_step_launch(invocation, read_config())
    parent = deployed_step_job_id(identity.flow_name, step_jobs, identity.step_name)
    return parent, dispatch_meta(identity, launch), identity.job_id


def _echoes(obj, label: str):
    """Launcher messages carry the task's label; the task's own log lines do not."""

    def echo(msg, stream="stderr", **opts):
        obj.echo_always(f"[nomad {label}] {util.to_unicode(msg)}", err=True, **opts)

    def echo_log(line, stream="stderr", **opts):
        obj.echo_always(util.to_unicode(line), err=stream == "stderr", **opts)

    return echo, echo_log


def _prepare_retry(client, identity, settings, node, echo) -> None:
    """Stop jobs of earlier attempts whose launcher died, then honour @retry's pause."""
    from metaflow_nomad.api.lookup import stop_previous_attempts

    try:
        stop_previous_attempts(client, identity, echo)
    except NomadClientError as exc:
        echo(f"Could not check the earlier attempts' jobs: {exc}")
    retry_deco = [d for d in node.decorators if d.name == "retry"]
    if retry_deco:
        minutes = int(retry_deco[0].attributes.get("minutes_between_retries", 2))
        if minutes:
            echo(f"Sleeping {minutes} minute(s) before attempt {identity.attempt}.")
            time.sleep(minutes * 60)


def _task_logs(datastore, identity):
    from metaflow_nomad.runtime.launcher import TaskLogs

    task_ds = datastore.get_task_datastore(
        mode="w",
        run_id=identity.run_id,
        step_name=identity.step_name,
        task_id=identity.task_id,
        attempt=identity.attempt,
    )
    return TaskLogs(
        stdout_url=task_ds.get_log_location(TASK_LOG_SOURCE, "stdout"),
        stderr_url=task_ds.get_log_location(TASK_LOG_SOURCE, "stderr"),
        datastore_type=datastore.TYPE,
    )


def _register_node_name(metadata, identity, alloc: dict) -> None:
    """Record the node as task metadata from here: Nomad 1.6 tells the task no node name."""
    if not alloc.get("NodeName"):
        return
    from metaflow.metadata_provider import MetaDatum

    metadata.register_metadata(
        identity.run_id,
        identity.step_name,
        identity.task_id,
        [
            MetaDatum(
                field="nomad-node-name",
                value=alloc["NodeName"],
                type="nomad-node-name",
                tags=[f"attempt_id:{identity.attempt}"],
            )
        ],
    )


def _sync_metadata(obj, identity) -> None:
    """With local metadata and a remote datastore, bring the task's metadata home."""
    from metaflow.datastore.exceptions import DataException
    from metaflow.metadata_provider.util import sync_local_metadata_from_datastore
    from metaflow.metaflow_config import DATASTORE_LOCAL_DIR

    datastore = obj.flow_datastore
    if obj.metadata.TYPE != "local" or datastore.TYPE == "local":
        return
    try:
        task_ds = datastore.get_task_datastore(
            identity.run_id, identity.step_name, identity.task_id
        )
    except DataException:
        # The task never finished an attempt (it could not start, or it was
        # killed): there is no metadata to bring back, and the error would hide
        # the real one.
        return
    sync_local_metadata_from_datastore(DATASTORE_LOCAL_DIR, task_ds)
