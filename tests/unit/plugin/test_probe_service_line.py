"""``doctor --probe`` with the metadata service: the probe task's line, and how the
launcher reads it from what the probe task said (``ProbeResult.said``)."""

from __future__ import annotations

from metaflow_nomad.plugin.doctor_command import task_service_check
from metaflow_nomad.render import probe_task


def test_the_task_line_becomes_a_check():
    ok = task_service_check([probe_task.STARTED, probe_task.SERVICE_OK + "http://s answered /ping"])
    assert ok.line() == "  ok    metadata service from the task: http://s answered /ping"
    failed = task_service_check([probe_task.SERVICE_FAIL + "nothing answered at http://s"])
    assert failed.failed


def test_a_probe_that_never_pinged_is_skipped():
    assert task_service_check([probe_task.STARTED]).status == "skip"
    assert task_service_check([]).status == "skip"


def test_headers_that_are_not_json_are_said_by_the_task(monkeypatch):
    monkeypatch.setenv("METAFLOW_SERVICE_HEADERS", "x-api-key: abc")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", "http://127.0.0.1:9")
    line = probe_task.service_line()
    assert line.startswith(probe_task.SERVICE_FAIL + "the task's METAFLOW_SERVICE_HEADERS is not")
    assert "abc" not in line
