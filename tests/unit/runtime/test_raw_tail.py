"""Nomad's raw task output is shown only for what the log stream did not show, and
the bootstrap's own account of a setup failure is found in it."""

from __future__ import annotations

from metaflow_nomad.runtime.logs import bootstrap_failure, raw_log_tails, unseen_raw_lines


class RecordedLogs:
    """Answers alloc_logs with recorded text (the logs API itself is tested on agents)."""

    def __init__(self, **streams):
        self.streams = streams

    def alloc_logs(self, alloc_id, task, stream, tail_bytes):
        return self.streams.get(stream, "")[-tail_bytes:]


def test_lines_already_streamed_and_routine_lines_are_not_repeated():
    tails = {
        "stdout": ["about to fail", "[save_logs] upload_start datastore=local files=[]"],
        "stderr": ["Traceback (most recent call last):", "ValueError: boom", "oom: killed"],
    }
    shown = {"about to fail", "Traceback (most recent call last):", "ValueError: boom"}
    assert unseen_raw_lines(tails, shown) == (
        "--- stderr from nomad alloc logs, not in the task's log above ---\noom: killed"
    )
    assert unseen_raw_lines(tails, shown | {"oom: killed"}) == ""


def test_the_first_bootstrap_line_is_the_reason_and_is_not_repeated_in_the_tail():
    tails = {
        "stdout": ["Setting up task environment."],
        "stderr": [
            "metaflow-nomad: the code package could not be fetched from s3://b/k: no creds.",
            "metaflow-nomad: the task could not set up the code package from s3://b/k.",
        ],
    }
    assert bootstrap_failure(tails) == (
        "the code package could not be fetched from s3://b/k: no creds."
    )
    assert unseen_raw_lines(tails, set()) == (
        "--- stdout from nomad alloc logs, not in the task's log above ---\n"
        "Setting up task environment."
    )
    assert bootstrap_failure({"stdout": [], "stderr": ["plain error"]}) is None


def test_a_tail_cut_mid_line_drops_the_fragment():
    client = RecordedLogs(stdout="x" * 50 + "\nwhole line\nlast line\n", stderr="short\n")
    tails = raw_log_tails(client, "alloc", "metaflow", tail_bytes=30)
    assert tails == {"stdout": ["whole line", "last line"], "stderr": ["short"]}
