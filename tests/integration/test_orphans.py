"""Issue 4 item 5: however the launcher ends, the run's Nomad jobs do not outlive it.

Each case interrupts a real run whose @nomad step sleeps 60 s, exactly the way
Metaflow users and tools do, and then asks the agent how many of the run's jobs
are still active and how many allocations are still running.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from metaflow_nomad.api.lookup import find_jobs
from metaflow_nomad.runtime.plan import LAUNCHER_MODULE
from tests.support.flows import FLOWS, FlowRun, flow_env, read_run, start_flow
from tests.support.nomad_checks import wait_no_active_jobs, wait_task_running

pytestmark = pytest.mark.integration

FLOW = "SleepFlow"


@pytest.fixture()
def sleeping_run(nomad_agent, nomad_client, tmp_path):
    """Start sleep_flow.py and return (run, run_id, job) once the task runs on Nomad."""
    started = []

    def start(*args, env=None):
        run = start_flow(
            "sleep_flow.py", tmp_path, flow_env(nomad_agent.address, tmp_path, env), *args
        )
        started.append(run)
        run_id = run.wait_run_id()
        job = wait_task_running(nomad_client, run, FLOW, run_id)
        return run, run_id, job

    yield start
    for run in started:
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()


def _report(case: str, before: int, cleanup) -> None:
    print(
        f"[{case}] active jobs before: {before}; after: active jobs {cleanup.jobs_left} "
        f"(gone after {_secs(cleanup.jobs_gone_after)}), running allocations "
        f"{cleanup.allocs_left} (gone after {_secs(cleanup.allocs_gone_after)})"
    )


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def _assert_cleaned(
    cleanup, jobs_within: float, allocs_within: float = 15, output: str = ""
) -> None:
    """Jobs stopped by the launcher in time; allocations then ended by Nomad's kill
    (``output``, the run's, says why not)."""
    assert (cleanup.jobs_left, cleanup.allocs_left) == (0, 0), output
    assert cleanup.jobs_gone_after < jobs_within
    assert cleanup.allocs_gone_after < allocs_within


def test_ctrl_c_on_the_terminal_stops_the_job(sleeping_run, nomad_client):
    run, run_id, job = sleeping_run()
    before = len(find_jobs(nomad_client, FLOW, run_id))
    os.killpg(run.proc.pid, signal.SIGINT)
    cleanup = wait_no_active_jobs(nomad_client, FLOW, run_id, [job["ID"]], timeout=20)
    _report("ctrl-c process group", before, cleanup)
    assert before == 1
    _assert_cleaned(cleanup, jobs_within=5)
    assert run.finish() != 0
    assert f"Stopped Nomad job {job['ID']} (received SIGINT)" in run.output


def test_sigint_to_the_runtime_only_stops_the_job(sleeping_run, nomad_client):
    run, run_id, job = sleeping_run()
    before = len(find_jobs(nomad_client, FLOW, run_id))
    os.kill(run.proc.pid, signal.SIGINT)
    # The runtime waits 5 s for its workers, SIGKILLs the trampoline (which never saw
    # the signal), then runs runtime_finished: the backstop must stop the job.
    cleanup = wait_no_active_jobs(nomad_client, FLOW, run_id, [job["ID"]], timeout=30)
    _report("sigint runtime only", before, cleanup)
    assert before == 1
    assert run.finish() != 0
    _assert_cleaned(cleanup, jobs_within=12, output=run.output)
    assert "Killing 1 remaining tasks" in run.output
    # Stopped by the runtime_finished backstop, not by the (SIGKILLed) trampoline.
    assert f"Stopped Nomad job {job['ID']}." in run.output


# Runs the flow through Metaflow's Runner API in its own process, prints the run id,
# and calls the Runner's kill (CommandManager.kill: SIGTERM to the runtime and its
# children, SIGKILL 2 s later) when the test writes a line on its stdin.
RUNNER_DRIVER = """
import asyncio, sys
from metaflow import Runner

async def main():
    with Runner("sleep_flow.py", pylint=False) as runner:
        run = await runner.async_run()
        print("RUN_ID", run.run.id, flush=True)
        sys.stdin.readline()
        run.command_obj.kill()
        print("KILLED", flush=True)

asyncio.run(main())
"""


def test_runner_api_kill_stops_the_job(nomad_agent, nomad_client, tmp_path):
    (tmp_path / "sleep_flow.py").write_text((FLOWS / "sleep_flow.py").read_text())
    driver = subprocess.Popen(
        [sys.executable, "-c", RUNNER_DRIVER],
        cwd=tmp_path,
        env=flow_env(nomad_agent.address, tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        first = driver.stdout.readline().split()
        assert first[:1] == ["RUN_ID"], first
        run_id = first[1]
        run = FlowRun(driver, tmp_path, tmp_path / "unused.log")
        job = wait_task_running(nomad_client, run, FLOW, run_id)
        before = len(find_jobs(nomad_client, FLOW, run_id))
        driver.stdin.write("kill\n")
        driver.stdin.flush()
        cleanup = wait_no_active_jobs(nomad_client, FLOW, run_id, [job["ID"]], timeout=20)
        assert driver.stdout.readline().strip() == "KILLED"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    _report("runner api kill (SIGTERM)", before, cleanup)
    assert before == 1
    _assert_cleaned(cleanup, jobs_within=5)


def test_sigkill_of_the_launcher_fails_the_run_and_stops_the_job(sleeping_run, nomad_client):
    run, run_id, job = sleeping_run()
    before = len(find_jobs(nomad_client, FLOW, run_id))
    trampoline = _trampoline_pid(run.proc.pid)
    os.kill(trampoline, signal.SIGKILL)
    cleanup = wait_no_active_jobs(nomad_client, FLOW, run_id, [job["ID"]], timeout=30)
    _report("sigkill trampoline, no retry", before, cleanup)
    assert before == 1
    _assert_cleaned(cleanup, jobs_within=10)
    assert run.finish() != 0
    assert "Stopped Nomad job " + job["ID"] in run.output


def test_sigkill_of_the_launcher_next_attempt_stops_the_previous_job(sleeping_run, nomad_client):
    run, run_id, first = sleeping_run("--with", "retry:times=1,minutes_between_retries=0")
    assert first["Meta"]["metaflow.attempt"] == "0"
    os.kill(_trampoline_pid(run.proc.pid), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        active = find_jobs(nomad_client, FLOW, run_id)
        if [j["Meta"]["metaflow.attempt"] for j in active] == ["1"]:
            break
        time.sleep(0.3)
    attempts = sorted(j["Meta"]["metaflow.attempt"] for j in find_jobs(nomad_client, FLOW, run_id))
    print(f"[sigkill trampoline, @retry] active attempts after the retry started: {attempts}")
    assert attempts == ["1"], run.output
    assert f"Stopped Nomad job {first['ID']} (a previous attempt" in run.output
    os.killpg(run.proc.pid, signal.SIGINT)
    cleanup = wait_no_active_jobs(
        nomad_client, FLOW, run_id, [first["ID"], first["ID"][:-1] + "1"], timeout=20
    )
    _report("sigkill trampoline, @retry, then ctrl-c", 1, cleanup)
    _assert_cleaned(cleanup, jobs_within=5)


def test_sigkill_of_the_runtime_stops_the_job(sleeping_run, nomad_client):
    """The runtime dies without any cleanup (kill -9, OOM killer): no runtime_finished."""
    run, run_id, job = sleeping_run()
    before = len(find_jobs(nomad_client, FLOW, run_id))
    trampoline = _trampoline_pid(run.proc.pid)
    os.kill(run.proc.pid, signal.SIGKILL)
    cleanup = wait_no_active_jobs(nomad_client, FLOW, run_id, [job["ID"]], timeout=20)
    _report("sigkill runtime", before, cleanup)
    assert before == 1
    _assert_cleaned(cleanup, jobs_within=5)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{trampoline}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(f"/proc/{trampoline}"), "the trampoline outlived the runtime"


LEASE_TIMEOUT_S = 10


def test_sigkill_of_the_whole_launcher_stops_the_job_within_the_lease_timeout(
    sleeping_run, nomad_client, tmp_path
):
    """The launcher machine dies outright (OOM kill of the group, CI cancellation, power
    loss): no process of it is left to stop the job.  The task stops its step once the
    run's lease goes unrenewed for METAFLOW_NOMAD_LEASE_TIMEOUT, and records no success."""
    run, run_id, job = sleeping_run(env={"METAFLOW_NOMAD_LEASE_TIMEOUT": str(LEASE_TIMEOUT_S)})
    before = len(find_jobs(nomad_client, FLOW, run_id))
    os.killpg(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    cleanup = wait_no_active_jobs(nomad_client, FLOW, run_id, [job["ID"]], timeout=45)
    _report(f"sigkill launcher group, lease {LEASE_TIMEOUT_S}s", before, cleanup)
    assert before == 1
    # The bound: the timeout, one watch interval (timeout / 6) and the step's stop.
    _assert_cleaned(cleanup, jobs_within=LEASE_TIMEOUT_S + LEASE_TIMEOUT_S / 6 + 10)
    task_dir = next((tmp_path / ".metaflow" / FLOW / run_id / "nap").iterdir())
    stderr = (task_dir / "0.task_stderr.log").read_text(errors="replace")
    assert "has not renewed the run's lease" in stderr
    [nap] = read_run(run, f"{FLOW}/{run_id}")["steps"]["nap"]
    assert nap["successful"] is False
    assert nap["metadata"].get("attempt_ok") != "True"


def _trampoline_pid(runtime_pid: int) -> int:
    """The runtime's launcher child for the @nomad task (`-m metaflow_nomad.runtime.attempt`)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().split(b"\0")
            except (FileNotFoundError, ProcessLookupError):
                continue
            if ppid == runtime_pid and LAUNCHER_MODULE.encode() in cmdline:
                return int(pid)
        time.sleep(0.2)
    raise AssertionError("no launcher process found")
