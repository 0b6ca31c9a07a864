"""``metaflow-nomad render``: show the exact jobspec a step would submit.

``metaflow-nomad render FLOW_FILE --step STEP`` runs the flow file's own CLI
(``python FLOW_FILE [--with ...] nomad render STEP``) so that the flow, its
decorators, ``--with`` specs and configuration are loaded exactly as for a run;
the ``nomad render`` subcommand then goes through ``launch.render_step_job``,
the same function the trampoline uses (``step_cli.prepare_job``).  Nothing is ever submitted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


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
