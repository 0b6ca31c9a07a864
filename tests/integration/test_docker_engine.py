"""The private Docker engine runs the offline Python 3.11 + Metaflow image and
stops without leaving a daemon or a mount behind."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest

from metaflow_nomad.testing.cleanup import mounts_under
from metaflow_nomad.testing.docker_engine import DockerEngine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine():
    engine = DockerEngine().start()
    try:
        yield engine
    finally:
        engine.stop()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_image_runs_the_hosts_metaflow(engine):
    engine.ensure_image()
    result = engine.docker(
        "run",
        "--rm",
        "--network",
        "host",
        "python:3.11",
        "python",
        "-c",
        "import metaflow, boto3; print(metaflow.__version__)",
    )
    assert result.stdout.strip().splitlines()[-1] == importlib.metadata.version("metaflow")
    assert engine.running_containers() == []


def test_ensure_image_is_idempotent(engine):
    first = engine.ensure_image()
    assert engine.ensure_image() == first
    for tag in ("python:3.11", "metaflow-nomad-python:3.11"):
        assert engine.docker("image", "inspect", "-f", "{{.Id}}", tag).stdout.strip() == first


def test_plugin_config_names_the_socket(engine):
    config = engine.nomad_plugin_config()
    assert f'endpoint = "{engine.endpoint}"' in config
    assert "image = false" in config


def test_stop_leaves_nothing(engine):
    root = str(engine.dir) + "/"
    pid = engine.pid
    assert pid is not None and _pid_alive(pid)
    engine.stop()
    engine.stop()  # idempotent
    assert not _pid_alive(pid)
    assert mounts_under(root) == []
    assert not Path(root).exists()
