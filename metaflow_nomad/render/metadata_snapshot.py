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

Run in the task as ``python -m metaflow_nomad.render.metadata_snapshot
restore|sync ...`` (``task_commands`` writes those lines).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shlex
import sys
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from metaflow.metaflow_config import DATASTORE_LOCAL_DIR

_META_DIR = "_meta"
# Written by ``restore`` next to the task's metadata directory, read by ``sync``.
MANIFEST = ".metaflow-nomad-restored.json"


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
        if os.path.basename(directory) == _META_DIR:
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
    """Store the blob where the task's ``restore_snapshot`` loads it from."""
    [(_, key)] = flow_datastore.save_data([snapshot.blob], len_hint=1)
    if key != snapshot.key:
        raise RuntimeError(f"metadata snapshot stored as {key}, expected {snapshot.key}")


def restore_snapshot(flow_datastore, key: str, root: str) -> dict[str, tuple[int, int]]:
    """Unpack the snapshot into the task's local metadata ``root``, never over a file
    the task already wrote.  Returns what was unpacked: path -> (mtime_ns, size)."""
    [(_, blob)] = list(flow_datastore.load_data([key]))
    restored = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar:
            if not member.isfile() or member.name.startswith("/") or ".." in member.name.split("/"):
                continue
            path = os.path.join(root, member.name)
            if os.path.exists(path):
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(tar.extractfile(member).read())
            os.utime(path, (member.mtime, member.mtime))
            stat = os.stat(path)
            restored[path] = (stat.st_mtime_ns, stat.st_size)
    return restored


def changed_metadata_blob(root: str, restored: Mapping[str, tuple[int, int]]) -> bytes:
    """What the task wrote or changed under ``root``, as Metaflow's metadata tarball.

    Members are named ``.metaflow/...`` like the ``tar.add(".metaflow")`` of
    ``sync_local_metadata_to_datastore``, so the launcher's unchanged
    ``sync_local_metadata_from_datastore`` copies them into its own directory.
    """

    def unchanged(path: str) -> bool:
        if path not in restored:
            return False
        stat = os.stat(path)
        return (stat.st_mtime_ns, stat.st_size) == restored[path]

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        tar.add(root, arcname=DATASTORE_LOCAL_DIR, recursive=False)
        for directory, subdirs, files in os.walk(root):
            subdirs.sort()
            for name in sorted(files):
                path = os.path.join(directory, name)
                if not unchanged(path):
                    arcname = os.path.join(DATASTORE_LOCAL_DIR, os.path.relpath(path, root))
                    tar.add(path, arcname=arcname)
    return raw.getvalue()


def task_commands(
    metadata_type: str,
    datastore,
    identity,
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
    return f"python -m {__name__} " + " ".join(shlex.quote(a) for a in args)


def _flow_datastore(datastore_type: str, datastore_root: str, flow_name: str):
    from metaflow.datastore import FlowDataStore
    from metaflow.plugins import DATASTORES

    storage = {impl.TYPE: impl for impl in DATASTORES}[datastore_type]
    return FlowDataStore(flow_name, None, storage_impl=storage, ds_root=datastore_root)


def _task_root() -> str:
    """The task's local metadata directory: ``.metaflow`` in its working directory."""
    from metaflow.plugins.datastores.local_storage import LocalStorage

    return LocalStorage.get_datastore_root_from_config(lambda *a, **k: None)


def main(argv: list[str]) -> None:
    """``restore|sync DATASTORE_TYPE DATASTORE_ROOT FLOW/RUN/STEP/TASK KEY|ATTEMPT``."""
    command, datastore_type, datastore_root, pathspec, last = argv
    flow_name, run_id, step_name, task_id = pathspec.split("/")
    flow_datastore = _flow_datastore(datastore_type, datastore_root, flow_name)
    root = _task_root()
    manifest = os.path.join(os.path.dirname(root), MANIFEST)
    if command == "restore":
        restored = restore_snapshot(flow_datastore, last, root)
        with open(manifest, "w") as handle:
            json.dump(restored, handle)
        return
    restored = {}
    if os.path.exists(manifest):
        with open(manifest) as handle:
            restored = {path: tuple(stat) for path, stat in json.load(handle).items()}
    task_datastore = flow_datastore.get_task_datastore(
        run_id, step_name, task_id, int(last), mode="w"
    )
    blob = changed_metadata_blob(root, restored)
    [(_, key)] = flow_datastore.save_data([blob], len_hint=1)
    task_datastore._dangerous_save_metadata_post_done({"local_metadata": key})


if __name__ == "__main__":
    main(sys.argv[1:])
