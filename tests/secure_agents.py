"""Run flows against agents the test module starts itself (secure or fault-injected).

Like conftest's ``run_flow``, but for any agent and with the flow started in the
background, so that a test can inject a fault while the step runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from metaflow_nomad.local_agent import LocalAgent
from tests.flow_processes import flow_env, flow_source


@dataclass
class FlowProcess:
    proc: subprocess.Popen
    workdir: Path
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"flow still running after {timeout}s:\n{self.output()}") from None

    @property
    def run_id(self) -> str | None:
        path = self.workdir / "run_id"
        return path.read_text().strip() if path.exists() else None


def start_flow(
    agent: LocalAgent,
    workdir: Path,
    flow_file: str,
    *args: str,
    env: dict[str, str] | None = None,
    token: str | None = None,
) -> FlowProcess:
    """``python flow.py run`` against ``agent``, with its address, token and TLS material."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(flow_source(flow_file), workdir / flow_file)
    full_env = flow_env(None, workdir, {**agent.connection_env(token), **(env or {})})
    log_path = workdir / "flow.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, flow_file, "--no-pylint", "run", "--run-id-file", "run_id", *args],
            cwd=workdir,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return FlowProcess(proc, workdir, log_path)


def run_flow_on(agent: LocalAgent, workdir: Path, flow_file: str, *args: str, **kw) -> FlowProcess:
    """Run to the end (bounded) and return the finished process."""
    timeout = kw.pop("timeout", 300)
    flow = start_flow(agent, workdir, flow_file, *args, **kw)
    flow.wait(timeout)
    return flow


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def agent_path_env() -> dict[str, str]:
    """raw_exec tasks inherit the agent's PATH: this interpreter first, like conftest."""
    return {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
