"""The run's local metadata carried to a task and back, with a real local flow datastore
standing in for S3 (the round trip through real tasks on moto is in
tests/integration/test_task_client_api.py)."""

import io
import os
import tarfile

import pytest
from metaflow.datastore import FlowDataStore
from metaflow.plugins.datastores.local_storage import LocalStorage

from metaflow_nomad.render.metadata_snapshot import build_snapshot, save_snapshot
from metaflow_nomad.task.run_metadata import changed_metadata_blob, restore_snapshot


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


@pytest.fixture()
def launcher_root(tmp_path):
    root = tmp_path / "launcher" / ".metaflow"
    write(root / "MyFlow/_meta/_self.json", '{"flow": 1}')
    write(root / "MyFlow/12/_meta/_self.json", '{"tags": []}')
    write(root / "MyFlow/12/start/1/_meta/sysmeta_x.json", '{"x": 1}')
    write(root / "MyFlow/data/ab/abcdef", "artifact bytes, not metadata")
    write(root / "OtherFlow/_meta/_self.json", "{}")
    return str(root)


@pytest.fixture()
def flow_datastore(tmp_path):
    return FlowDataStore("MyFlow", None, storage_impl=LocalStorage, ds_root=str(tmp_path / "ds"))


def members(blob):
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return sorted(m.name for m in tar if m.isfile())


def test_snapshot_holds_only_this_flows_metadata_and_is_deterministic(launcher_root):
    first = build_snapshot(launcher_root, "MyFlow")
    assert members(first.blob) == [
        "MyFlow/12/_meta/_self.json",
        "MyFlow/12/start/1/_meta/sysmeta_x.json",
        "MyFlow/_meta/_self.json",
    ]
    assert first.files == 3
    assert build_snapshot(launcher_root, "MyFlow").key == first.key
    assert build_snapshot(launcher_root, "NoSuchFlow") is None


def test_task_sends_back_only_what_it_wrote_or_changed(launcher_root, flow_datastore, tmp_path):
    snapshot = build_snapshot(launcher_root, "MyFlow")
    save_snapshot(flow_datastore, snapshot)
    task_root = str(tmp_path / "task" / ".metaflow")
    write(os.path.join(task_root, "MyFlow/12/start/1/_meta/sysmeta_x.json"), "written by the task")
    restored = restore_snapshot(flow_datastore, snapshot.key, task_root)
    assert len(restored) == 2  # the task's own file was not overwritten
    with open(os.path.join(task_root, "MyFlow/12/start/1/_meta/sysmeta_x.json")) as handle:
        assert handle.read() == "written by the task"

    write(os.path.join(task_root, "MyFlow/12/_meta/_self.json"), '{"tags": ["added"]}')
    write(os.path.join(task_root, "MyFlow/12/end/2/_meta/new.json"), "{}")
    assert members(changed_metadata_blob(task_root, restored)) == [
        ".metaflow/MyFlow/12/_meta/_self.json",
        ".metaflow/MyFlow/12/end/2/_meta/new.json",
        ".metaflow/MyFlow/12/start/1/_meta/sysmeta_x.json",
    ]
