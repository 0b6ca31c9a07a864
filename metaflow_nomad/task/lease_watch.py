"""In the task: stop the step when the run's launcher stops renewing its lease.

The launcher side is ``plugin.run_lease``.  The task counts on its own monotonic
clock from the last renewal it saw change, so the launcher's and the node's
wall clocks need not agree.  A lease that cannot be read (the datastore is
unreachable) counts as not renewed: a task that cannot reach its run's datastore
for the whole timeout is stopped too.  A task whose run has no lease (started by
an older launcher) is not watched.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable

from metaflow_nomad.model import LEASE_ENV, LEASE_TIMEOUT_ENV

RENEWALS_PER_TIMEOUT = 6

Read = Callable[[], "bytes | None"]


def read_lease(url: str) -> bytes | None:
    """The lease's bytes, or None if it cannot be read right now."""
    try:
        if url.startswith("s3://"):
            from metaflow.plugins.datatools.s3.s3util import get_s3_client

            bucket, _, key = url[len("s3://") :].partition("/")
            client, _ = get_s3_client()
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        with open(url, "rb") as handle:
            return handle.read()
    except Exception:  # any read failure: no renewal seen, and the next look retries
        return None


def renewed_at(lease: bytes | None) -> float | None:
    """The launcher's wall-clock time of the lease's last renewal."""
    try:
        return float(json.loads(lease)["renewed_at"])
    except (TypeError, ValueError, KeyError):
        return None


def expired_lease(environ=os.environ, now: Callable[[], float] = time.time) -> float | None:
    """Seconds since the run's lease was renewed, if more than its timeout, by the
    launcher's clock against this node's; None while it is fresh, or unreadable.

    The last look before a step records its success: a task whose launcher died
    since the watch's last look must not record it either.
    """
    url = environ.get(LEASE_ENV)
    if not url:
        return None
    renewed = renewed_at(read_lease(url))
    if renewed is None:
        return None
    silent = now() - renewed
    return silent if silent > float(environ[LEASE_TIMEOUT_ENV]) else None


class LeaseWatch:
    """Calls ``on_expired`` once if the lease does not change for ``timeout_s``."""

    def __init__(
        self,
        read: Read,
        timeout_s: float,
        on_expired: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self._read = read
        self.timeout_s = timeout_s
        self._on_expired = on_expired
        self._clock = clock
        self._last: bytes | None = None
        self._changed_at = clock()
        self._done = threading.Event()

    @classmethod
    def from_environment(cls, on_expired: Callable[[float], None]) -> LeaseWatch | None:
        """The task's watch, or None where its run has no lease."""
        url = os.environ.get(LEASE_ENV)
        if not url:
            return None
        return cls(lambda: read_lease(url), float(os.environ[LEASE_TIMEOUT_ENV]), on_expired)

    def check(self) -> bool:
        """One look at the lease; True once it has expired (``on_expired`` was called)."""
        lease = self._read()
        now = self._clock()
        if lease is not None and lease != self._last:
            self._last = lease
            self._changed_at = now
        silent = now - self._changed_at
        if silent >= self.timeout_s:
            self._on_expired(silent)
            self._done.set()
            return True
        return False

    def start(self) -> LeaseWatch:
        thread = threading.Thread(target=self._run, name="nomad-lease-watch", daemon=True)
        thread.start()
        return self

    def stop(self) -> None:
        self._done.set()

    def _run(self) -> None:
        interval = max(0.5, self.timeout_s / RENEWALS_PER_TIMEOUT)
        while not self._done.wait(interval):
            if self.check():
                return
