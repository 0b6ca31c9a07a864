"""The capture process writes lines Metaflow's log readers parse, and echoes them raw."""

from __future__ import annotations

import io
import os

from metaflow.mflog.mflog import parse

from metaflow_nomad.task.capture import LogFile, upload_delay


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


def test_uploads_are_frequent_at_first_then_back_off_to_thirty_seconds():
    assert upload_delay(0) == 0.25
    assert upload_delay(599) == 0.25
    assert 0.25 < upload_delay(1200) < 30
    assert upload_delay(3600) == 30.0
    assert upload_delay(10 * 3600) == 30.0
