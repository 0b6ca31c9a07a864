"""Right-sizing rows from usage records: peaks over tasks and attempts, suggestions."""

from __future__ import annotations

from metaflow_nomad.runtime.usage import (
    CPU_MEAN,
    CPU_PEAK,
    NO_SAMPLE,
    PEAK_MEMORY,
    REQUESTED_CPU,
    REQUESTED_MEMORY,
    SAMPLES,
)
from metaflow_nomad.usage_report import TaskUsage, run_usage, step_usage, usage_table


def sampled(step, task_id, peaks, cpu_peaks, cpu_means, memory="1000", cpu="1"):
    return TaskUsage(
        step,
        task_id,
        {
            SAMPLES: ["2"] * len(peaks),
            REQUESTED_MEMORY: [memory] * len(peaks),
            REQUESTED_CPU: [cpu] * len(peaks),
            PEAK_MEMORY: peaks,
            CPU_PEAK: cpu_peaks,
            CPU_MEAN: cpu_means,
        },
    )


def unsampled(step, task_id):
    return TaskUsage(step, task_id, {SAMPLES: ["0"], REQUESTED_MEMORY: ["512"]})


def test_the_peak_is_over_every_task_and_attempt():
    row = step_usage(
        "train",
        [
            sampled("train", "2", ["300", "413"], ["0.20", "0.31"], ["0.10", "0.20"]),
            sampled("train", "3", ["350"], ["0.90"], ["0.30"]),
        ],
    )
    assert (row.tasks, row.attempts, row.sampled_attempts) == (2, 3, 3)
    assert row.requested_memory_mb == 1000
    assert row.peak_memory_mb == 413
    assert row.peak_cpu_cores == 0.9
    assert round(row.mean_cpu_cores, 3) == 0.2


def test_suggestions_leave_headroom_and_round_up_to_request_units():
    row = step_usage("train", [sampled("train", "2", ["413"], ["0.31"], ["0.1"])])
    # 413 MB x 1.3 = 536.9 MB, up to the next 64 MB; 0.31 x 1.3 = 0.403 cores, up to 0.5.
    assert row.suggested_memory_mb == 576
    assert row.suggested_cpu_cores == 0.5
    idle = step_usage("idle", [sampled("idle", "2", ["64"], ["0.0"], ["0.0"])])
    assert idle.suggested_memory_mb == 128
    assert idle.suggested_cpu_cores == 0.25


def test_a_step_that_never_was_sampled_gets_no_number_and_no_suggestion():
    row = step_usage("start", [unsampled("start", "1")])
    assert (row.attempts, row.sampled_attempts) == (1, 0)
    assert row.peak_memory_mb is None and row.suggested_memory_mb is None
    lines = usage_table(run_usage("F/1", ["start"], [unsampled("start", "1")]))
    assert f"Step start: every attempt {NO_SAMPLE}; no suggestion." in lines


def test_steps_without_records_did_not_run_on_nomad_and_order_is_kept():
    tasks = [
        sampled("hold", "3", ["413"], ["0.3"], ["0.1"]),
        unsampled("start", "1"),
        TaskUsage("end", "4", {}),
    ]
    usage = run_usage("UsageFlow/7", ["start", "hold", "join", "end"], tasks)
    assert [row.step for row in usage.steps] == ["start", "hold"]
    assert usage.not_on_nomad == ("join", "end")
    lines = usage_table(usage)
    assert lines[0] == "What the steps of UsageFlow/7 asked of Nomad and used:"
    hold = next(line for line in lines if line.strip().startswith("hold"))
    assert hold.split() == ["hold", "1", "1", "1,000", "413", "576", "1", "0.30", "0.10", "0.5"]
    assert lines[-1] == "Not run on Nomad: join, end."
