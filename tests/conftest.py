"""Shared fixtures: a real Nomad agent for the whole session, and a flow runner."""

from __future__ import annotations

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent
from tests.support.cluster import production_cluster  # noqa: F401 - fixture
from tests.support.deploy import deploy_cluster  # noqa: F401 - fixture
from tests.support.docker import (  # noqa: F401 - fixtures
    docker_agent,
    docker_agent_without_volumes,
    docker_engine,
)
from tests.support.flows import FlowRun, agent_path_env, flow_overrides
from tests.support.flows import run_flow as run_flow_in
from tests.support.metadata_service import metadata_service, service_gates  # noqa: F401
from tests.support.s3 import credentials_in_nomad_variables, s3_server  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def nomad_agent():
    agent = LocalAgent(options=AgentOptions(env=agent_path_env()))
    agent.start()
    yield agent
    agent.stop()


@pytest.fixture()
def nomad_client(nomad_agent) -> NomadClient:
    return NomadClient(nomad_agent.connection_settings())


@pytest.fixture()
def run_flow(nomad_agent, tmp_path):
    """Run a flow from tests/flows in a fresh directory against the session agent."""

    def run(flow_file: str, *args: str, env: dict | None = None, **kwargs) -> FlowRun:
        from tests.support.flows import clean_environ

        overrides = {**flow_overrides(nomad_agent.address, tmp_path), **(env or {})}
        result = run_flow_in(flow_file, tmp_path, {**clean_environ(), **overrides}, *args, **kwargs)
        result.env = overrides
        return result

    run.workdir = tmp_path
    return run
