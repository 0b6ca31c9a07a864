"""Follow one submitted job to its end, and explain what happens on the way.

A watcher thread follows the job with blocking queries (no tight polling, no
fixed sleeps) and reports each change as it happens: queued, placed on a node,
running, finished.  While nothing is placed it follows the job's evaluations,
whose failed-placement metrics say in plain words why.  The final
``TaskOutcome`` carries the exit code, signal and OOM state from task events,
and tells a stop by Nomad (drain, ``nomad job stop``) apart from a real exit.
"""

from __future__ import annotations

import signal as signals
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

TERMINAL_CLIENT_STATUS = {"complete", "failed", "lost", "unknown"}
# Blocking-query wait: long, because every change wakes the query at once.
WAIT_S = 30.0
SIGKILL = 9
# Task events that the state messages already cover, or that only repeat what
# the outcome says; every other event is echoed as it arrives.
ROUTINE_EVENTS = {"Received", "Task Setup", "Started", "Terminated", "Not Restarting"}
FATAL_EVENTS = {
    "Driver Failure",
    "Setup Failure",
    "Failed Validation",
    "Failed Artifact Download",
    "Task hook failed",
}


@dataclass
class TaskOutcome:
    # complete | failed | lost | unknown | migrated | stopped
    status: str
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    message: str = ""
    alloc_id: str | None = None
    node_name: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "complete" and (self.exit_code or 0) == 0

    @property
    def stopped_from_outside(self) -> bool:
        """Someone stopped the job (``nomad job stop``, another launcher): do not retry."""
        return self.status == "stopped"


@dataclass
class _State:
    alloc: dict | None = None
    diagnosis: str | None = None
    deregistered: bool = False
    final_report: str | None = None
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def describe_placement_failure(
    evaluations: list[dict], memory_mb: int | None = None, placement: str | None = None
) -> str | None:
    """Plain-words reason from the newest evaluation's FailedTGAllocs metrics.

    ``placement`` names what the job asked for (datacenters, node pool), because
    the metrics of a job that matches no node at all are empty.
    """
    for evaluation in sorted(evaluations, key=lambda e: e.get("CreateIndex", 0), reverse=True):
        failed = evaluation.get("FailedTGAllocs") or {}
        for group, metric in failed.items():
            return _describe_metric(group, metric, memory_mb, placement)
        if evaluation.get("Status") == "failed":
            return (
                f"the scheduler failed to evaluate the job: {evaluation.get('StatusDescription')}"
            )
    return None


def _describe_metric(group: str, metric: dict, memory_mb: int | None, placement: str | None) -> str:
    evaluated = metric.get("NodesEvaluated", 0)
    reasons = []
    if evaluated == 0:
        asked = f" ({placement})" if placement else ""
        reasons.append(
            f"no ready client node is in the requested datacenters and node pool{asked}; "
            "check `datacenters`, `node_pool` and `region`"
        )
    for constraint, count in sorted((metric.get("ConstraintFiltered") or {}).items()):
        if constraint.startswith("missing drivers"):
            reasons.append(f"{count} of {evaluated} node(s) lack a healthy driver for the task")
        elif constraint.startswith("missing devices") or "device" in constraint:
            reasons.append(
                f"{count} of {evaluated} node(s) lack the requested device ({constraint})"
            )
        else:
            reasons.append(
                f"{count} of {evaluated} node(s) were filtered out by constraint `{constraint}`"
            )
    for dimension, count in sorted((metric.get("DimensionExhausted") or {}).items()):
        hint = ""
        if dimension == "memory" and memory_mb:
            hint = f" (requested {memory_mb} MB)"
        reasons.append(f"{count} node(s) do not have enough free {dimension}{hint}")
    if metric.get("NodesExhausted") and not metric.get("DimensionExhausted"):
        reasons.append(f"{metric['NodesExhausted']} node(s) are out of resources")
    for quota in metric.get("QuotaExhausted") or []:
        reasons.append(f"quota exhausted: {quota}")
    if not reasons:
        reasons.append(f"{evaluated} node(s) evaluated, none could run it")
    return f"task group '{group}' cannot be placed: " + "; ".join(reasons) + "."


def _signal_name(number: int) -> str:
    try:
        return f"{signals.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def outcome_from_allocation(alloc: dict, task_name: str, memory_mb: int | None) -> TaskOutcome:
    """Exit code, signal and OOM state from the task's events, in words for the user."""
    status = alloc.get("ClientStatus", "unknown")
    task_state = (alloc.get("TaskStates") or {}).get(task_name) or {}
    exit_code = signal = None
    oom = False
    messages = []
    for event in task_state.get("Events") or []:
        details = event.get("Details") or {}
        if event.get("Type") == "Terminated":
            exit_code = int(details.get("exit_code", event.get("ExitCode", 0)) or 0)
            signal = int(details.get("signal", event.get("Signal", 0)) or 0) or None
            oom = details.get("oom_killed") == "true"
        if event.get("Type") in FATAL_EVENTS:
            text = event.get("DisplayMessage") or event.get("DriverError") or event.get("Message")
            if text:
                messages.append(f"{event.get('Type')}: {text}")
    desired = alloc.get("DesiredStatus", "run")
    if status not in ("lost", "unknown") and desired in ("stop", "evict"):
        # Nomad stopped the allocation, so its exit code is not the task's verdict.
        reason = alloc.get("DesiredDescription") or "no reason given"
        if "migrat" in reason:
            status = "migrated"
            message = (
                f"Nomad stopped the task to migrate it off node {alloc.get('NodeName')} "
                f"({reason}; the node is draining)"
            )
        elif desired == "evict":
            status = "migrated"
            message = f"Nomad evicted the task from node {alloc.get('NodeName')} ({reason})"
        else:
            status = "stopped"
            message = f"the Nomad job was stopped from outside ({reason})"
    elif oom:
        message = (
            f"the task was killed for running out of memory (limit {memory_mb} MB); "
            "raise `memory` in @nomad or @resources"
        )
    elif status in ("lost", "unknown"):
        message = (
            f"the allocation is {status} (its node {alloc.get('NodeName')} went away or "
            "stopped heartbeating); the job was stopped so that no duplicate attempt can run"
        )
    elif signal == SIGKILL or (signal is None and exit_code == 128 + SIGKILL):
        message = (
            f"the task was killed by {_signal_name(SIGKILL)}. Nomad did not report an OOM "
            "kill, but SIGKILL is how the kernel ends a task that goes over its memory "
            f"limit ({memory_mb} MB); if the step needs more, raise `memory`"
        )
    elif signal:
        message = f"the task was killed by {_signal_name(signal)}"
    elif exit_code:
        message = f"the task exited with code {exit_code}"
    else:
        message = ""
    if messages and status != "complete":
        message = "; ".join(filter(None, [message, *messages]))
    return TaskOutcome(
        status=status,
        exit_code=exit_code,
        signal=signal,
        oom_killed=oom,
        message=message,
        alloc_id=alloc.get("ID"),
        node_name=alloc.get("NodeName"),
    )


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
    ):
        self.client = client
        self.job_id = job_id
        self.task_name = task_name
        self.echo = echo
        self.namespace = namespace
        self.memory_mb = memory_mb
        self.placement = placement
        self.state = _State()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nomad-job-tracker", daemon=True)

    def start(self) -> JobTracker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def is_running(self) -> bool:
        return self.state.started.is_set() and not self.state.finished.is_set()

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # surfaced to the caller through outcome()
            self.state.error = exc
            self.state.finished.set()

    def _follow(self) -> None:
        self.echo("Task is queued, waiting for placement...")
        placed = self._wait_for_placement()
        if placed is None:
            return
        allocs, index = placed
        reported: tuple = ()
        seen_events = 0
        while True:
            alloc = max(allocs, key=lambda a: a.get("CreateIndex", 0))
            if self.state.alloc is None or alloc["ID"] != self.state.alloc["ID"]:
                seen_events = 0
                self.echo(
                    f"Task placed on node {alloc.get('NodeName')} (allocation {alloc['ID'][:8]})."
                )
            self.state.alloc = alloc
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
                self.state.started.set()
            if alloc.get("ClientStatus") in TERMINAL_CLIENT_STATUS:
                self.state.finished.set()
                return
            while not self._stop.is_set():
                new_allocs, new_index = self.client.job_allocations(
                    self.job_id, index, WAIT_S, namespace=self.namespace
                )
                # An index going backwards means a leader change or restore: start over.
                changed = new_index != index
                index = new_index if new_index >= index else 0
                if changed and new_allocs:
                    allocs = new_allocs
                    break
            else:
                return

    def _wait_for_placement(self) -> tuple[list[dict], int] | None:
        """Follow the evaluations until an allocation exists; None if the job was stopped.

        An allocation is always written before its evaluation completes, so a
        blocking query on the evaluations wakes up for every placement, every
        failed placement and a deregistration.
        """
        index = 0
        while not self._stop.is_set():
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
                self.state.deregistered = True
                self.state.finished.set()
                return None
            diagnosis = describe_placement_failure(evaluations, self.memory_mb, self.placement)
            if diagnosis and diagnosis != self.state.diagnosis:
                self.state.diagnosis = diagnosis
                self.echo(f"Task is pending: {diagnosis}")
        return None

    def _report(self, alloc: dict) -> None:
        status = alloc.get("ClientStatus")
        short = alloc["ID"][:8]
        node = alloc.get("NodeName")
        if status == "running":
            self.echo(f"Task is running on node {node} (allocation {short}).")
        elif status in TERMINAL_CLIENT_STATUS:
            outcome = outcome_from_allocation(alloc, self.task_name, self.memory_mb)
            if outcome.succeeded:
                verdict = "finished with exit code 0"
            else:
                verdict = f"ended {outcome.status}: {outcome.message or 'no details'}"
            # Kept for the launcher to print after the task's last log lines.
            self.state.final_report = f"Task {verdict} (allocation {short} on node {node})."

    def _report_event(self, event: dict) -> None:
        if event.get("Type") in ROUTINE_EVENTS:
            return
        text = event.get("DisplayMessage") or event.get("Message") or ""
        self.echo(f"Nomad task event: {event.get('Type')}{': ' + text if text else ''}")

    def wait_started(self, pending_timeout: float | None) -> bool:
        """True once the task runs or the job ends; False if still pending after the timeout."""
        deadline = None if pending_timeout is None else time.monotonic() + pending_timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self.state.started.wait(timeout=1 if remaining is None else min(1, remaining)):
                return True
            if self.state.finished.is_set():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def wait_finished(self, timeout: float | None) -> bool:
        return self.state.finished.wait(timeout=timeout)

    def outcome(self) -> TaskOutcome:
        if self.state.error is not None:
            raise self.state.error
        if self.state.deregistered and self.state.alloc is None:
            return TaskOutcome(
                status="stopped", message="the Nomad job was stopped before it was placed"
            )
        return outcome_from_allocation(self.state.alloc or {}, self.task_name, self.memory_mb)
