"""Issue 22: the project installs and runs like a modern Python package.

``python -m build`` makes the sdist and the wheel from pyproject.toml; each matrix
leg installs that wheel with pip into a fresh venv of its Python, with its
Metaflow: Python 3.9 with the oldest Metaflow supported, Python 3.13 with the
newest tested.  From that install, on a real agent: ``--version``, ``render``,
the user guide's flow, a foreach with ``@retry``, and a ``nomad-workflows``
deployment created and triggered.  Each task runs with the leg's own Python
(``METAFLOW_NOMAD_PYTHON``), checked from the run's own records.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import zipfile

import pytest

from metaflow_nomad import __version__
from tests.support.deploy import (
    Cli,
    Cluster,
    allocations,
    runner_log,
    triggered_run_id,
    wait_runner_done,
)
from tests.support.flows import EXAMPLES, flow_env, flow_source
from tests.support.packaging import InstalledVenv, build_dist, fresh_venv, interpreter

pytestmark = pytest.mark.integration

# (Python, Metaflow): the oldest pair supported and the newest tested.
LEGS = [("3.9", "2.16.0"), ("3.13", "2.19.39")]
SHIPPED = [
    "nomad_templates/v1/base.nomad.hcl.j2",
    "nomad_templates/v1/runner.nomad.hcl.j2",
    "nomad_templates/v1/features/gpu.j2",
    "nomad_templates/README.md",
    "metaflow_extensions/nomad/plugins/mfextinit_nomad.py",
    "metaflow_extensions/nomad/plugins/cards/nomad_usage/__init__.py",
    "metaflow_extensions/nomad/toplevel/mfextinit_nomad.py",
    "metaflow_extensions/nomad/config/mfextinit_nomad.py",
    "metaflow_nomad/plugin/decorator.py",
]
# What an install of ours may never print (setuptools' legacy and licence warnings).
OUR_WARNINGS = re.compile(r"(?i)(legacy|deprecat|warning).*(setup\.py|metaflow.nomad|licen[cs]e)")


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return build_dist(tmp_path_factory.mktemp("dist"))


def test_the_wheel_and_the_sdist_carry_templates_extension_and_one_version(dist):
    assert dist.wheel.name == f"metaflow_nomad-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"metaflow_nomad-{__version__}.dist-info/METADATA").decode()
        entry_points = wheel.read(
            f"metaflow_nomad-{__version__}.dist-info/entry_points.txt"
        ).decode()
    assert set(SHIPPED) <= names, set(SHIPPED) - names
    assert f"Version: {__version__}" in metadata.splitlines()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "metaflow-nomad = metaflow_nomad.plugin.console:main" in entry_points
    with tarfile.open(dist.sdist) as sdist:
        root = f"metaflow_nomad-{__version__}/"
        in_sdist = {name[len(root) :] for name in sdist.getnames()}
    assert set(SHIPPED) | {"pyproject.toml", "LICENSE"} <= in_sdist


@pytest.fixture(scope="module", params=LEGS, ids=[f"py{p}-metaflow{m}" for p, m in LEGS])
def leg(request, dist, tmp_path_factory) -> InstalledVenv:
    python, metaflow = request.param
    root = tmp_path_factory.mktemp(f"venv-py{python}")
    return fresh_venv(root / "venv", interpreter(python), str(dist.wheel), f"metaflow=={metaflow}")


def _leg_env(leg: InstalledVenv, agent_address: str, workdir) -> dict:
    """A user of this venv: its Python runs the flow and every task on Nomad."""
    env = flow_env(agent_address, workdir, {"METAFLOW_NOMAD_PYTHON": leg.python})
    env["PATH"] = f"{leg.root / 'bin'}:{env['PATH']}"
    return env


def _run(leg: InstalledVenv, workdir, env, *argv: str, timeout: float = 300):
    proc = subprocess.run(
        [leg.python, *argv], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )
    print(f"$ {' '.join(argv)} (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")
    return proc


PYTHON_OF_TASK = """
import json, sys
from metaflow import Run, namespace
namespace(None)
run = Run(sys.argv[1])
tags = {t.split(":", 1)[0]: t.split(":", 1)[1] for t in run[sys.argv[2]].task.system_tags
        if ":" in t}
print(json.dumps([tags.get("python_version"), tags.get("metaflow_version")]))
"""


def _task_versions(leg, workdir, env, pathspec: str, step: str) -> list:
    proc = _run(leg, workdir, env, "-c", PYTHON_OF_TASK, pathspec, step)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_install_is_quiet_and_says_its_versions(leg, request):
    _, metaflow = request.node.callspec.params["leg"]
    assert not [line for line in leg.install_output.splitlines() if OUR_WARNINGS.search(line)]
    version = subprocess.run(
        [leg.bin("metaflow-nomad"), "--version"], capture_output=True, text=True
    )
    assert version.stdout.strip() == f"metaflow-nomad {__version__} (Metaflow {metaflow})"


def test_the_user_guide_flow_and_render_run_from_the_install(leg, nomad_agent, tmp_path, request):
    python, metaflow = request.node.callspec.params["leg"]
    shutil.copy(EXAMPLES / "nomad_flow.py", tmp_path / "nomad_flow.py")
    env = _leg_env(leg, nomad_agent.address, tmp_path)
    render = subprocess.run(
        [leg.bin("metaflow-nomad"), "render", "nomad_flow.py", "--step", "compute_on_nomad"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert render.returncode == 0, render.stderr
    assert 'driver = "raw_exec"' in render.stdout
    run = _run(leg, tmp_path, env, "nomad_flow.py", "--no-pylint", "run", "--run-id-file", "id")
    assert run.returncode == 0, run.stderr
    assert "Computation result: 332833500" in run.stdout + run.stderr
    run_id = (tmp_path / "id").read_text()
    task_python, task_metaflow = _task_versions(
        leg, tmp_path, env, f"NomadFlow/{run_id}", "compute_on_nomad"
    )
    assert task_python.startswith(f"{python}.") and task_metaflow.startswith(metaflow)


def test_a_foreach_with_retry_runs_from_the_install(leg, nomad_agent, tmp_path):
    shutil.copy(flow_source("track_retry_flow.py"), tmp_path / "track_retry_flow.py")
    env = _leg_env(leg, nomad_agent.address, tmp_path)
    width = ("--width", "3", "--flaky", "1")
    run = _run(leg, tmp_path, env, "track_retry_flow.py", "--no-pylint", "run", *width)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "transient failure of item 1" in output
    assert output.count("Task is starting (retry).") == 1
    assert "total of squares: 5" in output


def test_a_deployment_is_created_and_triggered_from_the_install(leg, nomad_agent, tmp_path):
    cluster = Cluster("plain", nomad_agent)
    shutil.copy(flow_source("deploy_flow.py"), tmp_path / "deploy_flow.py")
    env = cluster.env(tmp_path, {"METAFLOW_NOMAD_PYTHON": leg.python})
    env["PATH"] = f"{leg.root / 'bin'}:{env['PATH']}"
    workflows = ("deploy_flow.py", "--no-pylint", "nomad-workflows")
    create = _run(leg, tmp_path, env, *workflows, "create")
    assert create.returncode == 0, create.stderr
    try:
        trigger = _run(leg, tmp_path, env, *workflows, "trigger", "--alpha", "4")
        run_id = triggered_run_id(Cli(trigger.returncode, trigger.stdout, trigger.stderr))
        runner = wait_runner_done(cluster, "deployflow", run_id)
        status = _run(leg, tmp_path, env, *workflows, "status", run_id)
        logs = [runner_log(cluster, a["ID"]) for a in allocations(cluster, runner["ID"])]
        assert status.stdout.strip().splitlines()[-1] == "Succeeded", logs
    finally:
        _run(leg, tmp_path, env, *workflows, "delete")
