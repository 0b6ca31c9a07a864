"""Follow one submitted job to its end, and explain what happens on the way.

A watcher thread follows the job with blocking queries (no tight polling, no
fixed sleeps) and reports each change as it happens: queued, placed on a node,
running, finished.  While nothing is placed it follows the job's evaluations,
whose failed-placement metrics say in plain words why (``outcome``).  The clock
is injectable, so that the pending timeout is unit-tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from metaflow_nomad.model import gang_node_index
from metaflow_nomad.runtime.gang import GangSpec, all_ended, failed_node
from metaflow_nomad.runtime.outcome import (
    TERMINAL_CLIENT_STATUS,
    TaskOutcome,
    describe_placement_failure,
    outcome_from_allocation,
)

# Blocking-query wait: long, because every change wakes the query at once.
WAIT_S = 30.0
# Task events that the state messages already cover, or that only repeat what
# the outcome says; every other event is echoed as it arrives.
ROUTINE_EVENTS = {"Received", "Task Setup", "Started", "Terminated", "Not Restarting"}
# How Nomad stops a task; while it is stopping them, the one verdict line says it all.
STOPPING_EVENTS = {"Killing", "Killed"}


@dataclass
class _State:
    alloc: dict | None = None
    diagnosis: str | None = None
    deregistered: bool = False
    final_report: str | None = None
    replacements: set = field(default_factory=set)
    gang_failure: TaskOutcome | None = None
    gang_settled: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class JobTracker:
    """Watches one job in a background thread, so the launcher can tail logs meanwhile."""

    def __init__(
        self,
        client,
        job_id: str,
        task_name: str,
        echo: Callable[[str], None],
        namespace: str | None = None,
        memory_mb: int | None = None,
        placement: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = 1.0,
        alloc_url: Callable[[str], str] | None = None,
        gang: GangSpec | None = None,
    ):
        self.client = client
        self.job_id = job_id
        self.task_name = task_name
        self.echo = echo
        self.namespace = namespace
        self.memory_mb = memory_mb
        self.placement = placement
        self._state = _State()
        self._clock = clock
        self._poll_s = poll_s
        self._alloc_url = alloc_url
        self.gang = gang
        self._thread = threading.Thread(target=self._run, name="nomad-job-tracker", daemon=True)

    def start(self) -> JobTracker:
        self._thread.start()
        return self

    @property
    def allocation(self) -> dict | None:
        """The newest allocation seen (None before placement)."""
        return self._state.alloc

    @property
    def pending_reason(self) -> str | None:
        """Why the scheduler has not placed the task, in words (None if unknown)."""
        return self._state.diagnosis

    @property
    def final_report(self) -> str | None:
        """One line on how the task ended, printed after its last log lines."""
        return self._state.final_report

    @property
    def gang_failure(self) -> TaskOutcome | None:
        """The first node of the gang that ended without success (None: none has)."""
        return self._state.gang_failure

    def wait_gang(self, timeout: float | None) -> bool:
        """True once every node of the gang has ended, or one has failed (at once
        without a gang); False after ``timeout``."""
        return self.gang is None or self._state.gang_settled.wait(timeout=timeout)

    @property
    def finished(self) -> bool:
        return self._state.finished.is_set()

    def stopping(self) -> bool:
        """Nomad is stopping the task (a job stop, a drain): what it prints from now
        on is how it was interrupted."""
        return self._state.stopping.is_set()

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # surfaced to the caller through outcome()
            self._state.error = exc
            self._state.finished.set()

    def _follow(self) -> None:
        self.echo("Task is queued, waiting for placement...")
        placed = self._wait_for_placement()
        if placed is None:
            return
        allocs, index = placed
        reported: tuple = ()
        seen_events = 0
        while True:
            alloc = self._attempt_allocation(allocs)
            if self._state.alloc is None:
                self.echo(
                    f"Task placed on node {alloc.get('NodeName')} "
                    f"(allocation {self._allocation_words(alloc['ID'])})."
                )
            self._report_replacements(allocs, alloc)
            self._state.alloc = alloc
            if alloc.get("DesiredStatus") in ("stop", "evict"):
                self._state.stopping.set()
            task_state = (alloc.get("TaskStates") or {}).get(self.task_name) or {}
            events = task_state.get("Events") or []
            for event in events[seen_events:]:
                self._report_event(event)
            seen_events = len(events)
            key = (alloc["ID"], alloc.get("ClientStatus"))
            if key != reported:
                reported = key
                self._report(alloc)
            if task_state.get("State") in ("running", "dead") or alloc.get("ClientStatus") in (
                "running",
                *TERMINAL_CLIENT_STATUS,
            ):
                self._state.started.set()
            if alloc.get("ClientStatus") in TERMINAL_CLIENT_STATUS:
                self._state.finished.set()
                if self.gang is None:
                    return
            if self.gang is not None and self._gang_settled(allocs):
                return
            while True:
                new_allocs, new_index = self.client.job_allocations(
                    self.job_id, index, WAIT_S, namespace=self.namespace
                )
                # An index going backwards means a leader change or restore: start over.
                changed = new_index != index
                index = new_index if new_index >= index else 0
                if changed and new_allocs:
                    allocs = new_allocs
                    break

    def _gang_settled(self, allocs: list[dict]) -> bool:
        """Judge the gang's other nodes: True once one has failed (the attempt fails
        as one unit) or every node has ended."""
        failure = failed_node(allocs, self.gang, self.task_name, self.memory_mb)
        if failure is not None and self._state.gang_failure is None:
            self._state.gang_failure = failure
            self.echo(f"Gang {failure.message}: the attempt fails as one unit.")
            self._state.started.set()
            self._state.finished.set()
        settled = failure is not None or all_ended(allocs, self.gang.num_nodes)
        if settled:
            self._state.gang_settled.set()
        return settled

    def _attempt_allocation(self, allocs: list[dict]) -> dict:
        """The attempt's own allocation: the first one placed, followed by its ID
        (of a gang, the control's: node 0).

        A lost allocation of a batch job is replaced by Nomad (1.6) inside the same
        job, whatever the reschedule policy; the replacement is not this attempt,
        and following it would hide that the attempt's node was lost.
        """
        if self._state.alloc is not None:
            own = next((a for a in allocs if a["ID"] == self._state.alloc["ID"]), None)
            if own is not None:
                return own
        controls = [a for a in allocs if gang_node_index(a.get("Name", "")) in (0, None)]
        return min(controls or allocs, key=lambda a: a.get("CreateIndex", 0))

    def _report_replacements(self, allocs: list[dict], own: dict) -> None:
        """Name the allocations Nomad placed in place of this attempt's (a gang's
        other nodes are not replacements: their index differs)."""
        own_index = gang_node_index(own.get("Name", ""))
        for alloc in allocs:
            if gang_node_index(alloc.get("Name", "")) != own_index:
                continue
            if alloc["ID"] != own["ID"] and alloc["ID"] not in self._state.replacements:
                self._state.replacements.add(alloc["ID"])
                self.echo(
                    f"Nomad placed allocation {alloc['ID'][:8]} on node {alloc.get('NodeName')} "
                    f"in place of {own['ID'][:8]} (on node {own.get('NodeName')}, now "
                    f"{own.get('ClientStatus')}), inside the same attempt: it will not run the "
                    "step (the attempt is claimed by the first allocation)."
                )

    def _wait_for_placement(self) -> tuple[list[dict], int] | None:
        """Follow the evaluations until an allocation exists; None if the job was stopped.

        An allocation is always written before its evaluation completes, so a
        blocking query on the evaluations wakes up for every placement, every
        failed placement and a deregistration.
        """
        index = 0
        while True:
            evaluations, new_index = self.client.job_evaluations(
                self.job_id, index, WAIT_S, namespace=self.namespace
            )
            index = new_index if new_index >= index else 0
            allocs, alloc_index = self.client.job_allocations(
                self.job_id, 0, namespace=self.namespace
            )
            if allocs:
                return allocs, alloc_index
            newest = max(evaluations, key=lambda e: e.get("CreateIndex", 0), default={})
            if newest.get("TriggeredBy") == "job-deregister":
                self._state.deregistered = True
                self._state.finished.set()
                return None
            diagnosis = describe_placement_failure(evaluations, self.memory_mb, self.placement)
            if diagnosis and diagnosis != self._state.diagnosis:
                self._state.diagnosis = diagnosis
                self.echo(f"Task is pending: {diagnosis}")

    def _report(self, alloc: dict) -> None:
        status = alloc.get("ClientStatus")
        node = alloc.get("NodeName")
        if status == "running":
            words = self._allocation_words(alloc["ID"])
            self.echo(f"Task is running on node {node} (allocation {words}).")
        elif status in TERMINAL_CLIENT_STATUS:
            outcome = outcome_from_allocation(alloc, self.task_name, self.memory_mb)
            if outcome.succeeded:
                verdict = "finished with exit code 0"
            else:
                verdict = f"ended {outcome.status}: {outcome.message or 'no details'}"
            # Kept for the launcher to print after the task's last log lines.
            self._state.final_report = end_report(alloc, verdict)

    def _allocation_words(self, alloc_id: str) -> str:
        """The short ID, and the allocation's page in Nomad's UI when linked."""
        if self._alloc_url is None:
            return alloc_id[:8]
        return f"{alloc_id[:8]}, {self._alloc_url(alloc_id)}"

    def _report_event(self, event: dict) -> None:
        if event.get("Type") in ROUTINE_EVENTS:
            return
        if self.stopping() and event.get("Type") in STOPPING_EVENTS:
            return
        text = event.get("DisplayMessage") or event.get("Message") or ""
        self.echo(f"Nomad task event: {event.get('Type')}{': ' + text if text else ''}")

    def wait_started(self, pending_timeout: float | None) -> bool:
        """True once the task runs or the job ends; False if still pending after the timeout."""
        deadline = None if pending_timeout is None else self._clock() + pending_timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - self._clock())
            wait = self._poll_s if remaining is None else min(self._poll_s, remaining)
            if self._state.started.wait(timeout=wait) or self._state.finished.is_set():
                return True
            if deadline is not None and self._clock() >= deadline:
                return False

    def wait_finished(self, timeout: float | None) -> bool:
        return self._state.finished.wait(timeout=timeout)

    def outcome(self) -> TaskOutcome:
        if self._state.error is not None:
            raise self._state.error
        if self._state.gang_failure is not None:
            return self._state.gang_failure
        if self._state.deregistered and self._state.alloc is None:
            return TaskOutcome(
                status="stopped", message="the Nomad job was stopped before it was placed"
            )
        return outcome_from_allocation(self._state.alloc or {}, self.task_name, self.memory_mb)


def end_report(alloc: dict | None, verdict: str) -> str:
    """The one line on how a task ended, printed after its last log lines."""
    if alloc is None:  # it ended before Nomad's servers heard where it ran
        return f"Task {verdict}."
    return f"Task {verdict} (allocation {alloc['ID'][:8]} on node {alloc.get('NodeName')})."


class TaskEnd:
    """The end of a task: Nomad's account of it, or the exit status the task's
    capture process records once its last line is written (``exit_file``).

    Nomad's client reports an allocation's end to the servers in batches, so the
    blocking query wakes about 200 ms after the task has exited; the file is
    there at once.  A failed step still waits for Nomad, whose account says why
    (out of memory, a signal).
    """

    def __init__(
        self,
        tracker: JobTracker,
        exit_file: str | None,
        poll_s: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._tracker = tracker
        self._exit_file = exit_file
        self._poll_s = poll_s
        self._clock = clock
        self._status: int | None = None

    def wait_started(self, pending_timeout: float | None) -> bool:
        """True once Nomad says the task runs, or the task says it has already
        ended (a short task can end before Nomad's servers hear it started);
        False if still pending after ``pending_timeout``."""
        if self._exit_file is None:
            return self._tracker.wait_started(pending_timeout)
        deadline = None if pending_timeout is None else self._clock() + pending_timeout
        while self.exit_status() is None:
            remaining = self._poll_s if deadline is None else deadline - self._clock()
            if self._tracker.wait_started(max(0.0, min(self._poll_s, remaining))):
                return True
            if remaining <= 0:
                return False
        return True

    def wait(self, timeout: float) -> bool:
        """True once Nomad or the task says the task has ended; False after ``timeout``."""
        if self._exit_file is None:
            return self._tracker.wait_finished(timeout)
        deadline = self._clock() + timeout
        while self.exit_status() is None:
            remaining = deadline - self._clock()
            if self._tracker.wait_finished(max(0.0, min(self._poll_s, remaining))):
                return True
            if remaining <= 0:
                return False
        return True

    def exit_status(self) -> int | None:
        """The step's exit status as the task recorded it (None until it has)."""
        if self._status is None and self._exit_file is not None:
            try:
                with open(self._exit_file) as handle:
                    self._status = int(handle.read())
            except (FileNotFoundError, ValueError):
                return None
        return self._status

    def succeeded_before_nomad_said(self) -> bool:
        return not self._tracker.finished and self.exit_status() == 0
