"""Shared fixtures: a real Nomad agent for the whole session, and a flow runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

from metaflow_nomad.client import ConnectionSettings, NomadClient
from metaflow_nomad.local_agent import AgentOptions, LocalAgent
from tests.flow_processes import clean_environ, flow_overrides, flow_source


@pytest.fixture(scope="session")
def nomad_agent():
    # raw_exec tasks inherit the agent's PATH: put this interpreter first so tasks
    # run with the same Python and packages as the launcher.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    agent = LocalAgent(options=AgentOptions(env={"PATH": path}))
    agent.start()
    yield agent
    agent.stop()


@pytest.fixture()
def nomad_client(nomad_agent) -> NomadClient:
    return NomadClient(ConnectionSettings(address=nomad_agent.address))


@dataclass
class FlowResult:
    returncode: int
    output: str
    run_id: str | None
    env: dict


@pytest.fixture()
def run_flow(nomad_agent, tmp_path):
    """Run a flow from tests/flows in a fresh directory against the session agent."""

    def run(
        flow_file: str,
        *args: str,
        env: dict | None = None,
        timeout: float = 300,
        command: str = "run",
        top_args: tuple = (),
        copy: bool = True,
    ) -> FlowResult:
        if copy:
            shutil.copy(flow_source(flow_file), tmp_path / flow_file)
        overrides = {**flow_overrides(nomad_agent.address, tmp_path), **(env or {})}
        full_env = {**clean_environ(), **overrides}
        run_id_file = tmp_path / "run_id"
        extra = ["--run-id-file", str(run_id_file)] if command == "run" else []
        proc = subprocess.run(
            [sys.executable, flow_file, "--no-pylint", *top_args, command, *extra, *args],
            cwd=tmp_path,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
        return FlowResult(proc.returncode, proc.stdout, run_id, overrides)

    run.workdir = tmp_path
    return run
