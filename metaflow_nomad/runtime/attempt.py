"""The per-attempt launcher: ``python -m metaflow_nomad.runtime.attempt PLAN_FILE``.

Metaflow's runtime starts one of these for every task attempt of a ``@nomad``
step, in place of a second copy of the flow's CLI (``plugin.attempt_planning``
rewrites the command line).  Everything that needs Metaflow or the flow (the
rendered job, the parsed Job, the log locations, the dispatch of a deployed
run) was decided in the runtime and written to the plan; this process only
talks to Nomad, streams the task's lines and exits with the code the runtime
expects.  It never imports Metaflow, so it starts in a fraction of the time
and memory of the flow's CLI.
"""

from __future__ import annotations

import argparse
import fcntl
import sys
import termios
import time
from typing import NoReturn

from metaflow_nomad.errors import (
    NomadClientError,
    NomadException,
    NomadJobKilled,
    one_line_error,
)
from metaflow_nomad.runtime.plan import AttemptPlan, read_plan

# metaflow.exception.METAFLOW_EXIT_DISALLOW_RETRY: the runtime does not retry.
EXIT_DISALLOW_RETRY = 202


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metaflow_nomad.runtime.attempt")
    parser.add_argument("plan_file")
    # Metaflow's runtime appends its config-values file to every task's command
    # line; the step in the task reads its configs from the code package.  A
    # decorator whose runtime_step_cli runs after @nomad's may add step options too
    # (@parallel's --num-parallel): they are in the plan already, and ignored here.
    parser.add_argument("--local-config-file", default=None)
    args, _ = parser.parse_known_args(argv)
    plan = read_plan(args.plan_file)
    echo = _echo(plan.label)
    if plan.error:
        echo(plan.error)
        return EXIT_DISALLOW_RETRY
    try:
        return run_attempt(plan, echo)
    except NomadException as exc:
        # The task failed on Nomad (retryable), or a cluster error after it was
        # submitted: Metaflow's own layout for an error, without a traceback.
        sys.stderr.write(f"    {exc.headline}:\n    {exc.message}\n\n")
        return 1


def run_attempt(plan: AttemptPlan, echo) -> int:
    from metaflow_nomad.api.client import default_client
    from metaflow_nomad.runtime.launcher import TaskLauncher

    client = default_client()
    if plan.identity.attempt:
        _prepare_retry(client, plan, echo)
    with TaskLauncher(client, plan, echo, _echo_log) as launcher:
        try:
            launcher.start()
        except (NomadException, OSError) as exc:
            launcher.abandon(reason="submission failed")
            # Nothing ran, so there is no task metadata to sync back.
            _give_up(echo, exc)
        try:
            launcher.follow(plan.logs)
        except NomadJobKilled as exc:
            echo(str(exc))
            return EXIT_DISALLOW_RETRY
        finally:
            if plan.metadata_sync_root:
                from metaflow_nomad.runtime.metadata_sync import bring_task_metadata_home

                bring_task_metadata_home(
                    plan.logs.datastore_type, plan.metadata_sync_root, plan.identity
                )
    return 0


def _give_up(echo, exc: Exception) -> NoReturn:
    """A user or cluster error before the task ran: what went wrong and what to do,
    and an exit code that tells the runtime not to retry (the same settings would
    fail the same way)."""
    echo(one_line_error(exc))
    sys.exit(EXIT_DISALLOW_RETRY)


def _prepare_retry(client, plan: AttemptPlan, echo) -> None:
    """Stop jobs of earlier attempts whose launcher died, then honour @retry's pause."""
    from metaflow_nomad.api.lookup import stop_previous_attempts

    try:
        stop_previous_attempts(client, plan.identity, echo)
    except NomadClientError as exc:
        echo(f"Could not check the earlier attempts' jobs: {exc}")
    if plan.minutes_between_retries:
        echo(
            f"Sleeping {plan.minutes_between_retries} minute(s) before attempt "
            f"{plan.identity.attempt}."
        )
        time.sleep(plan.minutes_between_retries * 60)


def _echo(label: str):
    """Launcher messages carry the task's label; the task's own lines do not."""

    def echo(msg: str) -> None:
        _echo_log(f"[nomad {label}] {msg}")

    return echo


def _echo_log(line: str, stream: str = "stderr") -> None:
    """One line to the runtime, after every line before it on either pipe."""
    out = sys.stderr if stream == "stderr" else sys.stdout
    write_line(out, line, drained=(sys.stdout, sys.stderr))


def write_line(out, line: str, patience: float = 0.25, drained=None) -> None:
    """Write one line to the runtime once it has read the lines before it.

    Metaflow's runtime reads one line per wake-up of its poll loop through a
    buffered reader: two lines that reach its pipe together are read at once,
    and the second is shown only when more output arrives (a streamed line
    could wait for the end of the task).  And it reads stdout and stderr as two
    pipes, in whichever order its poll lists them, so a line on one could
    overtake an earlier line on the other (the task's last line after the
    launcher's "finished").  So each line waits, up to ``patience``, until
    every pipe in ``drained`` (by default ``out`` alone) is empty.  Not a pipe
    (a terminal, a file): nothing to wait for.
    """
    deadline = time.monotonic() + patience
    for pending in drained or (out,):
        try:
            fd = pending.fileno()
            while _unread_bytes(fd) and time.monotonic() < deadline:
                time.sleep(0.001)
        except OSError:
            pass
    out.write(line + "\n")
    out.flush()


def _unread_bytes(fd: int) -> int:
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)


if __name__ == "__main__":
    sys.exit(main())
