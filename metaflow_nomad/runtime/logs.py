"""Log tailing for the launcher.

The task's capture process writes its output into the datastore in mflog's
format (so ``flow.py logs`` works); the launcher tails it from there while the
task runs.  Metaflow
has tailers for S3, Azure and GCS; ``LocalTail`` adds the shared-filesystem case.
Nomad's own alloc logs are a fallback shown when a task fails, and only for what
they add: the lines the stream already showed are not repeated.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator

from metaflow_nomad.mflog_lines import message, poll_delay

# Lines of the task's bootstrap that speak to the user (see render.bootstrap).
BOOTSTRAP_MARKER = "metaflow-nomad: "
# What save_logs prints when all is well: never news.
ROUTINE_RAW_LINES = ("[save_logs] upload_start", "[save_logs] upload_success")


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


class StreamedLines:
    """What the log stream showed (its recent lines) and what it held back."""

    def __init__(self, keep: int = 2000):
        self._recent: deque[str] = deque(maxlen=keep)
        self.held_back = 0

    def add(self, text: str) -> None:
        self._recent.append(text.strip())

    def shown(self) -> set[str]:
        return set(self._recent)


def raw_log_tails(client, alloc_id: str, task_name: str, tail_bytes: int = 4096) -> dict:
    """The end of the task's raw stdout and stderr, from Nomad's alloc logs API.

    A tail cut at ``tail_bytes`` starts mid-line; that fragment is dropped.
    """
    tails = {}
    for stream in ("stdout", "stderr"):
        text = client.alloc_logs(alloc_id, task_name, stream, tail_bytes)
        lines = text.splitlines()
        if len(text.encode()) >= tail_bytes and lines:
            lines = lines[1:]
        tails[stream] = lines
    return tails


def unseen_raw_lines(tails: dict, shown: set[str]) -> str:
    """Nomad's raw output that the stream did not show, one block per stream ('' if none).

    A traceback that was streamed from the datastore is in the raw output too;
    printing it twice only buries the verdict.  The bootstrap's own lines are left
    out as well: the verdict quotes them (``bootstrap_failure``).
    """
    skipped = (*ROUTINE_RAW_LINES, BOOTSTRAP_MARKER)
    parts = []
    for stream, lines in tails.items():
        new = [
            line
            for line in lines
            if line.strip() and line.strip() not in shown and not line.startswith(skipped)
        ]
        if new:
            header = f"--- {stream} from nomad alloc logs, not in the task's log above ---"
            parts.append("\n".join([header, *new]))
    return "\n".join(parts)


def bootstrap_failure(tails: dict) -> str | None:
    """The bootstrap's own account of why the task could not start its step."""
    for line in tails.get("stderr", []):
        if line.startswith(BOOTSTRAP_MARKER):
            return line[len(BOOTSTRAP_MARKER) :].strip()
    return None


def stream_logs(
    stdout_tail,
    stderr_tail,
    echo,
    wait_finished: Callable[[float], bool],
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    hold_back: Callable[[], bool] = lambda: False,
) -> StreamedLines:
    """Echo new task log lines until the task ends (or ``deadline``), then drain once.

    Metaflow's ``tail_logs`` sleeps between polls and cannot be woken; waiting on
    the tracker (``wait_finished``) instead ends the stream as soon as the task
    does, which is most of what a short step's launcher waits for.  Once
    ``hold_back()`` is true (Nomad is stopping the task) lines are counted, not
    shown: what a stopped task prints is its interrupt tracebacks, and they stay
    in ``python flow.py logs``.
    """
    streamed = StreamedLines()
    started = clock()
    while True:
        delay = min(poll_delay(clock() - started), 5.0)
        done = wait_finished(delay)
        for tail, stream in ((stdout_tail, "stdout"), (stderr_tail, "stderr")):
            _echo_new_lines(tail, stream, echo, streamed, hold_back)
        if done or clock() > deadline:
            return streamed


def _echo_new_lines(tail, stream: str, echo, streamed: StreamedLines, hold_back) -> None:
    """Each new line goes to the runtime whole, mflog header included: Metaflow's
    runtime parses it and shows the line with the task's own timestamp."""
    try:
        for line in tail:
            if hold_back():
                streamed.held_back += 1
                continue
            echo(line.strip().decode("utf-8", errors="replace"), stream)
            streamed.add(message(line).decode("utf-8", errors="replace"))
    except Exception as exc:  # any datastore client error; reported, and tailing goes on
        echo(f"[ temporary error in fetching logs: {exc} ]", "stderr")
