"""``nomad-workflows list-runs|status|terminate|delete|policy``: a deployment's runs,
and the deployment itself."""

from __future__ import annotations

import datetime

from metaflow._vendor import click


def _client_and_namespace():
    from metaflow_nomad.api.client import default_client
    from metaflow_nomad.plugin.deploy.context import deployment_namespace

    return default_client(), deployment_namespace()


def _check_run_id(run_id: str) -> None:
    from metaflow_nomad.deploy.naming import RUN_ID_PREFIX, is_deployed_run_id

    if not is_deployed_run_id(run_id):
        raise click.BadParameter(
            f"{run_id!r} is not a run of a Nomad deployment; their ids start with "
            f"{RUN_ID_PREFIX!r}. `list-runs` shows them.",
            param_hint="RUN_ID",
        )


def _when(nanoseconds: int) -> str:
    stamp = datetime.datetime.fromtimestamp(nanoseconds / 1e9, tz=datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


@click.command(name="list-runs", help="List the runs of this deployment, newest first.")
@click.option("--pending", is_flag=True, help="Only runs whose runner is not running yet.")
@click.option("--running", is_flag=True, help="Only running runs.")
@click.option("--succeeded", is_flag=True, help="Only runs that succeeded.")
@click.option("--failed", is_flag=True, help="Only runs that failed.")
@click.option("--terminated", is_flag=True, help="Only runs that were terminated.")
@click.pass_obj
def list_runs(obj, **flags):
    from metaflow_nomad.deploy.deployments import describe_run, runner_children

    client, namespace = _client_and_namespace()
    wanted = {name.capitalize() for name, on in flags.items() if on}
    shown = 0
    for stub in runner_children(client, obj.deployment.name, namespace):
        run = describe_run(client, stub)
        if wanted and run.state not in wanted:
            continue
        shown += 1
        detail = f" ({run.detail})" if run.detail else ""
        resumed = f" resumed {run.attempts - 1}x" if run.attempts > 1 else ""
        cause = f" triggered by {run.triggered_by}" if run.triggered_by else ""
        obj.echo(
            f"*{run.run_id}* startedAt:'{_when(run.submitted)}' *{run.state}*{detail}{resumed} "
            f"job {run.job_id}{cause}"
        )
    if not shown:
        which = " or ".join(sorted(wanted)) + " " if wanted else ""
        obj.echo(f"No {which}runs of *{obj.deployment.name}* found on Nomad.")


@click.command(help="Print the state of a run: Pending, Running, Succeeded, Failed or Terminated.")
@click.argument("run-id")
@click.pass_obj
def status(obj, run_id):
    from metaflow_nomad.deploy.deployments import describe_run, find_run

    _check_run_id(run_id)
    client, namespace = _client_and_namespace()
    run = describe_run(client, find_run(client, obj.deployment.name, run_id, namespace))
    obj.echo(f"Run *{run.run_id}* of *{obj.deployment.name}* (runner job {run.job_id}):")
    if run.detail:
        obj.echo(run.detail, indent=True)
    if run.triggered_by:
        obj.echo(f"Triggered by {run.triggered_by}.", indent=True)
    click.echo(run.state)


@click.command(help="Stop a run: its runner and every step job it started.")
@click.argument("run-id")
@click.option("--authorize", default=None, help="The deployment's production token.")
@click.pass_obj
def terminate(obj, run_id, authorize):
    from metaflow_nomad.deploy import deployments
    from metaflow_nomad.plugin.deploy.token import check_authorized

    _check_run_id(run_id)
    client, namespace = _client_and_namespace()
    deployment = obj.deployment
    job = client.job(deployment.name, namespace=namespace)
    check_authorized(
        deployment.name, deployment.token_prefix, (job or {}).get("Meta"), authorize, "terminate"
    )
    stub = deployments.find_run(client, deployment.name, run_id, namespace)
    run = deployments.describe_run(client, stub)
    if run.state not in (deployments.PENDING, deployments.RUNNING):
        obj.echo(f"Run *{run.run_id}* is not running ({run.state}); nothing to stop.")
        return
    obj.echo(f"Terminating run *{run.run_id}* of *{deployment.name}*...", bold=True)
    stopped = deployments.terminate(client, stub, obj.flow.name, obj.echo)
    obj.echo(f"Run terminated ({stopped} step job(s) left by the runner were stopped).")


@click.command(help="Delete the deployment (its runner jobs). Runs in flight go on.")
@click.option("--authorize", default=None, help="The deployment's production token.")
@click.pass_obj
def delete(obj, authorize):
    from metaflow_nomad.deploy.deployments import delete as delete_jobs
    from metaflow_nomad.errors import NomadException
    from metaflow_nomad.plugin.deploy.token import check_authorized

    client, namespace = _client_and_namespace()
    deployment = obj.deployment
    job = client.job(deployment.name, namespace=namespace)
    check_authorized(
        deployment.name, deployment.token_prefix, (job or {}).get("Meta"), authorize, "delete"
    )
    if job is None:
        raise NomadException(
            f"{obj.flow.name} is not deployed as {deployment.name} in Nomad namespace "
            f"{namespace or 'default'}."
        )
    deleted, kept = delete_jobs(client, obj.flow.name, deployment.name, namespace)
    obj.echo(f"Deleted *{deployment.name}*: job(s) {', '.join(deleted)}.", bold=True)
    if kept:
        obj.echo(
            f"Kept step job(s) {', '.join(kept)}: runs in flight still dispatch them. "
            "Run delete again once they have finished, or terminate them."
        )
    obj.echo("Runs in flight are not affected; `terminate` stops one.")


@click.command(help="Print the ACL policy a runner needs, and how to bind it to its jobs.")
@click.pass_obj
def policy(obj):
    from metaflow_nomad.deploy.policy import bind_commands, runner_policy
    from metaflow_nomad.deploy.schedule import flow_schedule
    from metaflow_nomad.plugin.deploy.context import deployment_namespace

    namespace = deployment_namespace() or "default"
    click.echo(runner_policy(namespace), nl=False)
    scheduled = flow_schedule(obj.flow) is not None
    for command in bind_commands(obj.deployment.name, namespace, scheduled):
        click.echo(f"# {command}", err=True)
