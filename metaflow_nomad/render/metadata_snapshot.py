"""Local metadata with a remote datastore: the run's metadata, carried to the task.

With ``--metadata=local`` the run's metadata lives in the launcher's
``.metaflow`` directory, which a Nomad task cannot see.  Metaflow's remote
backends give each task an empty local metadata directory and copy back what it
wrote, so inside the step the client API (``current.run``, ``Flow``, ``Run``,
``Task``, tags) and card rendering find nothing.  Here the launcher packs the
flow's metadata (the ``_meta`` files of every run: small JSON documents) into
one blob in the flow's datastore.  The task's bootstrap unpacks it into the
task's local metadata directory before the step starts (``restore``) and, once
the step's last process has ended, sends back only the files the task wrote or
changed (``sync``), in the form Metaflow's ``sync_local_metadata_from_datastore``
reads on the launcher.  The blob is content-addressed and built
deterministically, so tasks launched from the same metadata share one upload
and ``render`` shows the key a step would use.

This module is the launcher's side; the task's is ``metaflow_nomad.task.run_metadata``,
run by the lines ``task_commands`` writes into the bootstrap.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shlex
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from metaflow_nomad.model import JobIdentity

META_DIR = "_meta"
# The task's side: restore and sync (run in the task, see its docstring).
TASK_MODULE = "metaflow_nomad.task.run_metadata"


@dataclass(frozen=True)
class MetadataSnapshot:
    key: str  # the blob's key in the flow datastore (its SHA-1, as Metaflow computes it)
    blob: bytes
    files: int


def needs_snapshot(metadata_type: str, datastore_type: str) -> bool:
    """Only local metadata with a remote datastore leaves the task without the run's metadata."""
    return metadata_type == "local" and datastore_type != "local"


def local_metadata_root() -> str | None:
    """The launcher's local metadata directory, found as Metaflow finds it (or None)."""
    from metaflow.plugins.datastores.local_storage import LocalStorage

    return LocalStorage.get_datastore_root_from_config(lambda *a, **k: None, create_on_absent=False)


def _metadata_files(root: str, flow_name: str) -> Iterator[str]:
    """Paths (relative to ``root``) of the flow's ``_meta`` files, in a stable order."""
    flow_dir = os.path.join(root, flow_name)
    for directory, subdirs, files in os.walk(flow_dir):
        subdirs.sort()
        if directory == flow_dir and "data" in subdirs:
            subdirs.remove("data")  # a local datastore's artifacts, not metadata
        if os.path.basename(directory) == META_DIR:
            for name in sorted(files):
                yield os.path.relpath(os.path.join(directory, name), root)


def build_snapshot(root: str | None, flow_name: str) -> MetadataSnapshot | None:
    """Pack the flow's metadata under ``root``; None when there is none."""
    if not root or not os.path.isdir(os.path.join(root, flow_name)):
        return None
    raw = io.BytesIO()
    count = 0
    # Fixed gzip and tar headers: the same metadata always gives the same blob.
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for relpath in _metadata_files(root, flow_name):
            path = os.path.join(root, relpath)
            with open(path, "rb") as handle:
                data = handle.read()
            info = tarfile.TarInfo(relpath)
            info.size = len(data)
            info.mtime = int(os.stat(path).st_mtime)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
            count += 1
    blob = raw.getvalue()
    return MetadataSnapshot(key=hashlib.sha1(blob).hexdigest(), blob=blob, files=count)


def save_snapshot(flow_datastore, snapshot: MetadataSnapshot) -> None:
    """Store the blob where the task's ``restore`` loads it from."""
    [(_, key)] = flow_datastore.save_data([snapshot.blob], len_hint=1)
    if key != snapshot.key:
        raise RuntimeError(f"metadata snapshot stored as {key}, expected {snapshot.key}")


def task_commands(
    metadata_type: str,
    datastore,
    identity: JobIdentity,
    snapshot: MetadataSnapshot | None,
) -> tuple[list[str], list[str]]:
    """The bootstrap lines that carry the run's metadata in and the task's back out."""
    if not needs_snapshot(metadata_type, datastore.TYPE):
        return [], []
    pathspec = "/".join([identity.flow_name, identity.run_id, identity.step_name, identity.task_id])
    setup = []
    if snapshot is not None:
        setup.append(
            _task_command(
                "restore", datastore.TYPE, datastore.datastore_root, pathspec, snapshot.key
            )
        )
    sync = _task_command(
        "sync", datastore.TYPE, datastore.datastore_root, pathspec, str(identity.attempt)
    )
    return setup, [sync]


def _task_command(*args: str) -> str:
    return f"python -m {TASK_MODULE} " + " ".join(shlex.quote(a) for a in args)
