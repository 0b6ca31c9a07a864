"""``python flow.py nomad usage [RUN_ID]``: right-sizing from what a run's tasks used.

It reads the task metadata the launcher recorded, through the Metaflow client,
so it works for any run the client can see: this machine's, a deployed run's, an
old one's.  ``--html FILE`` writes the same chart the ``nomad_usage`` card shows.
"""

from __future__ import annotations

from metaflow import util
from metaflow._vendor import click


def _find_run(flow_name: str, run_id: str | None, echo):
    from metaflow import Flow, Run, namespace
    from metaflow.exception import MetaflowNotFound

    # A deployed run lives in its deployment's namespace, not the user's.
    namespace(None)
    try:
        if run_id:
            return Run(f"{flow_name}/{run_id}")
        latest = util.get_latest_run_id(echo, flow_name)
        return Run(f"{flow_name}/{latest}") if latest else Flow(flow_name).latest_run
    except MetaflowNotFound as exc:
        raise click.UsageError(f"No run found to report on: {exc}") from None


@click.command(
    help="What each step of a run asked of Nomad, what it used (peak over tasks and "
    "attempts) and a suggested request. RUN_ID defaults to the latest run."
)
@click.argument("run-id", required=False)
@click.option(
    "--html",
    "html_path",
    default=None,
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the usage chart (the nomad_usage card's page) to this file.",
)
@click.pass_obj
def usage(obj, run_id, html_path):
    from metaflow_nomad.plugin.usage_reading import read_run_usage
    from metaflow_nomad.usage_report import usage_table

    run = _find_run(obj.flow.name, run_id, obj.echo)
    if run is None:
        raise click.UsageError(f"No run of {obj.flow.name} found: pass RUN_ID.")
    report = read_run_usage(run)
    for line in usage_table(report):
        click.echo(line)
    if html_path:
        from metaflow_nomad.usage_chart import usage_page

        with open(html_path, "w", encoding="utf-8") as handle:
            handle.write(usage_page(report))
        click.echo(f"Wrote the usage chart to {html_path}.")
