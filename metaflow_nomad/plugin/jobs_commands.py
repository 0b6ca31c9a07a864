"""``python flow.py nomad list|kill``: find and stop a flow's unfinished jobs."""

from __future__ import annotations

from metaflow import util
from metaflow._vendor import click

from metaflow_nomad.model import META_FLOW_NAME, JobIdentity


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


def _client():
    """The normal client, once a quick first contact showed that Nomad answers."""
    from metaflow_nomad.api.client import default_client
    from metaflow_nomad.api.connection import ConnectionSettings
    from metaflow_nomad.api.preflight import check_reachable

    check_reachable(ConnectionSettings.from_environment())
    return default_client()


def _describe_job(job: dict, ui_base: str | None = None) -> str:
    """One line per job; with ``ui_base``, its page in Nomad's UI (which lists the
    job's allocations) at the end."""
    link = ""
    if ui_base:
        from metaflow_nomad.api.ui_links import job_url

        link = " " + job_url(ui_base, job["ID"], job.get("Namespace"))
    who = JobIdentity.from_meta(job.get("Meta"))
    if who is None:
        return f"job *{job['ID']}* status *{job.get('Status')}*{link}"
    return (
        f"Run *{who.run_id}* step *{who.step_name}* task {who.task_id} attempt {who.attempt} "
        f"user {who.user} job *{job['ID']}* status *{job.get('Status')}*{link}"
    )


_PREFIX_HELP = (
    "Only jobs whose ID starts with this prefix (and that belong to this flow; "
    "the current user's unless --user, --my-runs or --run-id is given)."
)


@click.command(name="list", help="List unfinished Nomad jobs of this flow (latest run by default).")
@click.option("--my-runs", is_flag=True, default=False, help="List all my unfinished tasks.")
@click.option("--user", default=None, help="List unfinished tasks of the given user.")
@click.option("--run-id", default=None, help="List unfinished tasks of the run id.")
@click.option("--prefix", default=None, help=_PREFIX_HELP)
@click.pass_obj
def list_jobs(obj, my_runs, user, run_id, prefix):
    from metaflow_nomad.api.lookup import find_jobs
    from metaflow_nomad.api.ui_links import ui_base_url

    run_id, user = _run_filters(obj, run_id, user, my_runs, prefix)
    client = _client()
    jobs = find_jobs(client, obj.flow.name, run_id, user, prefix)
    ui_base = ui_base_url(client.settings.address)
    for job in jobs:
        obj.echo(_describe_job(job, ui_base))
    if not jobs:
        obj.echo("No unfinished Nomad jobs found.")


@click.command(help="Stop unfinished Nomad jobs of this flow (latest run by default).")
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
    from metaflow_nomad.api.lookup import find_jobs, stop_jobs

    client = _client()
    if job_ids:
        if my_runs or user or run_id or prefix:
            raise click.UsageError("--job-id cannot be combined with other filters.")
        jobs = []
        for job_id in job_ids:
            job = client.job(job_id)
            owner = ((job or {}).get("Meta") or {}).get(META_FLOW_NAME)
            if job is None:
                obj.echo(f"No Nomad job with ID {job_id}.")
            elif owner != obj.flow.name:
                obj.echo(
                    f"Not stopping {job_id}: it is not a job of {obj.flow.name} "
                    f"(its {META_FLOW_NAME} is {owner!r}). Use `nomad job stop` for it."
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
