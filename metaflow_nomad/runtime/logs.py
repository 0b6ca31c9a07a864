"""Log tailing for the launcher.

Task output is captured by Metaflow's mflog into the datastore (so ``flow.py
logs`` works); the launcher tails it from there while the task runs.  Metaflow
has tailers for S3, Azure and GCS; ``LocalTail`` adds the shared-filesystem case.
Nomad's own alloc logs are a fallback shown when a task fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator


class LocalTail:
    """Yields complete new lines of a log file that another process rewrites."""

    def __init__(self, path: str):
        self.path = path
        self._offset = 0
        self._partial = b""

    def __iter__(self) -> Iterator[bytes]:
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < self._offset:  # rewritten shorter: start again
                    self._offset, self._partial = 0, b""
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            yield line + b"\n"


def get_tailer(log_url: str, datastore_type: str):
    if datastore_type == "local":
        return LocalTail(log_url)
    from metaflow.mflog import get_log_tailer

    return get_log_tailer(log_url, datastore_type)


def raw_log_tail(client, alloc_id: str, task_name: str, tail_bytes: int = 4096) -> str:
    """The end of the task's raw stdout and stderr, from Nomad's alloc logs API."""
    parts = []
    for stream in ("stdout", "stderr"):
        text = client.alloc_logs(alloc_id, task_name, stream, tail_bytes)
        if text.strip():
            parts.append(f"--- last {tail_bytes} bytes of {stream} (nomad alloc logs) ---\n{text}")
    return "\n".join(parts)


def stream_logs(
    stdout_tail,
    stderr_tail,
    echo,
    wait_finished: Callable[[float], bool],
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Echo new task log lines until the task ends (or ``deadline``), then drain once.

    Metaflow's ``tail_logs`` sleeps between polls and cannot be woken; waiting on
    the tracker (``wait_finished``) instead ends the stream as soon as the task
    does, which is most of what a short step's launcher waits for.
    """
    from metaflow.mflog import refine, update_delay

    started = clock()
    while True:
        delay = min(update_delay(clock() - started), 5.0)
        done = wait_finished(delay)
        for tail, stream in ((stdout_tail, "stdout"), (stderr_tail, "stderr")):
            _echo_new_lines(tail, stream, echo, refine)
        if done or clock() > deadline:
            return


def _echo_new_lines(tail, stream: str, echo, refine) -> None:
    try:
        for line in tail:
            echo(
                refine(line, prefix=b"").strip().decode("utf-8", errors="replace"),
                stream,
                no_bold=True,
            )
    except Exception as exc:  # any datastore client error; reported, and tailing goes on
        echo(f"[ temporary error in fetching logs: {exc} ]", "stderr")
