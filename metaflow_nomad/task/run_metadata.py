"""The task's side of carrying the run's local metadata (local metadata, remote datastore).

``python -m metaflow_nomad.task.run_metadata restore ...`` runs in the task's
bootstrap before the step: it unpacks the launcher's snapshot of the flow's
metadata (``render.metadata_snapshot``) into the task's own ``.metaflow``, so that
the client API, tags and cards in the step see the run.  ``... sync ...`` runs
once the step's last process has ended (a card's final render writes metadata
after every decorator hook): it sends back only the files the task wrote or
changed, as the ``local_metadata`` tarball that Metaflow's
``sync_local_metadata_from_datastore`` reads on the launcher, as for @kubernetes.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from collections.abc import Mapping

from metaflow.metaflow_config import DATASTORE_LOCAL_DIR

# Written by ``restore`` next to the task's metadata directory, read by ``sync``.
MANIFEST = ".metaflow-nomad-restored.json"


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
