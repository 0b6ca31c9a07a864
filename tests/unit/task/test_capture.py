"""The capture process writes lines Metaflow's log readers parse, and echoes them raw."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from metaflow.mflog.mflog import parse

from metaflow_nomad.task.log_capture import LogFile


def test_captured_lines_parse_with_metaflows_own_parser_and_are_echoed_raw(tmp_path):
    read_end, write_end = os.pipe()
    os.write(write_end, b"hello \xe2\x9c\x93\nsecond\n")
    os.close(write_end)
    echo = io.BytesIO()
    log = LogFile(str(tmp_path / "mflog_stdout"), echo)
    with os.fdopen(read_end, "rb") as pipe:
        log.copy_lines(pipe)
    parsed = [parse(line) for line in log.read().splitlines()]
    assert [p.msg for p in parsed] == [b"hello \xe2\x9c\x93", b"second"]
    assert {p.logsource for p in parsed} == {b"task"}
    assert parsed[0].id != parsed[1].id
    assert echo.getvalue() == b"hello \xe2\x9c\x93\nsecond\n"
    assert log.changed.is_set()


def test_the_step_starts_before_the_capture_process_loads_the_rest_of_itself(tmp_path):
    """Every task waits for what runs before its step: the entry module starts it
    with nothing of ours imported but itself."""
    code = (
        "import sys\n"
        "from metaflow_nomad.task.capture import start_step\n"
        "step = start_step(['true'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('metaflow_nomad.'))\n"
        "step.wait()\n"
        "print(loaded, step.returncode)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['metaflow_nomad.task', 'metaflow_nomad.task.capture'] 0"


def test_the_capture_process_exits_with_the_steps_status_and_writes_its_lines(tmp_path):
    env = {
        **os.environ,
        "MFLOG_STDOUT": str(tmp_path / "out"),
        "MFLOG_STDERR": str(tmp_path / "err"),
        "METAFLOW_NOMAD_LOGS_IN_PLACE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "metaflow_nomad.task.capture", "sh", "-c", "echo hi; exit 3"],
        env=env,
        capture_output=True,
    )
    assert done.returncode == 3 and done.stdout == b"hi\n"
    assert [parse(line).msg for line in (tmp_path / "out").read_bytes().splitlines()] == [b"hi"]
