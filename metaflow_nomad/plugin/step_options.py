"""The options of Metaflow's top-level ``step``, which ``nomad render`` takes so
that a render can reproduce a submitted job exactly."""

from __future__ import annotations

from metaflow._vendor import click

_PASSED = "Passed to the top-level 'step'."


def step_options(command):
    options = [
        click.option("--run-id", help=_PASSED),
        click.option("--task-id", help=_PASSED),
        click.option("--input-paths", help=_PASSED),
        click.option("--split-index", help=_PASSED),
        click.option("--clone-path", help=_PASSED),
        click.option("--clone-run-id", help=_PASSED),
        click.option("--tag", multiple=True, default=None, help=_PASSED),
        click.option("--namespace", default=None, help=_PASSED),
        click.option("--retry-count", default=0, help=_PASSED),
        click.option("--max-user-code-retries", default=0, help=_PASSED),
        click.option("--ubf-context", default=None, help=_PASSED),
        click.option(
            "--num-parallel",
            default=None,
            help="Passed to the top-level 'step': the nodes of a @parallel step's gang.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
