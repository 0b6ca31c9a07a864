"""The launcher's own task metadata and lines: the allocation's UI page and the usage
summary (issue 23), against the fake Nomad of test_launcher."""

from __future__ import annotations

import json

import pytest

from metaflow_nomad.errors import NomadJobFailed
from metaflow_nomad.runtime.plan import AttemptPlan
from metaflow_nomad.runtime.task_metadata import (
    SERVICE_HEADERS_ENV,
    metadata_records,
    record_task_metadata,
)
from metaflow_nomad.runtime.usage import NO_SAMPLE
from tests.support.http_stub import http_stub
from tests.unit.runtime.test_guard import isolated_signals  # noqa: F401 - autouse fixture
from tests.unit.runtime.test_launcher import (
    ALLOC_ID,
    IDENTITY,
    ON_NODE,
    Attempt,
    alloc,
    nomad,  # noqa: F401 - fixture
    terminated,
)

UI = "http://nomad.example:4646"
URL = f"{UI}/ui/allocations/{ALLOC_ID}?namespace=team-a"


def _recorded(meta_dir) -> dict[str, dict]:
    records = {}
    for path in sorted(meta_dir.iterdir()):
        record = json.loads(path.read_text())
        assert path.name == f"sysmeta_{record['field_name']}_{record['ts_epoch']}.json"
        records[record["field_name"]] = record
    return records


def _attempt(tmp_path, fake, **plan) -> Attempt:
    return Attempt(
        tmp_path,
        fake,
        ui_url=UI,
        sample_usage=True,
        cpu_cores=2.0,
        metadata_type="local",
        local_metadata_dir=str(tmp_path / "_meta"),
        **plan,
    )


def test_a_task_ending_before_a_sample_says_so_and_its_link_is_recorded(tmp_path, nomad):  # noqa: F811
    attempt = _attempt(tmp_path, nomad(alloc("complete", terminated(0))))
    attempt.run()
    assert f"Task placed on node node-1 (allocation a1b2c3d4, {URL})." in attempt.said
    assert attempt.said[-2:] == [
        f"Task finished with exit code 0 {ON_NODE}.",
        f"Task {NO_SAMPLE}: no usage recorded.",
    ]
    records = _recorded(tmp_path / "_meta")
    assert {k: r["value"] for k, r in records.items()} == {
        "nomad-alloc-url": URL,
        "nomad-usage-samples": "0",
        "nomad-usage-requested-memory-mb": "512",
        "nomad-usage-requested-cpu-cores": "2",
    }
    assert records["nomad-alloc-url"]["tags"] == ["attempt_id:0"]


def test_the_failure_line_links_the_allocation(tmp_path, nomad):  # noqa: F811
    attempt = _attempt(tmp_path, nomad(alloc("failed", terminated(3))))
    with pytest.raises(NomadJobFailed) as failed:
        attempt.run()
    assert str(failed.value).startswith(
        f"Step failed on Nomad (job {IDENTITY.job_id}, allocation a1b2c3d4, {URL}): "
    )
    assert f"Task {NO_SAMPLE}: no usage recorded." in attempt.said
    assert _recorded(tmp_path / "_meta")["nomad-alloc-url"]["value"] == URL


def test_without_a_ui_url_or_sampling_the_lines_are_unchanged(tmp_path, nomad):  # noqa: F811
    attempt = Attempt(tmp_path, nomad(alloc("complete", terminated(0))))
    attempt.run()
    assert "Task placed on node node-1 (allocation a1b2c3d4)." in attempt.said
    assert attempt.said[-1] == f"Task finished with exit code 0 {ON_NODE}."


def test_records_are_metaflows_local_metadata_json():
    [(name, record)] = metadata_records(IDENTITY, {"nomad-alloc-url": URL}, 1234, "tester").items()
    assert name == "sysmeta_nomad-alloc-url_1234"
    assert record == {
        "flow_id": "F",
        "run_number": "7",
        "step_name": "start",
        "task_id": "1",
        "field_name": "nomad-alloc-url",
        "type": "nomad-alloc-url",
        "value": URL,
        "tags": ["attempt_id:0"],
        "user_name": "tester",
        "ts_epoch": 1234,
    }


def test_a_record_that_cannot_be_written_is_said_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    said: list[str] = []
    plan = AttemptPlan(IDENTITY, metadata_type="local", local_metadata_dir=str(blocker / "x"))
    record_task_metadata(plan, {"nomad-alloc-url": URL}, said.append)
    assert said and said[0].startswith(
        "Could not record the task's Nomad metadata (nomad-alloc-url)"
    )


def test_records_reach_the_service_with_the_runtimes_headers_after_a_5xx(monkeypatch):
    monkeypatch.setattr("metaflow_nomad.runtime.task_metadata.time.sleep", lambda s: None)
    statuses = [503, 200]
    said: list[str] = []
    with http_stub(lambda request: (statuses.pop(0), [])) as service:
        url = f"{service.url}/api"
        plan = AttemptPlan(IDENTITY, metadata_type="service", metadata_service_url=url)
        headers = json.dumps({"x-api-key": "k-123"})
        record_task_metadata(
            plan, {"nomad-alloc-url": URL}, said.append, {SERVICE_HEADERS_ENV: headers}
        )
    assert said == []
    assert len(service.requests) == 2
    sent = service.requests[-1]
    who = IDENTITY
    assert sent.path == (
        f"/api/flows/{who.flow_name}/runs/{who.run_id}/steps/{who.step_name}"
        f"/tasks/{who.task_id}/metadata"
    )
    assert sent.headers["x-api-key"] == "k-123"
    assert [(r["field_name"], r["value"], r["tags"]) for r in sent.json()] == [
        ("nomad-alloc-url", URL, ["attempt_id:0"])
    ]


def test_a_refused_record_is_said_once_and_not_tried_again():
    said: list[str] = []
    with http_stub(lambda request: (403, [])) as service:
        url = f"{service.url}/api"
        plan = AttemptPlan(IDENTITY, metadata_type="service", metadata_service_url=url)
        record_task_metadata(plan, {"nomad-alloc-url": URL}, said.append, {})
    assert len(service.requests) == 1
    assert said[0].startswith("Could not record the task's Nomad metadata (nomad-alloc-url)")
    assert "403" in said[0]
