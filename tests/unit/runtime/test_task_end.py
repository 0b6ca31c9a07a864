"""TaskEnd: the task's own exit file ends the wait before Nomad's account does."""

from __future__ import annotations

from metaflow_nomad.runtime.tracking import TaskEnd
from metaflow_nomad.task.log_capture import record_exit_status


class FakeTracker:
    """Nomad's side: started, finished or not, on a clock the test owns."""

    def __init__(self):
        self.now = 0.0
        self.started = False
        self.finished = False

    def clock(self) -> float:
        return self.now

    def wait_started(self, timeout: float) -> bool:
        self.now += timeout
        return self.started

    def wait_finished(self, timeout: float) -> bool:
        self.now += timeout
        return self.finished


def test_the_exit_file_ends_the_wait_before_nomad_knows(tmp_path):
    tracker = FakeTracker()
    exit_file = str(tmp_path / "0.nomad_exit")
    end = TaskEnd(tracker, exit_file, poll_s=0.02, clock=tracker.clock)
    assert end.wait(0.1) is False
    assert tracker.now >= 0.1
    record_exit_status(exit_file, 0)
    started = tracker.now
    assert end.wait(30) is True
    assert tracker.now == started
    assert end.succeeded_before_nomad_said()


def test_a_failed_step_still_waits_for_nomads_account(tmp_path):
    tracker = FakeTracker()
    exit_file = str(tmp_path / "0.nomad_exit")
    record_exit_status(exit_file, 137)
    end = TaskEnd(tracker, exit_file, clock=tracker.clock)
    assert end.wait(30) is True
    assert end.exit_status() == 137
    assert not end.succeeded_before_nomad_said()


def test_without_an_exit_file_only_nomad_ends_the_wait(tmp_path):
    tracker = FakeTracker()
    end = TaskEnd(tracker, None, clock=tracker.clock)
    assert end.wait(5) is False
    tracker.finished = True
    assert end.wait(5) is True
    assert end.exit_status() is None
    assert not end.succeeded_before_nomad_said()


def test_once_nomad_has_said_the_file_changes_nothing(tmp_path):
    tracker = FakeTracker()
    exit_file = str(tmp_path / "0.nomad_exit")
    record_exit_status(exit_file, 0)
    tracker.finished = True
    end = TaskEnd(tracker, exit_file, clock=tracker.clock)
    assert end.wait(5) is True
    assert not end.succeeded_before_nomad_said()


def test_a_task_that_ended_before_nomad_heard_it_start_counts_as_started(tmp_path):
    tracker = FakeTracker()
    exit_file = str(tmp_path / "0.nomad_exit")
    end = TaskEnd(tracker, exit_file, poll_s=0.02, clock=tracker.clock)
    assert end.wait_started(0.1) is False
    record_exit_status(exit_file, 0)
    assert end.wait_started(30) is True
    assert end.succeeded_before_nomad_said()
    tracker.started = True
    assert TaskEnd(tracker, None, clock=tracker.clock).wait_started(5) is True
