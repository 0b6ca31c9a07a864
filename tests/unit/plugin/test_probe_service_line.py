"""``doctor --probe`` with the metadata service: the probe task's line, and how the
launcher reads it from the output ``run_probe`` fetched before purging the job."""

from __future__ import annotations

from metaflow_nomad.plugin.doctor_command import ProbeOutput
from metaflow_nomad.render import probe_task


class Logs:
    def __init__(self, stdout: str):
        self.stdout = stdout
        self.leader_asked = False

    def alloc_logs(self, alloc_id, task, stream, tail_bytes):
        return self.stdout if stream == "stdout" else "stderr line\n"

    def leader(self):
        self.leader_asked = True
        return "127.0.0.1:4647"


def _probe_output(*said: str) -> ProbeOutput:
    client = ProbeOutput(Logs("".join(f"{probe_task.PREFIX}{line}\n" for line in said)))
    client.alloc_logs("a1", "metaflow", "stdout", 4096)
    client.alloc_logs("a1", "metaflow", "stderr", 4096)
    return client


def test_the_task_line_becomes_a_check():
    ok = _probe_output(probe_task.STARTED, probe_task.SERVICE_OK + "http://s answered /ping")
    assert ok.service_check().line() == (
        "  ok    metadata service from the task: http://s answered /ping"
    )
    failed = _probe_output(probe_task.SERVICE_FAIL + "nothing answered at http://s")
    assert failed.service_check().failed


def test_a_probe_that_never_pinged_is_skipped_and_the_client_is_the_real_one():
    client = _probe_output(probe_task.STARTED)
    assert client.service_check().status == "skip"
    assert client.leader() == "127.0.0.1:4647"


def test_headers_that_are_not_json_are_said_by_the_task(monkeypatch):
    monkeypatch.setenv("METAFLOW_SERVICE_HEADERS", "x-api-key: abc")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", "http://127.0.0.1:9")
    line = probe_task.service_line()
    assert line.startswith(probe_task.SERVICE_FAIL + "the task's METAFLOW_SERVICE_HEADERS is not")
    assert "abc" not in line
