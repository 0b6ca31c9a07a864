"""The capture process writes lines Metaflow's log readers parse, and echoes them raw."""

from __future__ import annotations

import io
import os

from metaflow.mflog.mflog import parse

from metaflow_nomad.task.capture import LogFile


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
