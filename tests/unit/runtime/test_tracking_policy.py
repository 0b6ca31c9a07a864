"""The tracker's waiting policy with an injected clock and a scripted API.

The real sequence of evaluations and allocations is covered against agents in
tests/integration/test_tracking.py; these pin the timeout and the hand-off."""

from __future__ import annotations

import threading
import time

from metaflow_nomad.runtime.tracking import JobTracker


class SteppingClock:
    """Each reading is one second later than the previous one."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class ScriptedJobApi:
    """Evaluations, then allocations in the given order; blocks like a blocking query."""

    def __init__(self, allocations: list[dict]):
        self.allocations = list(allocations)
        self.released = threading.Event()

    def job_evaluations(self, job_id, index, wait_s, namespace=None):
        return [{"CreateIndex": 1, "Status": "complete"}], 1

    def job_allocations(self, job_id, index=0, wait_s=30, namespace=None):
        if index == 0:
            return [self.allocations[0]], 1
        if len(self.allocations) > 1:
            self.allocations.pop(0)
            return [self.allocations[0]], index + 1
        self.released.wait(wait_s)
        return [self.allocations[0]], index


def _alloc(status: str, exit_code: int | None = None) -> dict:
    events = [{"Type": "Started"}]
    if exit_code is not None:
        events.append({"Type": "Terminated", "Details": {"exit_code": str(exit_code)}})
    return {
        "ID": "a1b2c3d4-0000",
        "NodeName": "node-1",
        "ClientStatus": status,
        "CreateIndex": 5,
        "TaskStates": {
            "metaflow": {
                "State": "dead" if exit_code is not None else "running",
                "Events": events,
            }
        },
    }


def test_pending_timeout_is_measured_on_the_injected_clock():
    api = ScriptedJobApi([_alloc("pending")])
    tracker = JobTracker(api, "job", "metaflow", lambda m: None, clock=SteppingClock(), poll_s=0.01)
    started = time.monotonic()
    assert tracker.wait_started(pending_timeout=5) is False
    assert time.monotonic() - started < 1, "waited on the wall clock, not the injected one"


def test_a_task_is_followed_from_placement_to_its_verdict():
    messages: list[str] = []
    api = ScriptedJobApi([_alloc("pending"), _alloc("running"), _alloc("complete", 0)])
    tracker = JobTracker(api, "job", "metaflow", messages.append, poll_s=0.01).start()
    assert tracker.wait_started(pending_timeout=5)
    assert tracker.wait_finished(5)
    assert tracker.finished and tracker.allocation["ClientStatus"] == "complete"
    assert tracker.outcome().succeeded
    assert messages[:2] == [
        "Task is queued, waiting for placement...",
        "Task placed on node node-1 (allocation a1b2c3d4).",
    ]
    assert "Task is running on node node-1 (allocation a1b2c3d4)." in messages
    assert tracker.final_report == (
        "Task finished with exit code 0 (allocation a1b2c3d4 on node node-1)."
    )


def test_a_failed_task_gives_a_failed_outcome():
    api = ScriptedJobApi([_alloc("running"), _alloc("failed", 3)])
    tracker = JobTracker(api, "job", "metaflow", lambda m: None, poll_s=0.01).start()
    assert tracker.wait_finished(5)
    outcome = tracker.outcome()
    assert not outcome.succeeded
    assert outcome.exit_code == 3 and outcome.message == "the task exited with code 3"
