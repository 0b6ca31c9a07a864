"""JobGuard: a watched job never outlives its launcher (signals, exit, parent death),
and a job that ended by itself is never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from metaflow_nomad.errors import NomadClientError, NomadJobKilled
from metaflow_nomad.runtime import guard as guard_module
from metaflow_nomad.runtime.guard import JobGuard

# What the launcher's guard must catch: Ctrl-C, the runtime's SIGTERM, a closed terminal.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


class StopRecorder:
    """The one call the guard makes: ``deregister``, recorded (or failing)."""

    def __init__(self, error: Exception | None = None):
        self.error = error
        self.deregistered: list[tuple[str, str | None]] = []

    def deregister(self, job_id, purge=False, timeout=None, namespace=None):
        self.deregistered.append((job_id, namespace))
        if self.error is not None:
            raise self.error
        return {}


@pytest.fixture(autouse=True)
def isolated_signals(monkeypatch):
    """The guard installs process-wide signal handlers and asks Linux for SIGTERM
    when its parent dies: keep both from outliving a test in pytest's own process."""
    monkeypatch.setattr(guard_module, "_signal_when_parent_dies", lambda signum: None)
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signal_stops_the_watched_job_and_reads_as_killed(sig):
    client, said = StopRecorder(), []
    with JobGuard(client, said.append) as guard:
        guard.watch("job-1", "team-a")
        assert signal.getsignal(sig) == guard._on_signal
        with pytest.raises(NomadJobKilled) as killed:
            signal.raise_signal(sig)
        assert client.deregistered == [("job-1", "team-a")]
    # The exception is the one line for the user; nothing else is printed, and
    # leaving the guard afterwards does not stop the job a second time.
    assert str(killed.value) == f"Stopped Nomad job job-1 (received {sig.name})."
    assert said == []
    assert client.deregistered == [("job-1", "team-a")]


def test_a_signal_before_a_job_is_watched_stops_nothing():
    client = StopRecorder()
    with JobGuard(client, print), pytest.raises(NomadJobKilled) as killed:
        signal.raise_signal(signal.SIGTERM)
    assert str(killed.value) == "The launcher received SIGTERM before submitting its job."
    assert client.deregistered == []


def test_a_signal_whose_stop_fails_says_the_job_could_not_be_stopped():
    refused = NomadClientError("connection refused")
    client = StopRecorder(error=refused)
    with JobGuard(client, print) as guard:
        guard.watch("job-1", None)
        with pytest.raises(NomadJobKilled) as killed:
            signal.raise_signal(signal.SIGINT)
    assert str(killed.value) == f"Could not stop Nomad job job-1: {refused}"
    assert client.deregistered == [("job-1", None)]


def test_leaving_the_guard_without_a_verdict_stops_the_job():
    client, said = StopRecorder(), []
    with pytest.raises(RuntimeError), JobGuard(client, said.append) as guard:
        guard.watch("job-1", "team-a")
        raise RuntimeError("the launcher crashed")
    assert client.deregistered == [("job-1", "team-a")]
    assert said == ["Stopped Nomad job job-1 (the launcher is exiting)."]


def test_a_released_job_is_never_stopped_and_release_is_idempotent():
    client, said = StopRecorder(), []
    with JobGuard(client, said.append) as guard:
        guard.watch("job-1", "team-a")
        guard.release()
        guard.release()
        assert guard.stop(reason="run time limit") == (True, None)
        with pytest.raises(NomadJobKilled):
            signal.raise_signal(signal.SIGTERM)
    assert client.deregistered == []
    assert said == []


def test_the_job_is_stopped_once_however_many_paths_ask():
    client, said = StopRecorder(), []
    with JobGuard(client, said.append) as guard:
        guard.watch("job-1", None)
        assert guard.stop(reason="task failed") == (True, "Stopped Nomad job job-1 (task failed).")
        assert guard.stop(reason="pending timeout") == (True, None)
    assert client.deregistered == [("job-1", None)]
    assert said == ["Stopped Nomad job job-1 (task failed)."]


def test_leaving_the_guard_puts_back_the_handlers_and_takes_its_exit_hook_away(monkeypatch):
    """An inherited SIG_IGN (``nohup``) or Python's SIGINT handler survives the guard."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    hooks: list = []
    monkeypatch.setattr(guard_module.atexit, "register", hooks.append)
    monkeypatch.setattr(guard_module.atexit, "unregister", hooks.remove)
    with JobGuard(StopRecorder(), print) as guard:
        assert all(signal.getsignal(sig) == guard._on_signal for sig in SIGNALS)
        assert hooks == [guard.stop]
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before
    assert hooks == []


EXITING_LAUNCHER = textwrap.dedent(
    """
    import sys
    from metaflow_nomad.runtime.guard import JobGuard

    class Client:
        def deregister(self, job_id, purge=False, timeout=None, namespace=None):
            print(f"deregister {job_id} {namespace}", flush=True)

    guard = JobGuard(Client(), print).__enter__()
    guard.watch("job-1", "team-a")
    if sys.argv[1] == "released":
        guard.release()
    if sys.argv[1] == "crash":
        raise RuntimeError("the launcher crashed")
    # "exit": the interpreter ends with the guard still watching.
    """
)


@pytest.mark.parametrize(("how", "stops"), [("exit", True), ("crash", True), ("released", False)])
def test_a_launcher_that_exits_with_its_job_watched_stops_it(how, stops):
    ended = subprocess.run(
        [sys.executable, "-c", EXITING_LAUNCHER, how],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert ended.returncode == (1 if how == "crash" else 0), ended.stderr
    expected = "deregister job-1 team-a\nStopped Nomad job job-1 (the launcher is exiting).\n"
    assert ended.stdout == (expected if stops else "")


# The launcher: guards its job, says so, then waits (SIGALRM ends it if nothing else does).
ORPHANED_LAUNCHER = textwrap.dedent(
    """
    import os, signal, sys
    from metaflow_nomad.errors import NomadJobKilled
    from metaflow_nomad.runtime.guard import JobGuard

    report = int(sys.argv[1])

    class Client:
        def deregister(self, job_id, purge=False, timeout=None, namespace=None):
            os.write(report, f"deregister {job_id} {namespace}\\n".encode())

    signal.alarm(20)
    try:
        with JobGuard(Client(), print) as guard:
            guard.watch("job-1", "team-a")
            print("watching", flush=True)
            while True:
                signal.pause()
    except NomadJobKilled as exc:
        os.write(report, f"killed: {exc}\\n".encode())
    """
)
# The runtime: starts the launcher, and exits as soon as it is watching its job.
DYING_RUNTIME = textwrap.dedent(
    """
    import subprocess, sys
    launcher = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1], sys.argv[2]],
        pass_fds=(int(sys.argv[2]),),
        stdout=subprocess.PIPE,
    )
    assert launcher.stdout.readline() == b"watching\\n"
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_launcher_whose_runtime_dies_stops_its_job():
    read_end, write_end = os.pipe()
    try:
        # Returns once the launcher has ended too: it holds the runtime's stderr.
        runtime = subprocess.run(
            [sys.executable, "-c", DYING_RUNTIME, ORPHANED_LAUNCHER, str(write_end)],
            pass_fds=(write_end,),
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        said = report.read().decode()
    assert runtime.returncode == 0, runtime.stderr
    assert said == (
        "deregister job-1 team-a\nkilled: Stopped Nomad job job-1 (received SIGTERM).\n"
    ), runtime.stderr
