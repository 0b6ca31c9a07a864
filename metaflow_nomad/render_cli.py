"""``metaflow-nomad render``: show the exact jobspec a step would submit.

``metaflow-nomad render FLOW_FILE --step STEP`` runs the flow file's own CLI
(``python FLOW_FILE [--with ...] nomad render STEP``) so that the flow, its
decorators, ``--with`` specs and configuration are loaded exactly as for a run;
the ``nomad render`` subcommand then goes through ``launch.render_step_job``,
the same function the trampoline uses.  Nothing is ever submitted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from metaflow import util
from metaflow._vendor import click

PREVIEW_RUN_ID = "render-preview"
PREVIEW_TASK_ID = "1"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaflow-nomad",
        description="Tools for Metaflow steps on Nomad.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser(
        "render",
        help="print the jobspec a step would submit (HCL or parsed Job JSON); submits nothing",
    )
    render.add_argument("flow_file", help="the flow's Python file")
    render.add_argument("--step", required=True, help="the step to render")
    render.add_argument(
        "--with",
        dest="with_specs",
        action="append",
        default=[],
        metavar="nomad:k=v,...",
        help="decorator specs, as for `python flow.py run --with`",
    )
    render.add_argument("--format", choices=("hcl", "json"), default="hcl")
    render.add_argument(
        "--offline",
        action="store_true",
        help="no cluster: render and syntax-check the HCL with python-hcl2 only",
    )
    render.add_argument(
        "--values",
        metavar="FILE.yaml",
        help="settings/values file with the schema of metaflow_nomad.yaml; replaces it",
    )
    render.add_argument(
        "--datastore", default=None, help="datastore the run would use (local, s3, ...)"
    )
    return parser


def render_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    command = [sys.executable, os.path.basename(args.flow_file), "--quiet", "--no-pylint"]
    if args.datastore:
        command += ["--datastore", args.datastore]
    for spec in args.with_specs:
        command += ["--with", spec]
    command += ["nomad", "render", args.step, "--format", args.format]
    if args.offline:
        command.append("--offline")
    if args.values:
        command += ["--values", os.path.abspath(args.values)]
    return subprocess.call(command, cwd=os.path.dirname(os.path.abspath(args.flow_file)) or ".")


@click.command(name="render", help="Print the jobspec a step would submit. Submits nothing.")
@click.argument("step-name")
@click.option("--format", "output_format", type=click.Choice(["hcl", "json"]), default="hcl")
@click.option("--offline", is_flag=True, default=False, help="No cluster: HCL syntax check only.")
@click.option("--values", "values_file", default=None, help="A metaflow_nomad.yaml-like file.")
@click.pass_context
def render_command(ctx, step_name, output_format, offline, values_file):
    from .config import read_config
    from .decorator import resolve_for_step
    from .jobs import default_client
    from .jobspec import JobIdentity, check_offline, parse_jobspec
    from .launch import find_nomad_decorator, load_values_file, render_step_job

    obj = ctx.obj
    if step_name not in obj.graph:
        raise click.UsageError(
            f"Step {step_name!r} is not in flow {obj.flow.name}: "
            + ", ".join(node.name for node in obj.graph)
        )
    deco = find_nomad_decorator(obj.flow, step_name)
    if deco is None:
        raise click.UsageError(f"Step {step_name!r} has no @nomad. Add it, or pass --with nomad.")
    values = None
    settings = deco.settings
    if values_file:
        document = load_values_file(values_file)
        flow_dir = os.path.dirname(os.path.abspath(sys.argv[0]))
        step_decos = getattr(obj.flow, step_name).decorators
        values = document.get("values")
        document = {k: v for k, v in document.items() if k != "values"}
        settings = resolve_for_step(step_name, step_decos, deco, flow_dir, document)
    identity = JobIdentity(
        flow_name=obj.flow.name,
        run_id=PREVIEW_RUN_ID,
        step_name=step_name,
        task_id=PREVIEW_TASK_ID,
        attempt=0,
        user=util.get_username(),
    )
    root = obj.flow_datastore.datastore_root
    code_package = {
        "url": f"{root}/{obj.flow.name}/data/pr/preview-package",
        "sha": "preview-package",
        "metadata": json.dumps({"version": 0, "archive_format": "tgz", "mfcontent_version": 1}),
    }
    step_options = {
        "run_id": PREVIEW_RUN_ID,
        "task_id": PREVIEW_TASK_ID,
        "retry_count": 0,
        "max_user_code_retries": 0,
    }
    config = read_config()
    rendered = render_step_job(
        obj,
        ctx.parent.parent.params,
        settings,
        identity,
        code_package,
        step_options,
        config,
        values=values,
    )
    if offline:
        check_offline(rendered.hcl)
        click.echo(rendered.hcl if output_format == "hcl" else _offline_json(rendered.hcl))
        click.echo(
            "# offline: HCL syntax checked with python-hcl2 only; the cluster's parser "
            "was not consulted.",
            err=True,
        )
        return
    job = parse_jobspec(rendered, default_client())
    if output_format == "hcl":
        click.echo(rendered.hcl)
    else:
        click.echo(json.dumps(job, indent=2, sort_keys=True))
    click.echo(
        f"# parsed by the cluster's /v1/jobs/parse; job {rendered.job_id} was NOT submitted.",
        err=True,
    )


def _offline_json(hcl: str) -> str:
    import hcl2

    return json.dumps(hcl2.loads(hcl), indent=2, sort_keys=True)
