"""``--environment=uv`` on Nomad: a step gets the packages of its project's ``uv.lock``.

``tests/flows/uv_project`` is a user's project: ``uv_flow.py`` with a
``pyproject.toml`` and ``uv.lock`` that pin ``inflection``, which neither the
launcher's Python nor the docker image has.  Each task runs Metaflow's uv
bootstrap (``uv sync`` from PyPI) before its step; the step stores the version
it imported, read back with the Metaflow client.  A node without ``uv`` ends the
task with one line that names uv and how to provide it, not a "transient error".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from metaflow_nomad.runtime.launcher import TRANSIENT_ADVICE
from tests.integration.test_docker_tasks import docker_env, docker_s3  # noqa: F401 - fixture
from tests.support import flows

pytestmark = pytest.mark.integration

FLOW = "uv_project/uv_flow.py"
LOCKED_VERSION = "0.5.1"  # inflection, as tests/flows/uv_project/uv.lock pins it
BOOTSTRAP_LINES = ("Bootstrapping uv project...", "uv project bootstrapped.")
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TASK_CA_BUNDLE = "/etc/ssl/host-ca.crt"


def _project_venv(workdir: Path) -> None:
    """The project's ``.venv``, where ``uv run`` runs the local steps: this
    interpreter's venv, which has Metaflow and this extension, as a user's project
    environment has them (``uv add metaflow``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / ".venv").symlink_to(Path(sys.executable).parent.parent)


def _check_run(run: flows.FlowRun) -> None:
    """The run succeeded, the Nomad step imported the locked version, and ``logs``
    shows the environment's bootstrap lines before the step's own."""
    assert run.returncode == 0, run.output
    steps = flows.read_run(run, f"UvFlow/{run.run_id}")["steps"]
    assert steps["start"][0]["data"]["inflection_version"] == LOCKED_VERSION
    logs = flows.flow_cli(run, "uv_flow.py", "logs", f"{run.run_id}/start")
    assert logs.returncode == 0, logs.stdout + logs.stderr
    for line in (*BOOTSTRAP_LINES, f"inflection {LOCKED_VERSION} from uv.lock"):
        assert line in logs.stdout, logs.stdout


def test_uv_project_on_raw_exec(run_flow):
    _project_venv(run_flow.workdir)
    run = run_flow(FLOW, top_args=("--environment=uv",), timeout=180)
    _check_run(run)


def test_uv_project_in_docker_on_s3(docker_s3, tmp_path):  # noqa: F811 - fixture import
    agent, s3 = docker_s3
    env = docker_env(agent, s3, tmp_path, "docker-uv")
    _project_venv(tmp_path)
    # This machine reaches PyPI through a proxy whose CA is in the host's bundle and
    # not in the image's; uv trusts its own roots plus SSL_CERT_FILE.  A node behind
    # such a proxy gives its tasks the bundle the same way (docs/environments.md).
    (tmp_path / "metaflow_nomad.yaml").write_text(
        "defaults:\n"
        f"  volumes: ['{HOST_CA_BUNDLE}:{TASK_CA_BUNDLE}:ro']\n"
        f"  env:\n    SSL_CERT_FILE: {TASK_CA_BUNDLE}\n"
    )
    run = flows.run_flow(FLOW, tmp_path, env, top_args=("--environment=uv", "--datastore=s3"))
    _check_run(run)


def _path_without_uv(tmp_path: Path) -> str:
    """A PATH whose ``python`` is this interpreter (with Metaflow) and that has no
    ``uv``: this venv's bin holds both, so ``python`` is reached through a wrapper."""
    bin_dir = tmp_path / "bin-without-uv"
    bin_dir.mkdir()
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    rest = [
        d
        for d in os.environ["PATH"].split(os.pathsep)
        if d and not (Path(d) / "uv").exists() and d != os.path.dirname(sys.executable)
    ]
    return os.pathsep.join([str(bin_dir), *rest])


def test_a_node_without_uv_says_so_and_is_not_called_transient(run_flow, tmp_path):
    # The node's PATH, as the project file gives it to every step's task.
    (run_flow.workdir / "metaflow_nomad.yaml").write_text(
        f"defaults:\n  env:\n    PATH: {_path_without_uv(tmp_path)}\n"
    )
    run = run_flow(FLOW, top_args=("--environment=uv",), timeout=120)
    assert run.returncode != 0
    verdict = next(line for line in run.output.splitlines() if "Step failed on Nomad" in line)
    assert (
        "the task exited with code 127: the step runs with --environment=uv, and this node "
        "has no `uv` command on the task's PATH"
    ) in verdict
    assert "`pip install uv` into the node's Python (raw_exec, exec)" in verdict
    assert TRANSIENT_ADVICE.strip() not in run.output, run.output
    # Stopped before Metaflow's bootstrap, which would try to download uv from GitHub.
    assert BOOTSTRAP_LINES[0] not in run.output
