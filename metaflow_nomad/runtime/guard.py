"""The no-orphans guard: a submitted job never outlives its launcher."""

from __future__ import annotations

import atexit
import signal
import sys
from collections.abc import Callable

from metaflow_nomad.errors import NomadException, NomadJobKilled


class JobGuard:
    """Stops the watched job on SIGINT, SIGTERM, SIGHUP, crash or exit.

    Python skips atexit on SIGTERM, and Metaflow's runtime SIGKILLs trampolines 5 s
    after Ctrl-C, so the handlers stop the job first and exit right after.  If the
    runtime itself dies silently (kill -9, the OOM killer), Linux sends SIGTERM.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, client, echo: Callable[[str], None]):
        self._client = client
        self._echo = echo
        self._job_id: str | None = None
        self._namespace: str | None = None
        self._released = False
        self._previous_handlers: dict = {}

    def __enter__(self) -> JobGuard:
        for sig in self.SIGNALS:
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        atexit.register(self.stop)
        _signal_when_parent_dies(signal.SIGTERM)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        atexit.unregister(self.stop)

    def watch(self, job_id: str, namespace: str | None) -> None:
        """From now on, ``job_id`` is stopped when the launcher ends without a verdict.

        Called before the job is registered, so that a signal during registration
        still stops it (deregistering an unknown ID is harmless).
        """
        self._job_id = job_id
        self._namespace = namespace

    def release(self) -> None:
        """The job ended by itself: nothing is left to stop."""
        self._released = True

    def _on_signal(self, signum, frame):
        name = signal.Signals(signum).name
        _, said = self.stop(reason=f"received {name}", report=False)
        # One line for the user, printed by whoever catches this.
        raise NomadJobKilled(said or f"The launcher received {name} before submitting its job.")

    def stop(
        self, reason: str = "the launcher is exiting", report: bool = True
    ) -> tuple[bool, str | None]:
        """Stop the watched job (once): whether that worked, and the line saying so
        (echoed unless ``report`` is False; None when there was nothing to stop)."""
        if self._job_id is None or self._released:
            return True, None
        self._released = True
        try:
            self._client.deregister(self._job_id, namespace=self._namespace, timeout=3)
            stopped, said = True, f"Stopped Nomad job {self._job_id} ({reason})."
        except NomadException as exc:
            stopped, said = False, f"Could not stop Nomad job {self._job_id}: {exc}"
        if report:
            self._echo(said)
        return stopped, said


def _signal_when_parent_dies(signum: int) -> None:
    """Ask Linux for ``signum`` when the runtime that started us exits (PR_SET_PDEATHSIG).

    A runtime killed with SIGKILL runs no cleanup at all, so this is the only
    automatic way its jobs get stopped; elsewhere ``nomad kill`` is the remedy.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signum))
