"""The step's Metaflow environment (``--environment=uv``, ``@pypi``) as a Nomad task sets it up.

Metaflow's environments give a remote task shell commands that make the step's
Python before the step runs (``bootstrap_commands``).  They are written for the
shell ``@kubernetes`` builds, which defines ``flush_mflogs`` (upload the logs so
far): a Nomad task's capture process uploads the step's output as it comes, so
here that function only has to exist (``FLUSH_MFLOGS``).

Two things are added so that a task that cannot make its environment says so
instead of failing with an exit code: what the environment needs on the node is
checked first (``uv`` for ``--environment=uv``: without it Metaflow would try to
download it from GitHub), and a bootstrap that fails ends the task with one line
that says it was the environment, not the step.  Both lines start with
``MARKER``, which the launcher puts in its verdict.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from metaflow.mflog import BASH_MFLOG

from metaflow_nomad.model import COMMAND_NOT_FOUND
from metaflow_nomad.render.code_package import MARKER, unquote_once

if TYPE_CHECKING:
    from metaflow.metaflow_environment import MetaflowEnvironment

# Metaflow's bootstrap commands call it to upload the logs so far; the capture
# process (task/log_capture.py) already uploads every line as it comes.
FLUSH_MFLOGS = "flush_mflogs(){ :; }"


@dataclass(frozen=True)
class NodeRequirement:
    """A command an environment's bootstrap runs from the node, and how to provide it."""

    command: str
    how_to_provide: str


NODE_REQUIREMENTS = {
    "uv": NodeRequirement(
        "uv",
        "Install uv where the task finds it: `pip install uv` into the node's Python "
        "(raw_exec, exec) or into the docker image, or give the task a PATH that has it "
        "(the step's `env` setting or @environment). See docs/environments.md.",
    ),
}


def step_shell(
    environment: MetaflowEnvironment, step_name: str, datastore_type: str, step_cli: str
) -> str:
    """The bash program the task's capture process runs: mflog's shell functions,
    the step's environment (``environment`` is Metaflow's), then the step.

    Only Metaflow's bootstrap commands carry the extra quoting level; ``step_cli`` is
    already quoted for bash and reaches it untouched.
    """
    bootstrap = environment_bootstrap(environment, step_name, datastore_type)
    return f"{unquote_once(BASH_MFLOG)}; {FLUSH_MFLOGS}; " + " && ".join([*bootstrap, step_cli])


def environment_bootstrap(
    environment: MetaflowEnvironment, step_name: str, datastore_type: str
) -> list[str]:
    """The commands that set up the step's environment in the task's shell, before
    the step: the node check, then Metaflow's own commands, whose failure is named.

    Empty for an environment that needs no setup (Metaflow's default ``local``).
    """
    commands = [
        unquote_once(cmd) for cmd in environment.bootstrap_commands(step_name, datastore_type)
    ]
    if not commands:
        return []
    kind = getattr(environment, "TYPE", type(environment).__name__)
    requirement = NODE_REQUIREMENTS.get(kind)
    checks = [missing_command_check(kind, requirement)] if requirement else []
    failed = shlex.quote(
        f"{MARKER}the step's Metaflow environment ({kind}) could not be set up on this "
        "node: its bootstrap ended with exit status "
    )
    explained = shlex.quote(
        " before the step started; its output is above and in `python flow.py logs`."
    )
    setup = " && ".join(commands)
    return [*checks, f'{{ {setup}; }} || {{ c=$?; echo {failed}"$c"{explained} >&2; exit $c; }}']


def missing_command_check(kind: str, requirement: NodeRequirement) -> str:
    """A command that ends the task with ``COMMAND_NOT_FOUND`` and one line naming the
    missing command and how to provide it, unless the task's PATH has it."""
    message = shlex.quote(
        f"{MARKER}the step runs with --environment={kind}, and this node has no "
        f"`{requirement.command}` command on the task's PATH ("
    )
    advice = shlex.quote(f"). {requirement.how_to_provide}")
    return (
        f"{{ command -v {shlex.quote(requirement.command)} >/dev/null 2>&1 || "
        f'{{ echo {message}"$PATH"{advice} >&2; exit {COMMAND_NOT_FOUND}; }}; }}'
    )
