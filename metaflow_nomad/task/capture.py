"""The one log-capture process of a Nomad task: ``python -m metaflow_nomad.task.capture CMD...``.

It starts the step (``bash -c '<step>'``) with its stdout and stderr on pipes
before it imports anything else, then hands it to ``task.log_capture``: every
task waits for whatever runs before its step, and those imports are about half
of this process's start-up.  A stop signal (Nomad's kill, forwarded by the
bootstrap to the whole process group) ends the step; this process ignores it,
so that it can still save the logs of a killed task, and exits with the step's
status.  Before it starts the step, a task with a remote datastore claims its
attempt (``task.attempt_claim``): a replacement allocation Nomad placed for a
lost one exits without running the step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

# ``--claim URL`` before the step's command: claim the attempt first (S3 datastore).
CLAIM_OPTION = "--claim"

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _restore_stop_signals() -> None:
    """In the step, before it execs: the default handlers, then the signals held back
    since the fork are delivered (and end it)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def start_step(argv: list[str]) -> subprocess.Popen:
    """Start the step with its output on pipes; from then on stop signals are ignored
    here (they reach the step: they are sent to the whole process group).

    No stop signal is lost while the step starts: they are blocked until the step
    exists and this process ignores them.  One that arrived after the fork reaches
    the step when it unblocks them; one that came before it existed reached only
    this process, so it is passed on to the group.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        step = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_restore_stop_signals,
        )
        held = signal.sigpending() & set(STOP_SIGNALS)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    for sig in sorted(held):
        os.killpg(os.getpgrp(), sig)
    return step


def main(argv: list[str]) -> int:
    if argv[:1] == [CLAIM_OPTION]:
        from metaflow_nomad.task.attempt_claim import claim_before_step

        refused = claim_before_step(argv[1], os.environ.get("NOMAD_ALLOC_ID"))
        if refused is not None:
            return refused
        argv = argv[2:]
    step = start_step(argv)
    from metaflow_nomad.task.log_capture import capture

    return capture(step)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
