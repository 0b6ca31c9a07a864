"""One task attempt on Nomad, from its plan to a verdict.

``TaskLauncher`` registers the plan's parsed job (or dispatches a deployed
step job), waits for its placement, streams its logs while it runs and turns
how it ended into success or an exception that Metaflow's runtime understands:
``NomadJobFailed`` is retried by ``@retry``, ``NomadJobKilled`` is not.  It owns
the no-orphans guard, so no path out of it leaves the job running.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from metaflow_nomad.api.ui_links import allocation_url
from metaflow_nomad.errors import NomadJobFailed, NomadJobKilled
from metaflow_nomad.model import COMMAND_NOT_FOUND, TASK_NAME, TaskLogs
from metaflow_nomad.runtime.gang import GangSpec
from metaflow_nomad.runtime.guard import JobGuard
from metaflow_nomad.runtime.logs import (
    StreamedLines,
    bootstrap_failure,
    get_tailer,
    raw_log_tails,
    stream_logs,
    unseen_raw_lines,
)
from metaflow_nomad.runtime.outcome import TaskOutcome, describe_command_not_found
from metaflow_nomad.runtime.plan import AttemptPlan
from metaflow_nomad.runtime.task_metadata import record_task_metadata
from metaflow_nomad.runtime.tracking import JobTracker, TaskEnd, end_report
from metaflow_nomad.runtime.usage import Requested, UsageSampler

# The task metadata field of the allocation's page in Nomad's UI.
ALLOC_URL_FIELD = "nomad-alloc-url"

Echo = Callable[[str], None]
# How long a failed step's launcher waits for Nomad's account of why it failed.
NOMAD_ACCOUNT_WAIT_S = 60.0
# Said of a failure unless the node's configuration refused the task, a command was
# not found (exit status 127) or the bootstrap said why it could not start the step.
TRANSIENT_ADVICE = " This could be a transient error. Use @retry to retry."


class TaskLauncher:
    """Submit (or dispatch) -> wait for placement -> stream -> verdict, for one job."""

    def __init__(
        self,
        client,
        plan: AttemptPlan,
        echo: Echo,
        echo_log: Callable[..., None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client
        self._plan = plan
        self._echo = echo
        self._echo_log = echo_log
        self._clock = clock
        self._guard = JobGuard(client, echo)
        self._namespace: str | None = plan.namespace
        self._job_id: str = plan.job_id

    def __enter__(self) -> TaskLauncher:
        self._guard.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._guard.__exit__(*exc)

    def start(self) -> None:
        """Register the plan's job, or dispatch its deployed step job."""
        if self._plan.dispatch is not None:
            self._dispatch()
        else:
            self._submit()

    def _submit(self) -> None:
        """Register the job (parsed by the cluster when it was planned) with its HCL
        source, so that the Nomad UI and `nomad job inspect` show what was rendered."""
        plan = self._plan
        self._echo(
            f"Submitting job {self._job_id} ({plan.description}, template {plan.template_name})."
        )
        self._guard.watch(self._job_id, self._namespace)
        self._client.register(plan.job, source=plan.hcl)

    def _dispatch(self) -> None:
        """Dispatch a deployed flow's step job for this attempt; the dispatched child
        is the job followed and guarded from here on."""
        dispatch = self._plan.dispatch
        self._echo(f"Dispatching step job {dispatch.parent_job_id} ({self._plan.description}).")
        self._job_id = self._client.dispatch(
            dispatch.parent_job_id, dispatch.meta, self._namespace, dispatch.token
        )
        self._guard.watch(self._job_id, self._namespace)
        self._echo(f"Dispatched job {self._job_id}.")

    def abandon(self, reason: str) -> None:
        """Make sure the job is gone after a failed submission: usually nothing was
        registered, so there is nothing to report (a failure to stop is still said)."""
        stopped, said = self._guard.stop(reason=reason, report=False)
        if not stopped:
            self._echo(said)

    def follow(self, logs: TaskLogs) -> None:
        """Follow the job to its end while streaming its logs; raise unless it succeeded.

        The run time limit (from @timeout) is enforced inside the task; the launcher
        is only the backstop for a task that cannot stop itself, so it counts from
        the moment the task runs and allows some grace for the task's own timeout.
        """
        tracker = self._start_tracker()
        end = TaskEnd(tracker, logs.exit_file, clock=self._clock)
        if not end.wait_started(self._plan.pending_timeout):
            self._fail_pending(tracker)
        sampler = self._start_sampler(tracker)
        try:
            self._follow_started(tracker, end, logs)
        finally:
            self._record(tracker, sampler)

    def _follow_started(self, tracker: JobTracker, end: TaskEnd, logs: TaskLogs) -> None:
        run_time_limit = self._plan.run_time_limit
        grace = min(60.0, 5 + run_time_limit * 0.1)
        streamed = stream_logs(
            get_tailer(logs.stdout_url, logs.datastore_type),
            get_tailer(logs.stderr_url, logs.datastore_type),
            self._echo_log,
            end.wait,
            self._clock() + run_time_limit + grace,
            clock=self._clock,
            hold_back=tracker.stopping,
        )
        if end.succeeded_before_nomad_said():
            # The step and its capture are done; Nomad marks the job complete on
            # its own a moment later, so there is nothing to stop.
            self._wait_for_gang(tracker, run_time_limit + grace)
            if tracker.gang_failure is None:
                self._echo(end_report(tracker.allocation, "finished with exit code 0"))
                self._guard.release()
                return
        if end.exit_status() is not None:
            tracker.wait_finished(NOMAD_ACCOUNT_WAIT_S)
        if not tracker.finished:
            self._guard.stop(reason="run time limit")
            raise NomadJobFailed(
                f"The task ran past its time limit of {run_time_limit}s (@timeout) and did "
                f"not stop itself within {grace:g}s more, so the launcher stopped job "
                f"{self._job_id}."
            )
        if tracker.outcome().succeeded:
            self._wait_for_gang(tracker, run_time_limit + grace)
        self._give_verdict(tracker.outcome(), tracker.final_report, streamed)

    def _wait_for_gang(self, tracker: JobTracker, timeout: float) -> None:
        """A gang's control has succeeded: the attempt is done once every other node
        is (the join reads their artifacts), or failed once one of them fails."""
        if tracker.wait_gang(0):
            return
        self._echo(
            f"The control task finished; waiting for the gang's other "
            f"{self._plan.num_nodes - 1} node(s)."
        )
        if not tracker.wait_gang(timeout):
            self._guard.stop(reason="run time limit")
            raise NomadJobFailed(
                f"The gang's workers ran {timeout:g}s past the control's end (past the "
                f"step's time limit), so the launcher stopped job {self._job_id}."
            )

    def _start_tracker(self) -> JobTracker:
        return JobTracker(
            self._client,
            self._job_id,
            TASK_NAME,
            self._echo,
            namespace=self._namespace,
            memory_mb=self._plan.memory_mb,
            placement=self._plan.placement,
            clock=self._clock,
            alloc_url=self._alloc_url if self._plan.ui_url else None,
            gang=self._gang(),
        ).start()

    def _gang(self) -> GangSpec | None:
        plan = self._plan
        return GangSpec(plan.num_nodes, plan.identity.task_id) if plan.num_nodes > 1 else None

    def _alloc_url(self, alloc_id: str) -> str:
        return allocation_url(self._plan.ui_url, alloc_id, self._namespace)

    def _start_sampler(self, tracker: JobTracker) -> UsageSampler | None:
        """Sample the allocation's usage while it runs (none known: no samples)."""
        if not self._plan.sample_usage:
            return None
        alloc = tracker.allocation
        if alloc is None:
            return UsageSampler(lambda: None, clock=self._clock)
        alloc_id = alloc["ID"]
        return UsageSampler(
            lambda: self._client.allocation_stats(alloc_id), clock=self._clock
        ).start()

    def _record(self, tracker: JobTracker, sampler: UsageSampler | None) -> None:
        """The task's end: its usage line, and the task metadata the launcher records."""
        plan = self._plan
        fields: dict[str, str] = {}
        if sampler is not None:
            summary = sampler.stop()
            requested = Requested(memory_mb=plan.memory_mb, cpu_cores=plan.cpu_cores)
            self._echo(summary.line(requested))
            fields.update(summary.metadata(requested))
        alloc = tracker.allocation
        if alloc is not None and plan.ui_url:
            fields[ALLOC_URL_FIELD] = self._alloc_url(alloc["ID"])
        record_task_metadata(plan, fields, self._echo)

    def _fail_pending(self, tracker: JobTracker) -> None:
        reason = tracker.pending_reason or "the scheduler has not placed it yet"
        self._guard.stop(reason="pending timeout")
        raise NomadJobFailed(
            f"The task was still pending after {self._plan.pending_timeout:g}s "
            f"(pending_timeout), so job {self._job_id} was stopped: {reason}"
        )

    def _give_verdict(
        self, outcome: TaskOutcome, final_report: str | None, streamed: StreamedLines
    ) -> None:
        job_id = self._job_id
        if outcome.stopped_from_outside:
            # Nomad already stopped it; one line says so (the task's interrupt
            # tracebacks were held back and stay in `logs`).
            self._guard.release()
            raise NomadJobKilled(
                f"Task stopped: {outcome.message}, e.g. by `nomad job stop`, the flow's "
                f"`nomad kill` or the Nomad UI. Job {job_id} is not retried." + _held_back(streamed)
            )
        if outcome.succeeded:
            if final_report:
                self._echo(final_report)
            self._guard.release()
            return
        if outcome.status != "migrated" and final_report:
            self._echo(final_report)
        self._guard.stop(reason=f"task {outcome.status}")
        reason = outcome.message or outcome.status
        advice = "" if outcome.permanent else TRANSIENT_ADVICE
        if outcome.alloc_id and outcome.status != "migrated":
            tails = raw_log_tails(self._client, outcome.alloc_id, TASK_NAME)
            unseen = unseen_raw_lines(tails, streamed.shown())
            if unseen:
                self._echo(unseen)
            setup = bootstrap_failure(tails)
            if setup:
                # The bootstrap said why and what to check: that is the advice.
                reason, advice = f"{reason}: {setup.rstrip('.')}", ""
            elif outcome.exit_code == COMMAND_NOT_FOUND:
                reason = describe_command_not_found(tails.get("stderr", []), outcome.node_name)
        allocation = (outcome.alloc_id or "-")[:8]
        if outcome.alloc_id and self._plan.ui_url:
            allocation += f", {self._alloc_url(outcome.alloc_id)}"
        raise NomadJobFailed(
            f"Step failed on Nomad (job {self._job_id}, allocation {allocation}): "
            f"{reason}.{_held_back(streamed)}{advice}"
        )


def _held_back(streamed: StreamedLines) -> str:
    if not streamed.held_back:
        return ""
    return (
        f" Its last {streamed.held_back} log line(s), written while Nomad stopped it, are "
        "kept in the task's log (the `logs` command)."
    )
