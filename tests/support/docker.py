"""A Nomad agent whose node runs real docker tasks on a private engine.

The engine and its image (``python:3.11``, built offline by scripts/get_docker.sh)
are shared by the whole session; tasks use host networking to reach the agent and
the S3 server on loopback.  Checks go through the engine itself (``docker``), not
through anything we render.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from metaflow_nomad.testing.docker_engine import DockerEngine
from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent
from tests.support.flows import agent_path_env


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    engine = DockerEngine().start()
    try:
        engine.ensure_image()
        yield engine
    finally:
        engine.stop()


def _docker_agent(engine: DockerEngine, volumes: bool) -> Iterator[LocalAgent]:
    plugin = engine.nomad_plugin_config(volumes=volumes)
    agent = LocalAgent(options=AgentOptions(env=agent_path_env(), docker_plugin=plugin))
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def docker_agent(docker_engine) -> Iterator[LocalAgent]:
    yield from _docker_agent(docker_engine, volumes=True)


@pytest.fixture(scope="module")
def docker_agent_without_volumes(docker_engine) -> Iterator[LocalAgent]:
    """A docker node as Nomad configures one by default: bind mounts refused."""
    yield from _docker_agent(docker_engine, volumes=False)


def containers_of(engine: DockerEngine, alloc_id: str, since: float) -> list[dict]:
    """What the engine recorded of an allocation's containers since ``since``
    (Nomad labels each container with its allocation ID): image and lifecycle actions."""
    result = engine.docker(
        "events",
        "--since",
        f"{since:.0f}",
        "--until",
        "0s",
        "--filter",
        "type=container",
        "--filter",
        f"label=com.hashicorp.nomad.alloc_id={alloc_id}",
        "--format",
        "{{json .}}",
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
