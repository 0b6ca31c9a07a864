"""Follow one submitted job to its end, and explain what happens on the way.

A watcher thread follows the job's allocations with blocking queries (no tight
polling, no fixed sleeps) and reports each change as it happens: queued, placed
on a node, started, finished.  When nothing can be placed it reads the
evaluation's failed-placement metrics and says why in plain words.  The final
``TaskOutcome`` carries the exit code, signal and OOM state from task events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import NomadClientError

TERMINAL_CLIENT_STATUS = {"complete", "failed", "lost", "unknown"}
FIRST_WAIT_S = 1.0
MAX_WAIT_S = 30.0


@dataclass
class TaskOutcome:
    status: str  # complete | failed | lost | unknown | pending_timeout | timeout | stopped
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    message: str = ""
    alloc_id: str | None = None
    node_name: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "complete" and (self.exit_code or 0) == 0


@dataclass
class _State:
    alloc: dict | None = None
    diagnosis: str | None = None
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def describe_placement_failure(evaluations: list[dict], memory_mb: int | None = None) -> str | None:
    """Plain-words reason from the newest evaluation's FailedTGAllocs metrics."""
    for evaluation in sorted(evaluations, key=lambda e: e.get("CreateIndex", 0), reverse=True):
        failed = evaluation.get("FailedTGAllocs") or {}
        for group, metric in failed.items():
            return _describe_metric(group, metric, memory_mb)
        if evaluation.get("Status") == "failed":
            return (
                f"the scheduler failed to evaluate the job: {evaluation.get('StatusDescription')}"
            )
    return None


def _describe_metric(group: str, metric: dict, memory_mb: int | None) -> str:
    evaluated = metric.get("NodesEvaluated", 0)
    reasons = []
    if evaluated == 0:
        pool = metric.get("NodePool") or "the requested node pool"
        reasons.append(
            "no client node is in the requested datacenters / node pool "
            f"({pool}); check `datacenters`, `node_pool` and `region`"
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
        reasons.append(f"{count} node(s) do not have enough {dimension}{hint}")
    if metric.get("NodesExhausted") and not metric.get("DimensionExhausted"):
        reasons.append(f"{metric['NodesExhausted']} node(s) are out of resources")
    for quota in metric.get("QuotaExhausted") or []:
        reasons.append(f"quota exhausted: {quota}")
    if not reasons:
        reasons.append(f"{evaluated} node(s) evaluated, none could run it")
    return f"task group '{group}' cannot be placed: " + "; ".join(reasons) + "."


def outcome_from_allocation(alloc: dict, task_name: str, memory_mb: int | None) -> TaskOutcome:
    """Exit code, signal and OOM state from the task's events."""
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
        if details.get("fails_task") == "true" or event.get("Type") in (
            "Driver Failure",
            "Setup Failure",
            "Failed Validation",
            "Failed Artifact Download",
        ):
            text = event.get("DisplayMessage") or event.get("DriverError") or event.get("Message")
            if text:
                messages.append(f"{event.get('Type')}: {text}")
    if oom:
        message = f"the task was killed for running out of memory (limit {memory_mb} MB)"
    elif status in ("lost", "unknown"):
        message = (
            f"the allocation is {status} (its node {alloc.get('NodeName')} went away or was "
            "drained); the job was stopped so that no duplicate attempt can run"
        )
    elif signal:
        message = f"the task was killed by signal {signal}"
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
    """Watches one job's allocations in a background thread."""

    def __init__(
        self,
        client,
        job_id: str,
        task_name: str,
        echo: Callable[[str], None],
        namespace: str | None = None,
        memory_mb: int | None = None,
    ):
        self.client = client
        self.job_id = job_id
        self.task_name = task_name
        self.echo = echo
        self.namespace = namespace
        self.memory_mb = memory_mb
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
        except BaseException as exc:  # surfaced to the caller through wait()
            self.state.error = exc
            self.state.finished.set()

    def _follow(self) -> None:
        index = 0
        wait_s = FIRST_WAIT_S
        reported: tuple = ()
        self.echo("Task is queued, waiting for placement...")
        while not self._stop.is_set():
            allocs, new_index = self.client.job_allocations(
                self.job_id, index, wait_s, namespace=self.namespace
            )
            # An index going backwards means a leader change or restore: start over.
            index = new_index if new_index >= index else 0
            if not allocs:
                self._diagnose_pending()
                wait_s = min(MAX_WAIT_S, wait_s * 2)
                continue
            alloc = max(allocs, key=lambda a: a.get("CreateIndex", 0))
            self.state.alloc = alloc
            task_state = (alloc.get("TaskStates") or {}).get(self.task_name) or {}
            key = (alloc["ID"], alloc.get("ClientStatus"), task_state.get("State"))
            if key != reported:
                reported = key
                self._report(alloc, task_state)
            if task_state.get("State") in ("running", "dead") or alloc.get("ClientStatus") in (
                "running",
                *TERMINAL_CLIENT_STATUS,
            ):
                self.state.started.set()
            if alloc.get("ClientStatus") in TERMINAL_CLIENT_STATUS:
                self.state.finished.set()
                return
            wait_s = MAX_WAIT_S

    def _report(self, alloc: dict, task_state: dict) -> None:
        status = alloc.get("ClientStatus")
        short = alloc["ID"][:8]
        if status == "pending" and task_state.get("State") != "running":
            self.echo(f"Task placed on node {alloc.get('NodeName')} (allocation {short}).")
        elif status == "running":
            self.echo(f"Task is running on node {alloc.get('NodeName')} (allocation {short}).")
        elif status in TERMINAL_CLIENT_STATUS:
            self.echo(f"Allocation {short} is {status}.")

    def _diagnose_pending(self) -> None:
        try:
            evaluations = self.client.job_evaluations(self.job_id, namespace=self.namespace)
        except NomadClientError:
            return
        diagnosis = describe_placement_failure(evaluations, self.memory_mb)
        if diagnosis and diagnosis != self.state.diagnosis:
            self.state.diagnosis = diagnosis
            self.echo(f"Task is pending: {diagnosis}")

    def wait_started(self, pending_timeout: float | None) -> bool:
        """True once the task runs or ends; False if still pending after the timeout."""
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
        return outcome_from_allocation(self.state.alloc or {}, self.task_name, self.memory_mb)
