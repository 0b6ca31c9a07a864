"""Metaflow's mflog line format, for the two processes that must not load Metaflow.

The task's capture process (``task.capture``) writes the lines that ``flow.py
logs`` reads, and the per-attempt launcher (``runtime.attempt``) reads them back
while the task runs: ``[MFLOG|0|<UTC time>Z|<source>|<line id>]<message>``.
Importing Metaflow for this would cost each of those processes about 0.25 s of
CPU and 30 MB per task, so the format is written here, and
``tests/unit/test_mflog_lines.py`` holds it to Metaflow's own parser.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone

VERSION = b"0"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
_STRUCTURED = re.compile(rb"(?:\[!)?\[MFLOG\|0\|.+?Z\|.+?\|.+?\](.*)")


def decorate(source: bytes, line: bytes, now: datetime | None = None) -> bytes:
    """One captured line in mflog's format (``metaflow.mflog.mflog.decorate``)."""
    stamp = (now or datetime.now(timezone.utc)).strftime(TIME_FORMAT).encode()
    line_id = str(uuid.uuid4()).encode()
    return b"".join((b"[MFLOG|", VERSION, b"|", stamp, b"Z|", source, b"|", line_id, b"]", line))


def message(line: bytes) -> bytes:
    """The text of a line without its mflog header or line end, as Metaflow's parser
    gives it (unstructured lines as they are)."""
    match = _STRUCTURED.match(line)
    return match.group(1) if match else line


def poll_delay(elapsed: float) -> float:
    """How often to upload, or look for, new log lines ``elapsed`` seconds into a
    task: every 0.25 s for the first ten minutes (so that lines stream), then
    backing off linearly to every 30 s from the first hour."""
    if elapsed < 600:
        return 0.25
    return min(30.0, 0.25 + (elapsed - 600) / 3000 * 29.75)
