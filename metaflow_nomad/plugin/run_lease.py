"""The run's lease: the launcher's proof, renewed every few seconds, that it is alive.

A launcher machine can die outright: an OOM kill or a CI cancellation takes the
whole process group, a laptop loses power, its network drops for good.  No
signal handler runs then, and the run's jobs would run on to the end, each task
heartbeating and recording its success for a run that is never finished.

So Metaflow's runtime renews one small object per run in the datastore,
``<flow>/<run>/_nomad_lease``, every ``timeout / 6`` seconds (one write per run,
whatever its width), and every task watches it (``task.lease_watch``): a task
that sees no renewal for ``METAFLOW_NOMAD_LEASE_TIMEOUT`` seconds (60 by
default) stops its step and exits without recording success.  A failed renewal
is only retried at the next tick, so a network blip shorter than the timeout
changes nothing.  A deployed run's runner is such a runtime too: its tasks stop
when it is lost, and the runner Nomad starts in its place resumes the run.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable

from metaflow_nomad.errors import NomadException
from metaflow_nomad.model import LEASE_ENV, LEASE_FILE, LEASE_TIMEOUT_ENV

DEFAULT_TIMEOUT_S = 60.0
MIN_TIMEOUT_S = 5.0
RENEWALS_PER_TIMEOUT = 6


def lease_timeout(config: dict) -> float:
    """``METAFLOW_NOMAD_LEASE_TIMEOUT`` in seconds, checked."""
    value = config.get("NOMAD_LEASE_TIMEOUT", DEFAULT_TIMEOUT_S)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= MIN_TIMEOUT_S:
        raise NomadException(
            f"METAFLOW_NOMAD_LEASE_TIMEOUT = {value!r} is not valid. Expected the seconds a "
            f"run's tasks keep running without their launcher, {MIN_TIMEOUT_S:g} or more "
            f"(default {DEFAULT_TIMEOUT_S:g})."
        )
    return seconds


class RunLease:
    """Renews the run's lease from a daemon thread until ``stop``."""

    def __init__(self, storage, key: str, timeout_s: float, clock: Callable[[], float] = time.time):
        self._storage = storage
        self._key = key
        self.timeout_s = timeout_s
        self._clock = clock
        self._sequence = 0
        self._stopped = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="nomad-run-lease", daemon=True)

    @classmethod
    def for_run(cls, flow_datastore, flow_name: str, run_id: str, timeout_s: float) -> RunLease:
        """The lease of ``run_id``, in the flow's datastore."""
        from metaflow.plugins import DATASTORES

        storage_class = next(d for d in DATASTORES if d.TYPE == flow_datastore.TYPE)
        storage = storage_class(flow_datastore.datastore_root)
        return cls(storage, storage.path_join(flow_name, run_id, LEASE_FILE), timeout_s)

    @property
    def url(self) -> str:
        """Where a task reads the lease: a path (local datastore) or a URL."""
        return self._storage.full_uri(self._key)

    def task_env(self) -> dict[str, str]:
        """What each task of the run needs to watch the lease (``task.lease_watch``)."""
        return {LEASE_ENV: self.url, LEASE_TIMEOUT_ENV: str(self.timeout_s)}

    def start(self) -> RunLease:
        """The first renewal is written before any task is submitted."""
        self.renew()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def renew(self) -> bool:
        self._sequence += 1
        record = {
            "sequence": self._sequence,
            "renewed_at": self._clock(),
            "timeout_s": self.timeout_s,
            "launcher": f"{socket.gethostname()}:{os.getpid()}",
        }
        try:
            body = io.BytesIO(json.dumps(record).encode())
            self._storage.save_bytes([(self._key, body)], overwrite=True)
        except Exception as exc:  # any storage error: retried at the next tick
            if not self._failing:
                print(f"metaflow-nomad: could not renew the run's lease: {exc!r}", file=sys.stderr)
            self._failing = True
            return False
        self._failing = False
        return True

    def _run(self) -> None:
        while not self._stopped.wait(self.timeout_s / RENEWALS_PER_TIMEOUT):
            self.renew()
