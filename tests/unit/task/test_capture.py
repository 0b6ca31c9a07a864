"""The capture process writes lines Metaflow's log readers parse, and echoes them raw."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import pytest
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


# A stop signal sent to the task's process group (the bootstrap's forward of Nomad's
# kill) while the capture process starts the step; `WHEN` injects it into a window.
STOP_WHILE_STARTING = """
import os, signal, subprocess, sys
from metaflow_nomad.task import capture

def stop_the_group():
    os.killpg(0, signal.SIGINT)

if sys.argv[1] == "before the fork":
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        stop_the_group()
        return real_popen(*args, **kwargs)

    capture.subprocess.Popen = popen
else:  # in the step, after the fork and before it execs
    restore = capture._restore_stop_signals

    def preexec():
        stop_the_group()
        restore()

    capture._restore_stop_signals = preexec
step = capture.start_step(["sleep", "30"])
try:
    print(step.wait(timeout=10))
except subprocess.TimeoutExpired:
    step.kill()
    print("the step outlived the stop signal")
"""


@pytest.mark.parametrize("when", ["before the fork", "after the fork"])
def test_a_stop_signal_while_the_step_starts_still_ends_the_step(when):
    """Before, a stop that came while the capture process started the step was ignored
    by both (the capture already ignored it, the step did not exist yet or had not yet
    restored the default handlers): the step ran on, and Nomad killed it only after
    the task's kill_timeout (30 s)."""
    out = subprocess.run(
        [sys.executable, "-c", STOP_WHILE_STARTING, when],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(-signal.SIGINT)
