"""The step's environment bootstrap as a Nomad task runs it: Metaflow's real
environments (``uv``, the default) and their real commands, run by real bash.  The
whole path (``uv sync`` from PyPI, raw_exec and docker) is in
tests/integration/test_uv_environment.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from metaflow.metaflow_environment import MetaflowEnvironment
from metaflow.plugins.uv.uv_environment import UVEnvironment

from metaflow_nomad.model import COMMAND_NOT_FOUND
from metaflow_nomad.render.environment_setup import (
    NODE_REQUIREMENTS,
    environment_bootstrap,
    missing_command_check,
    step_shell,
)

STEP = "echo step-ran"


class FailingEnvironment(MetaflowEnvironment):
    """An environment whose bootstrap prints a line, flushes the logs, then fails."""

    TYPE = "failing"

    def bootstrap_commands(self, step_name, datastore_type):
        return ["echo 'Bootstrapping failing env...'", "flush_mflogs", "(exit 3)"]


def _path_without(command: str) -> str:
    """This process's PATH without the directories that hold ``command``."""
    dirs = os.environ["PATH"].split(os.pathsep)
    return os.pathsep.join(d for d in dirs if d and not (Path(d) / command).exists())


def _run(program: str, tmp_path: Path, path: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": path or os.environ["PATH"], "MFLOG_STDOUT": str(tmp_path / "mflog")}
    return subprocess.run(
        ["bash", "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def test_the_default_environment_adds_nothing_before_the_step(tmp_path):
    environment = MetaflowEnvironment(None)
    assert environment_bootstrap(environment, "start", "local") == []
    ran = _run(step_shell(environment, "start", "local", STEP), tmp_path)
    assert (ran.returncode, ran.stdout) == (0, "step-ran\n")


def test_a_node_without_uv_ends_the_task_with_one_line_naming_uv(tmp_path):
    program = step_shell(UVEnvironment(None), "start", "s3", STEP)
    ran = _run(program, tmp_path, path=_path_without("uv"))
    assert ran.returncode == COMMAND_NOT_FOUND
    assert ran.stdout == ""  # neither Metaflow's bootstrap nor the step started
    [line] = ran.stderr.splitlines()
    assert line.startswith(
        "metaflow-nomad: the step runs with --environment=uv, and this node has no `uv` "
        "command on the task's PATH ("
    )
    assert "`pip install uv` into the node's Python (raw_exec, exec) or into the docker image" in (
        line
    )


def test_uv_on_the_path_passes_the_check(tmp_path):
    fake_uv = tmp_path / "bin" / "uv"
    fake_uv.parent.mkdir()
    fake_uv.write_text("#!/bin/sh\n")
    fake_uv.chmod(0o755)
    check = missing_command_check("uv", NODE_REQUIREMENTS["uv"])
    ran = _run(f"{check} && echo checked", tmp_path, path=f"{fake_uv.parent}:/usr/bin:/bin")
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "checked\n", "")


def test_a_failed_environment_bootstrap_is_named_and_the_step_does_not_run(tmp_path):
    ran = _run(step_shell(FailingEnvironment(None), "start", "s3", STEP), tmp_path)
    assert ran.returncode == 3
    # flush_mflogs exists (the capture process uploads instead) and the step never ran.
    assert ran.stdout == "Bootstrapping failing env...\n"
    assert ran.stderr == (
        "metaflow-nomad: the step's Metaflow environment (failing) could not be set up on "
        "this node: its bootstrap ended with exit status 3 before the step started; its "
        "output is above and in `python flow.py logs`.\n"
    )


def test_a_step_that_fails_after_its_environment_is_not_called_an_environment_failure(
    tmp_path,
):
    ran = _run(step_shell(UVEnvironment(None), "start", "s3", "false"), tmp_path)
    assert ran.returncode != 0
    assert "could not be set up" not in ran.stderr


@pytest.mark.parametrize("datastore", ["local", "s3"])
def test_the_uv_bootstrap_keeps_metaflows_commands_whole(datastore):
    commands = environment_bootstrap(UVEnvironment(None), "start", datastore)
    joined = " ".join(commands)
    # One quoting level less, as for every Metaflow bootstrap command (unquote_once).
    assert f"python -m metaflow.plugins.uv.bootstrap {datastore}" in joined
    assert "export PATH=$PATH:$(pwd)/uv_install" in joined
    assert joined.index("command -v uv") < joined.index("Bootstrapping uv project")
