"""The one way tests launch a flow: ``python flow.py <command>``, in the foreground
(``run_flow``) or in the background (``start_flow``) so that a test can interrupt
it like a user would, against the session agent or any agent a test starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from metaflow_nomad.testing.local_agent import interpreter_path

FLOWS = Path(__file__).resolve().parent.parent / "flows"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def flow_source(flow_file: str) -> Path:
    """A test flow from tests/flows, or one of the examples (the user guide's flow)."""
    candidate = FLOWS / flow_file
    return candidate if candidate.exists() else EXAMPLES / flow_file


def copy_flow(flow_file: str, workdir: Path) -> str:
    """Put a test flow into ``workdir``; return the name to run it by.

    ``flow_file`` is a flow of tests/flows (or of the examples), or a flow of a
    project directory there (``uv_project/uv_flow.py``): a project's flow needs its
    files beside it (``pyproject.toml`` and ``uv.lock`` for ``--environment=uv``), so
    the whole directory is copied, as a user's checkout would hold it.
    """
    source = flow_source(flow_file)
    if source.parent in (FLOWS, EXAMPLES):
        shutil.copy(source, workdir / source.name)
    else:
        ignored = shutil.ignore_patterns(".venv", "__pycache__")
        shutil.copytree(source.parent, workdir, ignore=ignored, dirs_exist_ok=True)
    return source.name


def agent_path_env() -> dict[str, str]:
    """The environment a test agent needs for its raw_exec tasks."""
    return {"PATH": interpreter_path()}


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
        "PATH": interpreter_path(),
    }
    if agent_address:
        overrides["METAFLOW_NOMAD_ADDRESS"] = agent_address
    return overrides


def flow_env(agent_address: str | None, workdir: Path, extra: dict | None = None) -> dict:
    """The whole environment of a test flow run."""
    return {**clean_environ(), **flow_overrides(agent_address, workdir), **(extra or {})}


def agent_flow_env(agent, workdir: Path, token: str | None = None, extra: dict | None = None):
    """A flow run's environment for ``agent``, with its address, token and TLS material."""
    return flow_env(None, workdir, {**agent.connection_env(token), **(extra or {})})


@dataclass
class FlowRun:
    """A ``python flow.py ...`` process; its output goes to a file in its directory."""

    proc: subprocess.Popen
    workdir: Path
    log_path: Path
    env: dict = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def run_id(self) -> str | None:
        path = self.workdir / "run_id"
        return path.read_text().strip() or None if path.exists() else None

    def wait_run_id(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run_id:
                return self.run_id
            assert self.proc.poll() is None, self.output
            time.sleep(0.2)
        raise AssertionError(f"no run id after {timeout}s:\n{self.output}")

    def wait(self, timeout: float = 300) -> int:
        """Wait for the end; a run still going after ``timeout`` is killed and fails the test."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"flow still running after {timeout}s:\n{self.output}") from None

    def finish(self, timeout: float = 60) -> int | None:
        """Wait up to ``timeout``, then kill whatever is left (for interrupted runs)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


def start_flow(
    flow_file: str,
    workdir: Path,
    env: dict,
    *args: str,
    command: str = "run",
    top_args: tuple = (),
    copy: bool = True,
) -> FlowRun:
    """``python flow.py [top_args] <command> ...`` in the background, in its own
    session (so that ``killpg`` is a terminal's Ctrl-C)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if copy:
        flow_file = copy_flow(flow_file, workdir)
    extra = ["--run-id-file", str(workdir / "run_id")] if command in ("run", "resume") else []
    log_path = workdir / "output.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, flow_file, "--no-pylint", *top_args, command, *extra, *args],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return FlowRun(proc, workdir, log_path, env)


def run_flow(
    flow_file: str, workdir: Path, env: dict, *args: str, timeout: float = 300, **kwargs
) -> FlowRun:
    """``start_flow`` and wait for its end."""
    run = start_flow(flow_file, workdir, env, *args, **kwargs)
    run.wait(timeout)
    return run


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


READ_RUN = """
import json, sys
from metaflow import Run, namespace
namespace(None)
run = Run(sys.argv[1])
steps = {}
for step in run:
    steps[step.id] = sorted(
        (
            {
                "pathspec": task.pathspec,
                "successful": task.successful,
                "metadata": task.metadata_dict,
                "data": {a.id: a.data for a in task if not a.id.startswith("_")}
                if task.finished
                else {},
            }
            for task in step
        ),
        key=lambda t: t["pathspec"],
    )
summary = {"tags": sorted(run.user_tags), "successful": run.successful, "steps": steps}
print(json.dumps(summary, default=str))
"""


def read_run(run: FlowRun, pathspec: str) -> dict:
    """A run as the Metaflow client sees it from the flow's directory, with the run's
    own settings: tags, and each task's metadata and artifacts."""
    env = {**clean_environ(), **run.env}
    return json.loads(client_script(run.workdir, env, READ_RUN, pathspec, timeout=120))


def flow_cli(run: FlowRun, flow_file: str, *args: str) -> subprocess.CompletedProcess:
    """``python flow.py ARGS`` after ``run``, in its directory with its settings, as the
    user types it next (``logs``, ``nomad usage``); ``run``'s own output is kept."""
    return subprocess.run(
        [sys.executable, flow_file, "--no-pylint", *args],
        cwd=run.workdir,
        env={**clean_environ(), **run.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def client_script(workdir: Path, env: dict, code: str, *args: str, timeout: float = 300) -> str:
    """Run Python in the flow's directory, as a user's notebook or script would; its
    output, once it succeeded (``args`` are its ``sys.argv[1:]``)."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout
