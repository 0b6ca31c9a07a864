"""The commands the runner job runs (hidden; ``create`` writes their command line).

``runner`` works out which run this is (from its Nomad job ID) and whether an
earlier runner of it was lost, stops what such a runner left behind, and then
replaces itself with the flow's runtime: ``start-run`` for a first attempt
(Metaflow's ``run``, with the run id fixed), Metaflow's own ``resume`` for a
later one, or for a run dispatched by ``nomad-workflows resume``.  What it was
dispatched with (parameters, the run to resume) it reads from its job's Meta.
"""

from __future__ import annotations

import os
import sys

from metaflow import parameters
from metaflow._vendor import click

from metaflow_nomad.errors import NomadException


class NotARunner(NomadException):
    headline = "Not a runner job"


@click.command(hidden=True, help="Run or resume this runner job's run (inside the runner job).")
@click.option("--max-workers", default=16, type=int)
@click.option("--tag", "tags", multiple=True)
@click.pass_obj
def runner(obj, max_workers, tags):
    from metaflow_nomad.api.lookup import stop_run_jobs
    from metaflow_nomad.deploy.attempts import plan_runner_attempt, resume_request
    from metaflow_nomad.deploy.naming import run_id_for_runner_job
    from metaflow_nomad.deploy.parameters import flow_parameter_names, run_options
    from metaflow_nomad.deploy.triggers import TRIGGERS_META
    from metaflow_nomad.model import TRIGGERS_ENV

    job_id = os.environ.get("NOMAD_JOB_ID")
    if not job_id or "/" not in job_id:
        raise NotARunner(
            "`nomad-workflows runner` runs inside a dispatched or periodic runner job. Use "
            "`nomad-workflows trigger` to start a run."
        )
    # Metaflow 2.16's graph has no end_step: its end step is always named "end".
    end_step = getattr(obj.graph, "end_step", "end")
    meta = _own_meta(job_id)
    plan = plan_runner_attempt(
        obj.flow_datastore, run_id_for_runner_job(job_id), end_step, resume_request(meta)
    )
    if plan.already_succeeded:
        obj.echo(f"Run {plan.origin_run_id} already finished; nothing to resume.")
        return
    for earlier in plan.earlier:
        # A lost runner could not stop its steps' jobs; they would race the resumed ones.
        stop_run_jobs(obj.flow.name, earlier, echo=obj.echo)
    events = meta.get(TRIGGERS_META)
    if events:
        # Every task of the run builds current.trigger from it.
        os.environ[TRIGGERS_ENV] = events
    top, group = _invocation(sys.argv)
    common = [f"--max-workers={max_workers}", *(f"--tag={tag}" for tag in tags)]
    if plan.origin_run_id is None:
        obj.echo(f"Starting run {plan.run_id} (runner job {job_id}).")
        argv = [*top, *group, "start-run", f"--run-id={plan.run_id}", *common]
        argv += run_options(flow_parameter_names(obj.flow), meta)
    else:
        obj.echo(_resume_line(plan))
        argv = [*top, "resume", f"--origin-run-id={plan.origin_run_id}", f"--run-id={plan.run_id}"]
        argv += [*common, *([plan.step_to_rerun] if plan.step_to_rerun else [])]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-u", *argv])


@click.command(
    name="announce-finish", hidden=True, help="Publish this run's finish event (inside the runner)."
)
@click.pass_obj
def announce_finish(obj):
    """Start the deployments waiting on this flow (``@trigger_on_finish``): the runner
    runs this once its run has succeeded, with its own identity."""
    from metaflow import current

    from metaflow_nomad.deploy.attempts import plan_runner_attempt
    from metaflow_nomad.deploy.naming import run_id_for_runner_job
    from metaflow_nomad.deploy.triggers import RUN, finish_event_name
    from metaflow_nomad.events import NomadEvent

    job_id = os.environ.get("NOMAD_JOB_ID") or ""
    end_step = getattr(obj.graph, "end_step", "end")
    plan = plan_runner_attempt(obj.flow_datastore, run_id_for_runner_job(job_id), end_step)
    if not plan.already_succeeded:
        raise NotARunner(f"Runner job {job_id!r} has no finished run to announce.")
    run_id = plan.origin_run_id
    [end_task] = obj.flow_datastore.get_task_datastores(run_id=run_id, steps=[end_step])
    pathspec = f"{obj.flow.name}/{run_id}/{end_step}/{end_task.task_id}"
    payload = {
        "id": pathspec,
        "pathspec": pathspec,
        "flow_name": obj.flow.name,
        "run_id": run_id,
        "step_name": end_step,
        "task_id": end_task.task_id,
        "auto-generated-by-metaflow": True,
    }
    for key in ("project_name", "branch_name", "is_user_branch", "is_production"):
        if current.get(key):
            payload[key] = current.get(key)
    name = finish_event_name(current.get("project_flow_name") or obj.flow.name)
    for delivery in NomadEvent(name, payload).safe_publish(kind=RUN):
        started = f"started run {delivery.run_id}" if delivery.run_id else "recorded the event"
        click.echo(f"{name}: {delivery.deployment} {started}.", err=True)


def _own_meta(job_id: str) -> dict[str, str]:
    """This runner job's Meta: its parent's, plus what it was dispatched with.  Only
    the Meta tells a parameter that was not dispatched (NOMAD_META_<key> is then "")."""
    from metaflow_nomad.api.client import default_client

    job = default_client().job(job_id, namespace=os.environ.get("NOMAD_NAMESPACE"))
    if job is None:
        raise NotARunner(f"The runner job {job_id} is not on Nomad any more; nothing to run.")
    return job.get("Meta") or {}


def _resume_line(plan) -> str:
    """Say in the runner's log why this run is a resume, and of what."""
    if plan.earlier:
        return (
            f"The runner of {plan.origin_run_id} was lost; resuming it as {plan.run_id}, "
            "reusing the tasks that finished."
        )
    again = f", running {plan.step_to_rerun} again" if plan.step_to_rerun else ""
    return (
        f"Resuming run {plan.origin_run_id} as {plan.run_id}, reusing the tasks that "
        f"finished{again}."
    )


def _invocation(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split this process's command line into the flow's top-level part and the
    ``nomad-workflows [--name ...]`` part (``create`` wrote both)."""
    group_at = len(argv) - 1 - argv[::-1].index("nomad-workflows")
    runner_at = argv.index("runner", group_at)
    return argv[:group_at], argv[group_at:runner_at]


@parameters.add_custom_parameters(deploy_mode=True)
@click.command(name="start-run", hidden=True, help="Metaflow's `run`, with a given run id.")
@click.option("--run-id", required=True)
@click.option("--tag", "tags", multiple=True)
@click.option("--max-workers", default=16, type=int)
@click.option("--max-num-splits", default=100, type=int)
@click.option("--max-log-size", default=10, type=int)
@click.pass_obj
def start_run(obj, run_id, tags, max_workers, max_num_splits, max_log_size, **kwargs):
    from metaflow import current
    from metaflow.cli_components.run_cmds import before_run
    from metaflow.runtime import NativeRuntime

    before_run(obj, tags, None)
    runtime = NativeRuntime(
        obj.flow,
        obj.graph,
        obj.flow_datastore,
        obj.metadata,
        obj.environment,
        obj.package,
        obj.logger,
        obj.entrypoint,
        obj.event_logger,
        obj.monitor,
        run_id=run_id,
        max_workers=max_workers,
        max_num_splits=max_num_splits,
        max_log_size=max_log_size * 1024 * 1024,
    )
    obj.flow._set_constants(obj.graph, kwargs, obj.config_options)
    current._update_env({"run_id": runtime.run_id})
    runtime.print_workflow_info()
    runtime.persist_constants()
    with runtime.run_heartbeat():
        runtime.execute()
