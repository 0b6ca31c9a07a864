"""``metaflow-nomad``: user commands that work from outside a flow file.

``metaflow-nomad render FLOW_FILE --step STEP [options]`` runs the flow file's own
CLI (``python FLOW_FILE [--with ...] nomad render STEP [options]``), so that the
flow, its decorators, ``--with`` specs and configuration load exactly as for a
run.  Only the flow-level options are declared here; every ``nomad render``
option (``--format``, ``--offline``, ``--values``...) is passed through and
declared once, on that command.
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
        help="print the jobspec a step would submit; submits nothing. Other options "
        "(--format hcl|json, --offline, --values FILE.yaml) are those of "
        "`python FLOW_FILE nomad render --help`",
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
    render.add_argument(
        "--datastore", default=None, help="datastore the run would use (local, s3, ...)"
    )
    return parser


def render_main(argv: list[str]) -> int:
    args, passed_through = build_parser().parse_known_args(argv)
    command = [sys.executable, os.path.basename(args.flow_file), "--quiet", "--no-pylint"]
    if args.datastore:
        command += ["--datastore", args.datastore]
    for spec in args.with_specs:
        command += ["--with", spec]
    command += ["nomad", "render", args.step, *_absolute_values(passed_through)]
    return subprocess.call(command, cwd=os.path.dirname(os.path.abspath(args.flow_file)) or ".")


def _absolute_values(options: list[str]) -> list[str]:
    """The flow runs in its own directory: a relative ``--values`` path must still work."""
    result = list(options)
    for i, option in enumerate(result):
        if option == "--values" and i + 1 < len(result):
            result[i + 1] = os.path.abspath(result[i + 1])
        elif option.startswith("--values="):
            result[i] = "--values=" + os.path.abspath(option.split("=", 1)[1])
    return result


def main(argv: list[str] | None = None) -> int:
    return render_main(argv if argv is not None else sys.argv[1:])
