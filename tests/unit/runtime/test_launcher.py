"""TaskLauncher: submit -> placement -> log stream -> verdict, against a fake Nomad.

The real ``JobTracker`` follows the fake's blocking queries in its thread; every
wait is measured on an injected clock, so nothing waits on the wall clock.  The same
flow against agents is in tests/integration.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from metaflow_nomad.errors import NomadClientError, NomadJobFailed, NomadJobKilled
from metaflow_nomad.mflog_lines import decorate, message
from metaflow_nomad.model import TASK_NAME, JobIdentity, TaskLogs
from metaflow_nomad.runtime.launcher import TRANSIENT_ADVICE, TaskLauncher
from metaflow_nomad.runtime.outcome import TERMINAL_CLIENT_STATUS
from metaflow_nomad.runtime.plan import AttemptPlan, Dispatch
from metaflow_nomad.task.log_capture import record_exit_status
from tests.unit.runtime.test_guard import isolated_signals  # noqa: F401 - autouse fixture
from tests.unit.runtime.test_raw_tail import RecordedLogs
from tests.unit.runtime.test_tracking_policy import SteppingClock

IDENTITY = JobIdentity("F", "7", "start", "1", 0, "tester")
JOB_ID = IDENTITY.job_id
NAMESPACE = "team-a"
ALLOC_ID = "a1b2c3d4-1111-2222-3333-444455556666"
ON_NODE = "(allocation a1b2c3d4 on node node-1)"


def alloc(status: str, *events: dict, desired: str = "run", description: str = "") -> dict:
    return {
        "ID": ALLOC_ID,
        "NodeName": "node-1",
        "CreateIndex": 5,
        "ClientStatus": status,
        "DesiredStatus": desired,
        "DesiredDescription": description,
        "TaskStates": {
            TASK_NAME: {
                "State": "dead" if status in TERMINAL_CLIENT_STATUS else "running",
                "Events": [{"Type": "Started"}, *events],
            }
        },
    }


def terminated(exit_code: int, signal: int = 0, oom: bool = False) -> dict:
    details = {"exit_code": str(exit_code), "signal": str(signal), "oom_killed": str(oom).lower()}
    return {"Type": "Terminated", "Details": details}


class FakeNomad:
    """One job's API: blocking queries wait for a change (``update``); deregistering
    stops the job as Nomad does; ``close`` ends the tracker thread after a test."""

    def __init__(self, allocation=None, evaluations=None, raw_logs=None):
        self._changes = threading.Condition()
        self.allocs = [allocation] if allocation else []
        self.evaluations = evaluations or [{"CreateIndex": 1, "Status": "complete"}]
        self.index = 1
        self.closed = False
        # Set while the tracker waits on a blocking query: it has seen everything.
        self.idle = threading.Event()
        self.raw_logs = RecordedLogs(**(raw_logs or {}))
        self.register_error: Exception | None = None
        self.query_error: Exception | None = None
        self.deregister_error: Exception | None = None
        self.on_register = None
        self.registered: list[tuple[dict, str | None]] = []
        self.dispatched: list[tuple] = []
        self.deregistered: list[tuple[str, str | None]] = []
        self.queried: set[tuple[str, str | None]] = set()
        self.logs_read: list[str] = []

    def update(self, allocation=None, evaluation=None) -> None:
        with self._changes:
            if allocation is not None:
                self.allocs = [allocation]
            if evaluation is not None:
                self.evaluations.append(evaluation)
            self.index += 1
            self.idle.clear()
            self._changes.notify_all()

    def close(self) -> None:
        with self._changes:
            self.closed = True
            self._changes.notify_all()

    def _answer(self, job_id, namespace, index, wait_s, answer):
        self.queried.add((job_id, namespace))
        if self.query_error is not None:
            raise self.query_error
        with self._changes:
            if index >= self.index:
                self.idle.set()
                self._changes.wait_for(lambda: self.closed or self.index > index, wait_s)
            if self.closed:
                raise NomadClientError("the test is over")
            return [dict(item) for item in answer()], self.index

    def job_evaluations(self, job_id, index=0, wait_s=30, namespace=None):
        return self._answer(job_id, namespace, index, wait_s, lambda: self.evaluations)

    def job_allocations(self, job_id, index=0, wait_s=30, namespace=None):
        return self._answer(job_id, namespace, index, wait_s, lambda: self.allocs)

    def register(self, job, source=None):
        self.registered.append((job, source))
        if self.on_register is not None:
            self.on_register()
        if self.register_error is not None:
            raise self.register_error
        return {"EvalID": "e1"}

    def dispatch(self, job_id, meta, namespace=None, idempotency_token=None):
        self.dispatched.append((job_id, meta, namespace, idempotency_token))
        return f"{job_id}/dispatch-1700000000-abcd1234"

    def deregister(self, job_id, purge=False, timeout=None, namespace=None):
        self.deregistered.append((job_id, namespace))
        if self.deregister_error is not None:
            raise self.deregister_error
        stopped = [
            {
                **a,
                "DesiredStatus": "stop",
                "DesiredDescription": "alloc not needed due to job update",
                "ClientStatus": "complete" if a["ClientStatus"] == "running" else a["ClientStatus"],
            }
            for a in self.allocs
        ]
        deregistration = {"CreateIndex": self.index + 1, "TriggeredBy": "job-deregister"}
        self.update(stopped[0] if stopped else None, deregistration)
        return {}

    def alloc_logs(self, alloc_id, task, stream, tail_bytes):
        self.logs_read.append(stream)
        return self.raw_logs.alloc_logs(alloc_id, task, stream, tail_bytes)


class IdleClock(SteppingClock):
    """Time passes only once Nomad has nothing new to tell the tracker."""

    def __init__(self, nomad: FakeNomad):
        super().__init__()
        self.nomad = nomad

    def __call__(self) -> float:
        assert self.nomad.idle.wait(timeout=10), "the tracker never waited on Nomad"
        return super().__call__()


class Attempt:
    """One launcher with its plan, its task's log files, and what it said."""

    def __init__(self, tmp_path, nomad: FakeNomad, clock=None, **plan):
        self.nomad = nomad
        # Short (on the stepping clock), so that a launcher that misses the task's
        # end fails at its time limit instead of waiting out the default five days.
        plan.setdefault("run_time_limit", 600)
        self.plan = AttemptPlan(
            identity=IDENTITY,
            namespace=NAMESPACE,
            job={"ID": JOB_ID},
            hcl='job "x" {}',
            template_name="default.nomad.j2",
            description="start/1",
            memory_mb=512,
            **plan,
        )
        self.logs = TaskLogs(
            str(tmp_path / "stdout.log"),
            str(tmp_path / "stderr.log"),
            "local",
            exit_file=str(tmp_path / "exit"),
        )
        self.said: list[str] = []  # the launcher's own lines
        self.lines: list[tuple[str, str]] = []  # task lines handed to the runtime
        self.on_line = None
        self.launcher = TaskLauncher(
            nomad, self.plan, self.said.append, self.sink, clock=clock or SteppingClock()
        )

    def sink(self, line: str, stream: str = "stderr") -> None:
        text = message(line.encode()).decode()
        self.lines.append((text, stream))
        if self.on_line is not None:
            self.on_line(text)

    def write(self, stream: str, *texts: str) -> None:
        path = self.logs.stdout_url if stream == "stdout" else self.logs.stderr_url
        with open(path, "ab") as handle:
            for text in texts:
                handle.write(decorate(b"task", text.encode() + b"\n"))

    def exit(self, status: int) -> None:
        record_exit_status(self.logs.exit_file, status)

    def run(self) -> None:
        """As ``runtime.attempt`` does: inside the guard, start, then follow."""
        with self.launcher:
            self.launcher.start()
            self.launcher.follow(self.logs)


@pytest.fixture()
def nomad():
    fakes: list[FakeNomad] = []

    def make(*args, **kwargs) -> FakeNomad:
        fakes.append(FakeNomad(*args, **kwargs))
        return fakes[-1]

    yield make
    for fake in fakes:
        fake.close()


def test_a_successful_task_is_registered_streamed_and_left_alone(tmp_path, nomad):
    attempt = Attempt(tmp_path, nomad(alloc("complete", terminated(0))))
    attempt.write("stdout", "hello", "world")
    attempt.write("stderr", "a warning")
    attempt.run()
    assert attempt.nomad.registered == [({"ID": JOB_ID}, 'job "x" {}')]
    assert attempt.lines == [("hello", "stdout"), ("world", "stdout"), ("a warning", "stderr")]
    assert attempt.said[-1] == f"Task finished with exit code 0 {ON_NODE}."
    assert (JOB_ID, NAMESPACE) in attempt.nomad.queried
    # Nomad ended it; leaving the launcher does not stop it.
    assert attempt.nomad.deregistered == []


def test_lines_stream_to_the_runtime_while_the_task_runs(tmp_path, nomad):
    attempt = Attempt(tmp_path, nomad(alloc("running")))
    attempt.write("stdout", "working")

    def on_line(text):
        if text == "working":  # seen while Nomad still says running
            attempt.write("stderr", "almost done")
            attempt.nomad.update(alloc("complete", terminated(0)))

    attempt.on_line = on_line
    attempt.run()
    assert attempt.lines == [("working", "stdout"), ("almost done", "stderr")]
    assert attempt.said[-1] == f"Task finished with exit code 0 {ON_NODE}."
    assert attempt.nomad.deregistered == []


@pytest.mark.parametrize(
    ("events", "status", "reason", "advice"),
    [
        pytest.param(
            [terminated(3)], "failed", "the task exited with code 3", True, id="nonzero-exit"
        ),
        pytest.param(
            [terminated(137, signal=9, oom=True)],
            "failed",
            "the task was killed for running out of memory (limit 512 MB); "
            "raise `memory` in @nomad or @resources",
            True,
            id="oom-killed",
        ),
        pytest.param(
            [terminated(0, signal=9)],
            "failed",
            "the task was killed by SIGKILL (signal 9). Nomad did not report an OOM kill, but "
            "SIGKILL is how the kernel ends a task that goes over its memory limit (512 MB); "
            "if the step needs more, raise `memory`",
            True,
            id="sigkill-without-oom",
        ),
        pytest.param(
            [],
            "lost",
            "the allocation is lost (its node node-1 went away or stopped heartbeating); "
            "the job was stopped so that no duplicate attempt can run",
            True,
            id="lost-allocation",
        ),
        pytest.param(
            [
                {
                    "Type": "Driver Failure",
                    "DisplayMessage": 'volumes are not enabled; cannot mount host paths: "/d:/d"',
                }
            ],
            "failed",
            "the docker plugin on node node-1 does not allow bind mounts, and the step mounts /d",
            False,
            id="refused-by-node",
        ),
    ],
)
def test_a_failed_task_is_stopped_and_its_failure_is_retryable(
    tmp_path, nomad, events, status, reason, advice
):
    attempt = Attempt(tmp_path, nomad(alloc(status, *events)))
    with pytest.raises(NomadJobFailed) as failed:
        attempt.run()
    text = str(failed.value)
    assert text.startswith(f"Step failed on Nomad (job {JOB_ID}, allocation a1b2c3d4): {reason}")
    assert text.endswith(TRANSIENT_ADVICE) is advice
    assert attempt.nomad.deregistered == [(JOB_ID, NAMESPACE)]
    assert f"Stopped Nomad job {JOB_ID} (task {status})." in attempt.said
    assert f"Task ended {status}: {reason}" in "\n".join(attempt.said)


def test_a_failure_shows_nomads_raw_lines_the_stream_did_not(tmp_path, nomad):
    raw = {"stderr": "Traceback (most recent call last):\nValueError: boom\nSegfault in libfoo\n"}
    attempt = Attempt(tmp_path, nomad(alloc("failed", terminated(1)), raw_logs=raw))
    attempt.write("stderr", "Traceback (most recent call last):", "ValueError: boom")
    with pytest.raises(NomadJobFailed):
        attempt.run()
    assert attempt.nomad.logs_read == ["stdout", "stderr"]
    assert (
        "--- stderr from nomad alloc logs, not in the task's log above ---\nSegfault in libfoo"
    ) in attempt.said


def test_the_bootstraps_own_reason_replaces_the_retry_advice(tmp_path, nomad):
    reason = "the code package could not be fetched from s3://b/k: no credentials."
    raw = {"stderr": f"metaflow-nomad: {reason}\n"}
    attempt = Attempt(tmp_path, nomad(alloc("failed", terminated(1)), raw_logs=raw))
    with pytest.raises(NomadJobFailed) as failed:
        attempt.run()
    assert str(failed.value) == (
        f"Step failed on Nomad (job {JOB_ID}, allocation a1b2c3d4): the task exited with "
        f"code 1: {reason.rstrip('.')}."
    )


def test_a_command_not_found_is_named_and_not_called_transient(tmp_path, nomad):
    raw = {"stderr": "bash: line 1: flush_mflogs: command not found\n"}
    attempt = Attempt(tmp_path, nomad(alloc("failed", terminated(127)), raw_logs=raw))
    attempt.write("stderr", "bash: line 1: flush_mflogs: command not found")
    with pytest.raises(NomadJobFailed) as failed:
        attempt.run()
    text = str(failed.value)
    assert text.startswith(
        f"Step failed on Nomad (job {JOB_ID}, allocation a1b2c3d4): the task exited with code "
        "127: `flush_mflogs` was not found on node node-1 (bash: line 1: flush_mflogs: "
        "command not found); install it on the node"
    )
    assert TRANSIENT_ADVICE not in text


def test_an_environment_that_could_not_be_set_up_is_not_called_transient(tmp_path, nomad):
    reason = (
        "the step's Metaflow environment (uv) could not be set up on this node: its "
        "bootstrap ended with exit status 1 before the step started"
    )
    raw = {"stderr": f"error: Failed to download `inflection==0.5.1`\nmetaflow-nomad: {reason}.\n"}
    attempt = Attempt(tmp_path, nomad(alloc("failed", terminated(1)), raw_logs=raw))
    with pytest.raises(NomadJobFailed) as failed:
        attempt.run()
    assert str(failed.value) == (
        f"Step failed on Nomad (job {JOB_ID}, allocation a1b2c3d4): the task exited with "
        f"code 1: {reason}."
    )


def test_a_task_migrated_off_a_draining_node_fails_without_nomads_raw_logs(tmp_path, nomad):
    drained = alloc(
        "complete", terminated(0), desired="stop", description="alloc is being migrated"
    )
    attempt = Attempt(tmp_path, nomad(drained))
    with pytest.raises(NomadJobFailed) as failed:
        attempt.run()
    assert "Nomad stopped the task to migrate it off node node-1" in str(failed.value)
    assert str(failed.value).endswith(TRANSIENT_ADVICE)
    assert attempt.nomad.logs_read == []
    assert not any(line.startswith("Task ended") for line in attempt.said)


def test_a_job_stopped_from_outside_is_killed_not_retried_and_its_last_lines_held_back(
    tmp_path, nomad
):
    stopped = alloc(
        "complete",
        terminated(130),
        desired="stop",
        description="alloc not needed due to job update",
    )
    attempt = Attempt(tmp_path, nomad(stopped))
    attempt.write("stderr", "Traceback (most recent call last):", "KeyboardInterrupt")
    with pytest.raises(NomadJobKilled) as killed:
        attempt.run()
    assert str(killed.value) == (
        "Task stopped: the Nomad job was stopped from outside (alloc not needed due to job "
        "update), e.g. by `nomad job stop`, the flow's `nomad kill` or the Nomad UI. Job "
        f"{JOB_ID} is not retried. Its last 2 log line(s), written while Nomad stopped it, "
        "are kept in the task's log (the `logs` command)."
    )
    assert attempt.lines == []
    assert attempt.nomad.deregistered == []


def test_a_job_stopped_before_it_was_placed_is_killed(tmp_path, nomad):
    deregistered = [{"CreateIndex": 2, "TriggeredBy": "job-deregister", "Status": "complete"}]
    attempt = Attempt(tmp_path, nomad(evaluations=deregistered))
    with pytest.raises(NomadJobKilled) as killed:
        attempt.run()
    assert str(killed.value).startswith(
        "Task stopped: the Nomad job was stopped before it was placed,"
    )
    assert attempt.nomad.deregistered == []


MEMORY_EXHAUSTED = {"NodesEvaluated": 1, "NodesExhausted": 1, "DimensionExhausted": {"memory": 1}}


@pytest.mark.parametrize(
    ("evaluation", "reason"),
    [
        pytest.param(
            {"CreateIndex": 1, "Status": "complete", "FailedTGAllocs": {"step": MEMORY_EXHAUSTED}},
            "task group 'step' cannot be placed: 1 node(s) do not have enough free memory "
            "(requested 512 MB).",
            id="unplaceable",
        ),
        pytest.param(
            {"CreateIndex": 1, "Status": "failed", "StatusDescription": "maximum attempts"},
            "the scheduler failed to evaluate the job: maximum attempts",
            id="evaluation-failed",
        ),
        pytest.param(
            {"CreateIndex": 1, "Status": "complete"},
            "the scheduler has not placed it yet",
            id="no-reason-yet",
        ),
    ],
)
def test_a_task_still_pending_after_its_timeout_is_stopped_with_the_reason(
    tmp_path, nomad, evaluation, reason
):
    fake = nomad(evaluations=[evaluation])
    attempt = Attempt(tmp_path, fake, clock=IdleClock(fake), pending_timeout=30)
    started = time.monotonic()
    with pytest.raises(NomadJobFailed) as failed:
        attempt.run()
    assert time.monotonic() - started < 5, "waited on the wall clock, not the injected one"
    assert str(failed.value) == (
        f"The task was still pending after 30s (pending_timeout), so job {JOB_ID} was "
        f"stopped: {reason}"
    )
    assert fake.deregistered == [(JOB_ID, NAMESPACE)]
    assert f"Stopped Nomad job {JOB_ID} (pending timeout)." in attempt.said


def test_a_task_that_outruns_its_time_limit_is_stopped(tmp_path, nomad):
    attempt = Attempt(tmp_path, nomad(alloc("running")), run_time_limit=10)
    with pytest.raises(NomadJobFailed) as failed:
        attempt.run()
    assert str(failed.value) == (
        "The task ran past its time limit of 10s (@timeout) and did not stop itself within "
        f"6s more, so the launcher stopped job {JOB_ID}."
    )
    assert attempt.nomad.deregistered == [(JOB_ID, NAMESPACE)]
    assert f"Stopped Nomad job {JOB_ID} (run time limit)." in attempt.said


def test_the_exit_file_ends_a_successful_wait_before_nomad_says_so(tmp_path, nomad):
    attempt = Attempt(tmp_path, nomad(alloc("running")))
    attempt.write("stdout", "last line")
    attempt.on_line = lambda text: attempt.exit(0)  # Nomad still says running
    attempt.run()
    assert attempt.lines == [("last line", "stdout")]
    assert attempt.said[-1] == f"Task finished with exit code 0 {ON_NODE}."
    assert attempt.nomad.deregistered == []


def test_an_exit_file_before_nomad_placed_the_task_counts_as_success(tmp_path, nomad):
    attempt = Attempt(tmp_path, nomad(), pending_timeout=30)
    attempt.write("stdout", "quick")
    attempt.exit(0)
    attempt.run()
    assert attempt.lines == [("quick", "stdout")]
    # (The tracker may still be saying "queued": Nomad has not placed it.)
    assert "Task finished with exit code 0." in attempt.said
    assert attempt.nomad.deregistered == []


def test_a_failed_exit_file_still_waits_for_nomads_account(tmp_path, nomad):
    attempt = Attempt(tmp_path, nomad(alloc("running")))
    attempt.write("stdout", "allocating")
    oom = alloc("failed", terminated(137, signal=9, oom=True))

    def on_line(text):
        attempt.exit(137)
        # Nomad's servers hear of the end a moment after the task's file says it.
        threading.Timer(0.005, attempt.nomad.update, kwargs={"allocation": oom}).start()

    attempt.on_line = on_line
    with pytest.raises(NomadJobFailed) as failed:
        attempt.run()
    assert "killed for running out of memory (limit 512 MB)" in str(failed.value)
    assert attempt.nomad.deregistered == [(JOB_ID, NAMESPACE)]
    assert f"Stopped Nomad job {JOB_ID} (task failed)." in attempt.said


def test_a_dispatched_child_is_the_job_followed_and_stopped(tmp_path, nomad):
    dispatch = Dispatch("mf-f-d1-start", {"metaflow.task_id": "1"}, "token-1")
    attempt = Attempt(tmp_path, nomad(alloc("failed", terminated(2))), dispatch=dispatch)
    with pytest.raises(NomadJobFailed):
        attempt.run()
    child = "mf-f-d1-start/dispatch-1700000000-abcd1234"
    fake = attempt.nomad
    assert fake.registered == []
    assert fake.dispatched == [("mf-f-d1-start", {"metaflow.task_id": "1"}, NAMESPACE, "token-1")]
    assert fake.queried == {(child, NAMESPACE)}
    assert fake.deregistered == [(child, NAMESPACE)]
    assert f"Stopped Nomad job {child} (task failed)." in attempt.said
    assert "Dispatched job mf-f-d1-start/dispatch-1700000000-abcd1234." in attempt.said


def test_a_submission_error_is_raised_and_abandoning_stops_quietly(tmp_path, nomad):
    attempt = Attempt(tmp_path, nomad())
    denied = NomadClientError("403 Permission denied")
    attempt.nomad.register_error = denied
    with attempt.launcher:  # as runtime.attempt does
        with pytest.raises(NomadClientError) as raised:
            attempt.launcher.start()
        assert raised.value is denied
        attempt.launcher.abandon(reason="submission failed")
    # Deregistering an ID that was never registered is harmless, and not news.
    assert attempt.nomad.deregistered == [(JOB_ID, NAMESPACE)]
    assert attempt.said == [
        f"Submitting job {JOB_ID} (start/1, template default.nomad.j2).",
    ]


def test_abandoning_says_when_the_job_could_not_be_stopped(tmp_path, nomad):
    attempt = Attempt(tmp_path, nomad())
    unavailable = NomadClientError("502 Bad Gateway")
    attempt.nomad.register_error = attempt.nomad.deregister_error = unavailable
    with attempt.launcher:
        with pytest.raises(NomadClientError):
            attempt.launcher.start()
        attempt.launcher.abandon(reason="submission failed")
    assert attempt.said[-1] == f"Could not stop Nomad job {JOB_ID}: {unavailable}"
    assert attempt.nomad.deregistered == [(JOB_ID, NAMESPACE)]


def test_a_signal_during_registration_stops_the_job(tmp_path, nomad):
    attempt = Attempt(tmp_path, nomad())
    attempt.nomad.on_register = lambda: signal.raise_signal(signal.SIGTERM)
    with pytest.raises(NomadJobKilled) as killed:
        attempt.run()
    assert str(killed.value) == f"Stopped Nomad job {JOB_ID} (received SIGTERM)."
    assert attempt.nomad.deregistered == [(JOB_ID, NAMESPACE)]


def test_an_api_error_while_following_stops_the_job_on_the_way_out(tmp_path, nomad):
    attempt = Attempt(tmp_path, nomad(alloc("running")))
    refused = NomadClientError("connection refused")
    attempt.nomad.query_error = refused
    with pytest.raises(NomadClientError) as raised:
        attempt.run()
    assert raised.value is refused
    assert attempt.nomad.deregistered == [(JOB_ID, NAMESPACE)]
    assert attempt.said[-1] == f"Stopped Nomad job {JOB_ID} (the launcher is exiting)."


def test_a_lost_allocation_is_the_attempts_verdict_though_nomad_placed_a_replacement(
    tmp_path, nomad
):
    """Nomad replaces a lost batch allocation inside the same job; the launcher keeps
    following the attempt's own allocation, says which node was lost, and stops the
    job, instead of following the replacement to its success."""
    attempt = Attempt(tmp_path, nomad(alloc("running")))
    replacement = {
        **alloc("complete", terminated(0)),
        "ID": "ffffeeee-1111-2222-3333-444455556666",
        "NodeName": "node-2",
        "CreateIndex": 9,
    }

    def on_line(text):
        if text == "working":
            attempt.nomad.allocs = [alloc("lost"), replacement]
            attempt.nomad.update(evaluation={"CreateIndex": 8, "Status": "complete"})

    attempt.on_line = on_line
    attempt.write("stdout", "working")
    with pytest.raises(NomadJobFailed) as failed:
        attempt.run()
    assert "the allocation is lost (its node node-1 went away" in str(failed.value)
    said = "\n".join(attempt.said)
    assert "Nomad placed allocation ffffeeee on node node-2 in place of a1b2c3d4" in said
    assert "Task placed on node node-2" not in said
    assert attempt.nomad.deregistered == [(JOB_ID, NAMESPACE)]
