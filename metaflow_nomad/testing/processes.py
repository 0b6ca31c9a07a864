"""The server processes the suite starts (agents, the registry, dockerd, services):
frozen, thawed and stopped the same way."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


class ServerProcess:
    """A server the suite started as ``self.process``; ``pause`` and ``resume`` are
    how a test makes it hang (a frozen machine, a stuck daemon) and come back."""

    process: subprocess.Popen | None

    def pause(self) -> None:
        """SIGSTOP the process alone, not its group: connections are accepted by the
        kernel, then hang; what it started (an agent's tasks) carries on."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


def stop_process(
    process: subprocess.Popen, timeout: float, sig: int = signal.SIGTERM, group: bool = False
) -> None:
    """Stop ``process`` if it still runs: ``sig``, then SIGKILL (to its whole process
    group with ``group``) if it has not exited after ``timeout`` seconds.

    A paused process is thawed first, or it could not act on ``sig``.
    """
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait()
