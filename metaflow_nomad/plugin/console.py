"""``metaflow-nomad``: user commands that work from outside a flow file.

``metaflow-nomad render FLOW_FILE --step STEP [options]`` and ``metaflow-nomad
doctor FLOW_FILE [options]`` run the flow file's own CLI (``python FLOW_FILE
[--with ...] nomad render|doctor ...``), so that the flow, its decorators,
``--with`` specs and configuration load exactly as for a run.  Only the
flow-level options are declared here; every command option (``--format``,
``--offline``, ``--values``, ``--probe``...) is passed through and declared once,
on that command.  ``metaflow-nomad doctor`` without a flow file checks the
cluster for the defaults of ``--with nomad``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def _flow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--with",
        dest="with_specs",
        action="append",
        default=[],
        metavar="nomad:k=v,...",
        help="decorator specs, as for `python flow.py run --with`",
    )
    parser.add_argument(
        "--datastore", default=None, help="datastore the run would use (local, s3, ...)"
    )


def version_line() -> str:
    """This project's version and the Metaflow it runs with (read without importing it)."""
    from importlib.metadata import PackageNotFoundError, version

    from metaflow_nomad import __version__

    try:
        metaflow = version("metaflow")
    except PackageNotFoundError:
        metaflow = "not installed"
    return f"metaflow-nomad {__version__} (Metaflow {metaflow})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaflow-nomad",
        description="Tools for Metaflow steps on Nomad.",
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser(
        "render",
        help="print the jobspec a step would submit; submits nothing. Other options "
        "(--format hcl|json, --offline, --values FILE.yaml) are those of "
        "`python FLOW_FILE nomad render --help`",
    )
    render.add_argument("flow_file", help="the flow's Python file")
    render.add_argument("--step", required=True, help="the step to render")
    _flow_options(render)
    doctor = sub.add_parser(
        "doctor",
        help="check the cluster, the token and a flow's @nomad settings, one line each "
        "(exit 1 on any failure). Other options (--probe, --step) are those of "
        "`python FLOW_FILE nomad doctor --help`",
    )
    doctor.add_argument(
        "flow_file", nargs="?", default=None, help="the flow's Python file (optional)"
    )
    _flow_options(doctor)
    event = sub.add_parser("event", help="events that start deployed flows (@trigger)")
    event_sub = event.add_subparsers(dest="event_command", required=True)
    publish = event_sub.add_parser(
        "publish",
        help="start every deployment that waits on the event NAME, in one Nomad namespace",
    )
    publish.add_argument("name", help="the event's name")
    publish.add_argument(
        "--payload",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a payload field (repeatable); VALUE is JSON if it parses, else a string",
    )
    publish.add_argument("--namespace", default=None, help="the deployments' Nomad namespace")
    return parser


def _flow_command(args, command: list[str]) -> int:
    """Run ``python FLOW_FILE [flow options] nomad COMMAND...`` in the flow's directory."""
    argv = [sys.executable, os.path.basename(args.flow_file), "--quiet", "--no-pylint"]
    if args.datastore:
        argv += ["--datastore", args.datastore]
    for spec in args.with_specs:
        argv += ["--with", spec]
    argv += ["nomad", *command]
    return subprocess.call(argv, cwd=os.path.dirname(os.path.abspath(args.flow_file)) or ".")


def render_main(args, passed_through: list[str]) -> int:
    return _flow_command(args, ["render", args.step, *_absolute_values(passed_through)])


def doctor_main(args, passed_through: list[str]) -> int:
    if args.flow_file:
        return _flow_command(args, ["doctor", *passed_through])
    if passed_through or args.with_specs or args.datastore:
        print(
            "metaflow-nomad doctor: --probe, --step, --with and --datastore need a flow "
            "file: metaflow-nomad doctor FLOW_FILE ...",
            file=sys.stderr,
        )
        return 2
    from metaflow_nomad.plugin.doctor_command import doctor_without_flow

    return 0 if doctor_without_flow() else 1


def publish_main(args) -> int:
    """``metaflow-nomad event publish``: one line per deployment the event reached."""
    from metaflow_nomad.errors import NomadException
    from metaflow_nomad.events import NomadEvent

    try:
        payload = dict(_payload_field(field) for field in args.payload)
        deliveries = NomadEvent(args.name, payload).publish(namespace=args.namespace)
    except (NomadException, ValueError) as failure:
        print(f"metaflow-nomad event publish: {failure}", file=sys.stderr)
        return 1
    if not deliveries:
        print(f"No deployment waits on the event {args.name}.")
    for delivery in deliveries:
        if delivery.run_id:
            print(f"{delivery.deployment}: started run {delivery.run_id}")
        else:
            print(f"{delivery.deployment}: still waiting for {', '.join(delivery.missing)}")
    return 0


def _payload_field(field: str) -> tuple[str, object]:
    import json

    key, sep, value = field.partition("=")
    if not sep or not key:
        raise ValueError(f"--payload {field!r} is not KEY=VALUE.")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


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
    args, passed_through = build_parser().parse_known_args(
        argv if argv is not None else sys.argv[1:]
    )
    if args.command == "doctor":
        return doctor_main(args, passed_through)
    if args.command == "event":
        if passed_through:
            print(f"metaflow-nomad event: unknown options {passed_through}", file=sys.stderr)
            return 2
        return publish_main(args)
    return render_main(args, passed_through)
