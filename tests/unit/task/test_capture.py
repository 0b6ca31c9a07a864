"""The capture process's line format is the one Metaflow's log readers parse."""

from __future__ import annotations

import calendar

from metaflow.mflog.mflog import parse

from metaflow_nomad.task.capture import mflog_line, upload_delay


def test_mflog_line_parses_with_metaflows_own_parser():
    moment = calendar.timegm((2026, 11, 25, 10, 30, 5)) + 0.123456
    parsed = parse(mflog_line(b"hello \xe2\x9c\x93\n", now=moment))
    assert parsed is not None
    assert parsed.logsource == b"task"
    assert parsed.msg == b"hello \xe2\x9c\x93"  # the parser drops the newline
    assert parsed.utc_tstamp_str == b"2026-11-25T10:30:05.123456"
    assert parsed.should_persist is None


def test_each_line_gets_its_own_id():
    first, second = parse(mflog_line(b"a")), parse(mflog_line(b"a"))
    assert first.id != second.id


def test_uploads_are_frequent_at_first_then_back_off_to_thirty_seconds():
    assert upload_delay(0) == 0.25
    assert upload_delay(599) == 0.25
    assert 0.25 < upload_delay(1200) < 30
    assert upload_delay(3600) == 30.0
    assert upload_delay(10 * 3600) == 30.0
