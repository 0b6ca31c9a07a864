"""Our copy of mflog's line format holds to Metaflow's own parser and merger."""

from __future__ import annotations

from datetime import datetime, timezone

from metaflow.mflog.mflog import merge_logs, parse

from metaflow_nomad.mflog_lines import decorate, message, poll_delay


def test_decorated_lines_parse_with_metaflows_parser():
    when = datetime(2026, 11, 25, 13, 5, 7, 123456, tzinfo=timezone.utc)
    line = decorate(b"task", b"caf\xc3\xa9 [x] | y\n", now=when)
    parsed = parse(line)
    assert parsed.msg == b"caf\xc3\xa9 [x] | y"
    assert parsed.logsource == b"task"
    assert parsed.utc_tstamp == when.replace(tzinfo=None)
    assert parsed.should_persist is None
    assert parse(decorate(b"task", b"a")).id != parse(decorate(b"task", b"a")).id


def test_metaflow_merges_decorated_lines_by_their_timestamps():
    early = datetime(2026, 1, 1, 0, 0, 1, tzinfo=timezone.utc)
    late = datetime(2026, 1, 1, 0, 0, 2, tzinfo=timezone.utc)
    stdout = decorate(b"task", b"second\n", now=late)
    stderr = decorate(b"task", b"first\n", now=early)
    assert [line.msg for line in merge_logs([stdout, stderr])] == [b"first", b"second"]


def test_message_strips_the_header_as_metaflows_parser_does():
    persisted = b"[![MFLOG|0|2026-01-01T00:00:00.000001Z|task|id]y"
    for line in (decorate(b"task", b"hello ]x["), persisted):
        assert message(line) == parse(line).msg
    assert message(b"plain line") == b"plain line"


def test_polling_is_frequent_at_first_then_backs_off_to_thirty_seconds():
    assert poll_delay(0) == 0.25
    assert poll_delay(599) == 0.25
    assert 0.25 < poll_delay(1200) < 30
    assert poll_delay(3600) == 30.0
    assert poll_delay(10 * 3600) == 30.0
