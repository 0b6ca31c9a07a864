"""``python flow.py nomad step|list|kill``.

``nomad step`` is the trampoline: one local process per task attempt that renders
the job (through the same ``render_jobspec`` as ``metaflow-nomad render``),
submits it, follows it to the end, streams its logs, and makes sure the job
never outlives it.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import time
import traceback

from metaflow import util
from metaflow._vendor import click
from metaflow.datastore.exceptions import DataException
from metaflow.exception import METAFLOW_EXIT_DISALLOW_RETRY
from metaflow.metadata_provider.util import sync_local_metadata_from_datastore
from metaflow.metaflow_config import DATASTORE_LOCAL_DIR
from metaflow.mflog import TASK_LOG_SOURCE

from .errors import NomadClientError, NomadException, NomadJobFailed, NomadJobKilled

PREVIEW_RUN_ID = "render-preview"
PREVIEW_TASK_ID = "1"


@click.group()
def cli():
    pass


@cli.group(help="Commands related to Nomad.")
def nomad():
    pass


class JobGuard:
    """Stops the submitted job on SIGINT, SIGTERM, SIGHUP, crash or exit.

    Python skips atexit on SIGTERM, and Metaflow's runtime SIGKILLs trampolines 5 s
    after Ctrl-C, so the handlers stop the job first and exit right after.  If the
    runtime itself dies silently (kill -9, the OOM killer), Linux sends SIGTERM.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, client, echo):
        self.client = client
        self.echo = echo
        self.job_id = None
        self.namespace = None
        self.done = False

    def __enter__(self):
        for sig in self.SIGNALS:
            signal.signal(sig, self._on_signal)
        atexit.register(self.stop)
        _signal_when_parent_dies(signal.SIGTERM)
        return self

    def __exit__(self, *exc):
        self.stop()
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        atexit.unregister(self.stop)

    def _on_signal(self, signum, frame):
        self.stop(reason=f"received {signal.Signals(signum).name}")
        raise NomadJobKilled(f"The launcher received {signal.Signals(signum).name}; job stopped.")

    def stop(self, reason: str = "the launcher is exiting") -> None:
        if self.job_id is None or self.done:
            return
        self.done = True
        try:
            self.client.deregister(self.job_id, namespace=self.namespace, timeout=3)
            self.echo(f"Stopped Nomad job {self.job_id} ({reason}).")
        except NomadException as exc:
            self.echo(f"Could not stop Nomad job {self.job_id}: {exc}")


def _signal_when_parent_dies(signum: int) -> None:
    """Ask Linux for ``signum`` when the runtime that started us exits (PR_SET_PDEATHSIG).

    A runtime killed with SIGKILL runs no cleanup at all, so this is the only
    automatic way its jobs get stopped; elsewhere ``nomad kill`` is the remedy.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signum))


def step_options(command):
    """The options of Metaflow's top-level ``step``, shared by ``nomad step`` and
    ``nomad render`` so that a render can reproduce a submitted job exactly."""
    options = [
        click.option("--run-id", help="Passed to the top-level 'step'."),
        click.option("--task-id", help="Passed to the top-level 'step'."),
        click.option("--input-paths", help="Passed to the top-level 'step'."),
        click.option("--split-index", help="Passed to the top-level 'step'."),
        click.option("--clone-path", help="Passed to the top-level 'step'."),
        click.option("--clone-run-id", help="Passed to the top-level 'step'."),
        click.option("--tag", multiple=True, default=None, help="Passed to the top-level 'step'."),
        click.option("--namespace", default=None, help="Passed to the top-level 'step'."),
        click.option("--retry-count", default=0, help="Passed to the top-level 'step'."),
        click.option("--max-user-code-retries", default=0, help="Passed to the top-level 'step'."),
        click.option("--ubf-context", default=None, help="Passed to the top-level 'step'."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def task_identity(flow_name: str, step_name: str, step_kwargs: dict):
    from .jobspec import JobIdentity

    return JobIdentity(
        flow_name=flow_name,
        run_id=str(step_kwargs["run_id"]),
        step_name=step_name,
        task_id=str(step_kwargs["task_id"]),
        attempt=int(step_kwargs.get("retry_count") or 0),
        user=util.get_username(),
    )


def prepare_job(
    ctx, step_name: str, code_package: dict, step_kwargs: dict, client, values=None, settings=None
):
    """Render the step's job exactly as ``nomad step`` submits it (nothing is sent)."""
    from .client import task_tls_material
    from .config import read_config
    from .launch import find_nomad_decorator, render_step_job

    deco = find_nomad_decorator(ctx.obj.flow, step_name)
    settings = settings or deco.settings
    values = deco.project_values if values is None else values
    config = read_config()
    return settings, render_step_job(
        ctx.obj,
        ctx.parent.parent.params,
        settings,
        task_identity(ctx.obj.flow.name, step_name, step_kwargs),
        code_package,
        step_kwargs,
        config,
        tls=task_tls_material(client.settings, config.get("NOMAD_TASK_TLS_DIR"), settings.driver),
        values=values,
    )


@nomad.command(help="Execute a single task on Nomad. Used internally by Metaflow's runtime.")
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
    from .jobs import default_client, stop_previous_attempts
    from .jobspec import parse_jobspec
    from .launch import find_nomad_decorator

    identity = task_identity(ctx.obj.flow.name, step_name, kwargs)
    retry_count = identity.attempt
    job_label = f"{identity.run_id}/{step_name}/{identity.task_id}"

    def echo(msg, stream="stderr", **opts):
        ctx.obj.echo_always(f"[nomad {job_label}] {util.to_unicode(msg)}", err=True, **opts)

    def echo_log(line, stream="stderr", **opts):
        ctx.obj.echo_always(util.to_unicode(line), err=stream == "stderr", **opts)

    settings = find_nomad_decorator(ctx.obj.flow, step_name).settings
    node = ctx.obj.graph[step_name]

    client = default_client()
    if retry_count:
        try:
            stop_previous_attempts(client, identity, settings.nomad_namespace, echo)
        except NomadClientError as exc:
            echo(f"Could not check the earlier attempts' jobs: {exc}")
    retry_deco = [d for d in node.decorators if d.name == "retry"]
    if retry_count and retry_deco:
        minutes = int(retry_deco[0].attributes.get("minutes_between_retries", 2))
        if minutes:
            echo(f"Sleeping {minutes} minute(s) before attempt {retry_count}.")
            time.sleep(minutes * 60)

    datastore = ctx.obj.flow_datastore
    task_ds = datastore.get_task_datastore(
        mode="w",
        run_id=identity.run_id,
        step_name=step_name,
        task_id=identity.task_id,
        attempt=retry_count,
    )
    stdout_location = task_ds.get_log_location(TASK_LOG_SOURCE, "stdout")
    stderr_location = task_ds.get_log_location(TASK_LOG_SOURCE, "stderr")
    code_package = {
        "url": code_package_url,
        "sha": code_package_sha,
        "metadata": code_package_metadata,
    }

    def sync_metadata():
        if ctx.obj.metadata.TYPE == "local" and datastore.TYPE != "local":
            try:
                task_ds = datastore.get_task_datastore(identity.run_id, step_name, identity.task_id)
            except DataException:
                # The task never finished an attempt (it could not start, or it was
                # killed): there is no metadata to bring back, and the error would
                # hide the real one.
                return
            sync_local_metadata_from_datastore(DATASTORE_LOCAL_DIR, task_ds)

    with JobGuard(client, echo) as guard:
        try:
            if num_parallel:
                raise NomadException("@parallel is not supported with @nomad yet.")
            settings, rendered = prepare_job(ctx, step_name, code_package, kwargs, client)
            job = parse_jobspec(rendered, client)
            echo(
                f"Submitting job {rendered.job_id} ({settings.driver}, "
                f"{settings.describe_resources()}, template {rendered.template.name})."
            )
            guard.job_id = rendered.job_id
            guard.namespace = job.get("Namespace")
            client.register(job, source=rendered.hcl)
        except (NomadException, OSError):
            traceback.print_exc(chain=False)
            guard.stop(reason="submission failed")
            # Nothing ran, so there is no task metadata to sync back (and trying
            # raises a datastore error that hides the real one).
            sys.exit(METAFLOW_EXIT_DISALLOW_RETRY)
        try:
            _follow_job(
                client,
                rendered,
                settings,
                guard,
                run_time_limit,
                echo,
                echo_log,
                stdout_location,
                stderr_location,
                datastore.TYPE,
            )
        except NomadJobKilled:
            traceback.print_exc(chain=False)
            sys.exit(METAFLOW_EXIT_DISALLOW_RETRY)
        finally:
            sync_metadata()


@nomad.command(
    help="Print the jobspec a step would submit (HCL or parsed Job JSON). Submits nothing."
)
@click.argument("step-name")
@click.option("--format", "output_format", type=click.Choice(["hcl", "json"]), default="hcl")
@click.option("--offline", is_flag=True, default=False, help="No cluster: HCL syntax check only.")
@click.option("--values", "values_file", default=None, help="A metaflow_nomad.yaml-like file.")
@click.option("--code-package-url", default=None, hidden=True)
@click.option("--code-package-sha", default="preview-package", hidden=True)
@click.option("--code-package-metadata", default=None, hidden=True)
@step_options
@click.pass_context
def render(
    ctx,
    step_name,
    output_format,
    offline,
    values_file,
    code_package_url,
    code_package_sha,
    code_package_metadata,
    **kwargs,
):
    """The preview takes the same options as ``nomad step``; without them it uses
    placeholder ids and package, which is what a human usually wants to see."""
    from .decorator import resolve_for_step
    from .jobs import default_client
    from .jobspec import check_offline, parse_jobspec
    from .launch import find_nomad_decorator, load_values_file

    obj = ctx.obj
    if step_name not in obj.graph:
        raise click.UsageError(
            f"Step {step_name!r} is not in flow {obj.flow.name}: "
            + ", ".join(node.name for node in obj.graph)
        )
    deco = find_nomad_decorator(obj.flow, step_name)
    if deco is None:
        raise click.UsageError(f"Step {step_name!r} has no @nomad. Add it, or pass --with nomad.")
    values = settings = None
    if values_file:
        document = load_values_file(values_file)
        values = document.pop("values", None) or {}
        flow_dir = os.path.dirname(os.path.abspath(sys.argv[0]))
        step_decos = getattr(obj.flow, step_name).decorators
        settings = resolve_for_step(step_name, step_decos, deco, flow_dir, document)
    kwargs["run_id"] = kwargs["run_id"] or PREVIEW_RUN_ID
    kwargs["task_id"] = kwargs["task_id"] or PREVIEW_TASK_ID
    code_package = {
        "url": code_package_url
        or f"{obj.flow_datastore.datastore_root}/{obj.flow.name}/data/pr/preview-package",
        "sha": code_package_sha,
        "metadata": code_package_metadata
        or json.dumps({"version": 0, "archive_format": "tgz", "mfcontent_version": 1}),
    }
    client = default_client()
    _, rendered = prepare_job(ctx, step_name, code_package, kwargs, client, values, settings)
    if offline:
        check_offline(rendered.hcl)
        click.echo(rendered.hcl if output_format == "hcl" else _offline_json(rendered.hcl))
        click.echo(
            "# offline: HCL syntax checked with python-hcl2 only; the cluster's parser "
            "was not consulted.",
            err=True,
        )
        return
    job = parse_jobspec(rendered, client)
    click.echo(
        rendered.hcl if output_format == "hcl" else json.dumps(job, indent=2, sort_keys=True)
    )
    click.echo(
        f"# parsed by the cluster's /v1/jobs/parse; job {rendered.job_id} was NOT submitted.",
        err=True,
    )


def _offline_json(hcl: str) -> str:
    import hcl2

    return json.dumps(hcl2.loads(hcl), indent=2, sort_keys=True)


def _follow_job(
    client,
    rendered,
    settings,
    guard,
    run_time_limit,
    echo,
    echo_log,
    stdout_location,
    stderr_location,
    datastore_type,
):
    """Follow the job to its end while streaming its logs; raise if the task did not succeed.

    ``run_time_limit`` (from @timeout) is enforced inside the task; the launcher is
    only the backstop for a task that cannot stop itself, so it counts from the
    moment the task runs and allows some grace for the task's own timeout to fire.
    """
    from .jobspec import TASK_NAME
    from .logs import get_tailer, raw_log_tail, stream_logs
    from .tracking import JobTracker

    placement = f"datacenters={list(settings.datacenters)}"
    if settings.node_pool:
        placement += f", node_pool={settings.node_pool}"
    if settings.region:
        placement += f", region={settings.region}"
    tracker = JobTracker(
        client,
        rendered.job_id,
        TASK_NAME,
        echo,
        namespace=guard.namespace,
        memory_mb=settings.memory,
        placement=placement,
    ).start()
    if not tracker.wait_started(settings.pending_timeout):
        reason = tracker.state.diagnosis or "the scheduler has not placed it yet"
        guard.stop(reason="pending timeout")
        raise NomadJobFailed(
            f"The task was still pending after {settings.pending_timeout:g}s "
            f"(pending_timeout), so job {rendered.job_id} was stopped: {reason}"
        )
    _register_node_name(rendered, tracker.state.alloc)
    grace = min(60.0, 5 + run_time_limit * 0.1)
    deadline = time.monotonic() + run_time_limit + grace
    stream_logs(
        get_tailer(stdout_location, datastore_type),
        get_tailer(stderr_location, datastore_type),
        echo_log,
        tracker.state.finished,
        deadline,
    )
    if tracker.state.final_report:
        echo(tracker.state.final_report)
    if not tracker.state.finished.is_set():
        guard.stop(reason="run time limit")
        raise NomadJobFailed(
            f"The task ran past its time limit of {run_time_limit}s (@timeout) and did not "
            f"stop itself within {grace:g}s more, so the launcher stopped job {rendered.job_id}."
        )
    outcome = tracker.outcome()
    if outcome.succeeded:
        guard.done = True
        return
    guard.stop(reason=f"task {outcome.status}")
    raw = raw_log_tail(client, outcome.alloc_id, TASK_NAME) if outcome.alloc_id else ""
    if raw:
        echo(raw)
    message = (
        f"Step failed on Nomad (job {rendered.job_id}, allocation "
        f"{(outcome.alloc_id or '-')[:8]}): {outcome.message or outcome.status}."
    )
    if outcome.stopped_from_outside:
        raise NomadJobKilled(message)
    raise NomadJobFailed(message + " This could be a transient error. Use @retry to retry.")


def _register_node_name(rendered, alloc: dict | None) -> None:
    """Record the node as task metadata from here: Nomad 1.6 tells the task no node name."""
    if not alloc or not alloc.get("NodeName"):
        return
    from metaflow.metadata_provider import MetaDatum

    identity = rendered.context["metaflow"]
    click.get_current_context().obj.metadata.register_metadata(
        identity["run_id"],
        identity["step_name"],
        identity["task_id"],
        [
            MetaDatum(
                field="nomad-node-name",
                value=alloc["NodeName"],
                type="nomad-node-name",
                tags=[f"attempt_id:{identity['attempt']}"],
            )
        ],
    )


def _run_filters(obj, run_id, user, my_runs, prefix):
    """Which runs and users a list/kill applies to.

    With no option it is the latest run, as for ``batch list``; with only
    ``--prefix`` it is the current user's jobs, so that a prefix never reaches
    another user's job by accident.
    """
    if user and my_runs:
        raise click.UsageError("--user and --my-runs cannot be used together.")
    if my_runs:
        user = util.get_username()
    if not (run_id or user):
        if prefix:
            return None, util.get_username()
        run_id = util.get_latest_run_id(obj.echo, obj.flow.name)
        if run_id is None:
            raise click.UsageError("No run found: pass --run-id, --user or --my-runs.")
    return run_id, user


def _describe_job(job: dict) -> str:
    meta = job.get("Meta") or {}
    return (
        f"Run *{meta.get('metaflow.run_id')}* step *{meta.get('metaflow.step_name')}* "
        f"task {meta.get('metaflow.task_id')} attempt {meta.get('metaflow.attempt')} "
        f"user {meta.get('metaflow.user')} job *{job['ID']}* status *{job.get('Status')}*"
    )


_PREFIX_HELP = (
    "Only jobs whose ID starts with this prefix (and that belong to this flow; "
    "the current user's unless --user, --my-runs or --run-id is given)."
)


@nomad.command(name="list", help="List unfinished Nomad jobs of this flow (latest run by default).")
@click.option("--my-runs", is_flag=True, default=False, help="List all my unfinished tasks.")
@click.option("--user", default=None, help="List unfinished tasks of the given user.")
@click.option("--run-id", default=None, help="List unfinished tasks of the run id.")
@click.option("--prefix", default=None, help=_PREFIX_HELP)
@click.pass_obj
def list_jobs(obj, my_runs, user, run_id, prefix):
    from .jobs import default_client, find_jobs

    run_id, user = _run_filters(obj, run_id, user, my_runs, prefix)
    jobs = find_jobs(default_client(), obj.flow.name, run_id, user, prefix)
    for job in jobs:
        obj.echo(_describe_job(job))
    if not jobs:
        obj.echo("No unfinished Nomad jobs found.")


@nomad.command(help="Stop unfinished Nomad jobs of this flow (latest run by default).")
@click.option(
    "--job-id", "job_ids", multiple=True, help="Exact Nomad job ID of this flow; repeatable."
)
@click.option("--my-runs", is_flag=True, default=False, help="Kill all my unfinished tasks.")
@click.option("--user", default=None, help="Kill unfinished tasks of the given user.")
@click.option("--run-id", default=None, help="Kill unfinished tasks of the run id.")
@click.option("--prefix", default=None, help=_PREFIX_HELP)
@click.option("--purge", is_flag=True, default=False, help="Purge the jobs after stopping.")
@click.pass_obj
def kill(obj, job_ids, my_runs, user, run_id, prefix, purge):
    from .jobs import default_client, find_jobs, stop_jobs

    client = default_client()
    if job_ids:
        if my_runs or user or run_id or prefix:
            raise click.UsageError("--job-id cannot be combined with other filters.")
        jobs = []
        for job_id in job_ids:
            job = client.job(job_id)
            owner = ((job or {}).get("Meta") or {}).get("metaflow.flow_name")
            if job is None:
                obj.echo(f"No Nomad job with ID {job_id}.")
            elif owner != obj.flow.name:
                obj.echo(
                    f"Not stopping {job_id}: it is not a job of {obj.flow.name} "
                    f"(its metaflow.flow_name is {owner!r}). Use `nomad job stop` for it."
                )
            else:
                jobs.append(job)
    else:
        run_id, user = _run_filters(obj, run_id, user, my_runs, prefix)
        jobs = find_jobs(client, obj.flow.name, run_id, user, prefix)
    for job in jobs:
        obj.echo(_describe_job(job))
    stopped = stop_jobs(client, jobs, purge, obj.echo)
    obj.echo(f"Stopped {stopped} Nomad job(s).")
