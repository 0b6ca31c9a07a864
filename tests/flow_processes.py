"""Flows started in the background, so that tests can interrupt them like a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from metaflow_nomad.client import NomadClient
from metaflow_nomad.jobs import find_jobs

FLOWS = Path(__file__).resolve().parent / "flows"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def flow_source(flow_file: str) -> Path:
    """A test flow from tests/flows, or one of the examples (the user guide's flow)."""
    candidate = FLOWS / flow_file
    return candidate if candidate.exists() else EXAMPLES / flow_file


def clean_environ() -> dict:
    """This process's env without the developer's own Nomad settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "METAFLOW_NOMAD_"))}


def flow_overrides(agent_address: str | None, workdir: Path) -> dict:
    """What every test flow run sets: a test user, raw_exec on the local datastore
    shared with the agent, a private Metaflow home, and this interpreter first."""
    overrides = {
        "USER": "tester",
        "METAFLOW_NOMAD_DRIVER": "raw_exec",
        "METAFLOW_NOMAD_SHARED_FILESYSTEM": "1",
        "METAFLOW_HOME": str(workdir / "mfhome"),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    }
    if agent_address:
        overrides["METAFLOW_NOMAD_ADDRESS"] = agent_address
    return overrides


def flow_env(agent_address: str | None, workdir: Path, extra: dict | None = None) -> dict:
    """The environment of a test flow run (the same as conftest's ``run_flow``)."""
    return {**clean_environ(), **flow_overrides(agent_address, workdir), **(extra or {})}


@dataclass
class BackgroundRun:
    proc: subprocess.Popen
    workdir: Path
    log_path: Path

    @property
    def run_id_file(self) -> Path:
        return self.workdir / "run_id"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_run_id(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run_id_file.exists() and self.run_id_file.read_text().strip():
                return self.run_id_file.read_text().strip()
            assert self.proc.poll() is None, self.output()
            time.sleep(0.2)
        raise AssertionError(f"no run id after {timeout}s:\n{self.output()}")

    def finish(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def start_flow(
    flow_file: str, workdir: Path, env: dict, *args: str, new_session: bool = True
) -> BackgroundRun:
    """``python flow.py run`` in its own session (so ``killpg`` is a terminal Ctrl-C)."""
    shutil.copy(flow_source(flow_file), workdir / flow_file)
    log_path = workdir / "output.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                flow_file,
                "--no-pylint",
                "run",
                "--run-id-file",
                str(workdir / "run_id"),
                *args,
            ],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    return BackgroundRun(proc, workdir, log_path)


def running_allocations(client: NomadClient, job_ids: list[str]) -> list[dict]:
    allocs = []
    for job_id in job_ids:
        found, _ = client.job_allocations(job_id)
        allocs.extend(a for a in found if a["ClientStatus"] in ("pending", "running"))
    return allocs


def wait_task_running(
    client: NomadClient, run: BackgroundRun, flow_name: str, run_id: str, timeout: float = 90
) -> dict:
    """The run's first job once its task is really executing on the client."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in find_jobs(client, flow_name, run_id):
            allocs, _ = client.job_allocations(job["ID"])
            states = [a.get("TaskStates") or {} for a in allocs]
            if any(s.get("metaflow", {}).get("State") == "running" for s in states):
                return job
        assert run.proc.poll() is None, run.output()
        time.sleep(0.3)
    raise AssertionError(f"no running task after {timeout}s:\n{run.output()}")


@dataclass
class Cleanup:
    """How long after an interruption the run's jobs and allocations were gone."""

    jobs_left: int
    allocs_left: int
    jobs_gone_after: float | None
    allocs_gone_after: float | None


def wait_no_active_jobs(
    client: NomadClient, flow_name: str, run_id: str, job_ids: list[str], timeout: float
) -> Cleanup:
    """Poll the API until the run has no active job and no running allocation."""
    started = time.monotonic()
    jobs_gone = allocs_gone = None
    while True:
        jobs = find_jobs(client, flow_name, run_id)
        allocs = running_allocations(client, job_ids)
        elapsed = time.monotonic() - started
        if not jobs and jobs_gone is None:
            jobs_gone = elapsed
        if not allocs and allocs_gone is None:
            allocs_gone = elapsed
        if (not jobs and not allocs) or elapsed > timeout:
            return Cleanup(len(jobs), len(allocs), jobs_gone, allocs_gone)
        time.sleep(0.25)
