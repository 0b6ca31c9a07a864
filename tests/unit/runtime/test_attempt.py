"""The per-attempt launcher: its plan file, its pacing of lines, and what it loads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from metaflow_nomad.config import profile_exports
from metaflow_nomad.model import JobIdentity, TaskLogs
from metaflow_nomad.runtime.attempt import write_line
from metaflow_nomad.runtime.plan import AttemptPlan, Dispatch, read_plan, write_plan

IDENTITY = JobIdentity("F", "7", "start", "1", 2, "tester")


def test_a_plan_survives_its_file_and_the_file_is_the_launchers_alone(tmp_path):
    plan = AttemptPlan(
        identity=IDENTITY,
        namespace="team-a",
        job={"ID": IDENTITY.job_id, "TaskGroups": []},
        hcl='job "x" {}',
        dispatch=Dispatch("parent", {"a": "b"}, "token"),
        logs=TaskLogs("/ds/out.log", "/ds/err.log", "local"),
        pending_timeout=None,
        minutes_between_retries=3,
    )
    path = str(tmp_path / "plan.json")
    write_plan(plan, path)
    assert read_plan(path) == plan
    assert os.listdir(tmp_path) == []


def test_a_line_waits_until_the_runtime_has_read_the_previous_one():
    read_end, write_end = os.pipe()
    reader = os.fdopen(read_end, "rb", buffering=0)
    writer = os.fdopen(write_end, "w")
    reading = threading.Event()

    def read_first_line_later():
        threading.Event().wait(0.2)
        reading.set()
        reader.read(len(b"first\n"))

    write_line(writer, "first")
    thread = threading.Thread(target=read_first_line_later)
    thread.start()
    write_line(writer, "second", patience=30)
    # It returned only once the pipe was empty, so the runtime reads one line per read.
    assert reading.is_set()
    thread.join()
    assert reader.read(len(b"second\n")) == b"second\n"


def test_a_line_to_a_file_is_written_at_once(tmp_path):
    with open(tmp_path / "out", "w") as out:
        write_line(out, "one", patience=30)
        write_line(out, "two", patience=30)
    assert (tmp_path / "out").read_text() == "one\ntwo\n"


def test_the_launcher_and_the_capture_process_never_load_metaflow():
    """Imports, the client and a request, as a launcher makes them with the
    environment the runtime gives it (the profile's values exported)."""
    code = (
        "import sys, metaflow_nomad.runtime.attempt, metaflow_nomad.task.log_capture, "
        "metaflow_nomad.runtime.launcher\n"
        "from metaflow_nomad.api.client import default_client\n"
        "from metaflow_nomad.errors import NomadUnreachable\n"
        "try:\n"
        "    default_client(max_attempts=1).job('probe')\n"
        "except NomadUnreachable:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('metaflow', 'jinja2')))"
    )
    env = {
        **os.environ,
        **profile_exports({}),
        "NOMAD_ADDR": "http://127.0.0.1:9",
    }
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert loaded.strip() == "[]"


def test_a_line_on_one_pipe_waits_for_an_unread_line_on_the_other():
    """stdout and stderr reach the runtime as two pipes: the launcher's last word
    on stderr must not overtake the task's last line on stdout."""
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    stdout = os.fdopen(out_write, "w")
    stderr = os.fdopen(err_write, "w")
    stdout_reader = os.fdopen(out_read, "rb", buffering=0)
    stdout_read = threading.Event()

    def read_stdout_later():
        threading.Event().wait(0.2)
        stdout_reader.read(len(b"last task line\n"))
        stdout_read.set()

    write_line(stdout, "last task line", drained=(stdout, stderr))
    thread = threading.Thread(target=read_stdout_later)
    thread.start()
    write_line(stderr, "task finished", patience=30, drained=(stdout, stderr))
    assert stdout_read.is_set()
    thread.join()
    assert os.read(err_read, 100) == b"task finished\n"
