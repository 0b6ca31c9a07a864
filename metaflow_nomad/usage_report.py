"""Right-sizing per run: what each step asked of Nomad, what it used, and what to ask.

The launcher records each attempt's usage as task metadata (``runtime/usage.py``
names the fields).  This module turns those records, read back from a run, into
one row per step: the request, the peak over every task and attempt, and a
suggested request with headroom.  It is pure (records in, rows out), so the
``nomad usage`` command and the ``nomad_usage`` card show the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from metaflow_nomad.runtime.usage import (
    CPU_MEAN,
    CPU_PEAK,
    NO_SAMPLE,
    PEAK_MEMORY,
    REQUESTED_CPU,
    REQUESTED_MEMORY,
    SAMPLES,
)

# A suggestion leaves this much above the highest peak seen: samples miss spikes
# between them, and the next run's data may be larger.
HEADROOM = 1.3
# Suggestions round up to these steps, the units people write requests in.
MEMORY_STEP_MB = 64
CPU_STEP_CORES = 0.25


@dataclass(frozen=True)
class TaskUsage:
    """One task's usage records: every value of each field, over its attempts."""

    step: str
    task_id: str
    values: Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class StepUsage:
    """A step's requests and peaks over all its tasks and attempts."""

    step: str
    tasks: int
    attempts: int
    sampled_attempts: int
    requested_memory_mb: int | None
    peak_memory_mb: float | None
    requested_cpu_cores: float | None
    peak_cpu_cores: float | None
    mean_cpu_cores: float | None

    @property
    def suggested_memory_mb(self) -> int | None:
        if self.peak_memory_mb is None:
            return None
        return _round_up(self.peak_memory_mb * HEADROOM, MEMORY_STEP_MB)

    @property
    def suggested_cpu_cores(self) -> float | None:
        if self.peak_cpu_cores is None:
            return None
        return max(CPU_STEP_CORES, _round_up(self.peak_cpu_cores * HEADROOM, CPU_STEP_CORES))


@dataclass(frozen=True)
class RunUsage:
    """The rows of one run, in the run's step order, and the steps that did not run on Nomad."""

    pathspec: str
    steps: tuple[StepUsage, ...]
    not_on_nomad: tuple[str, ...]


def _round_up(value: float, step: float):
    rounded = math.ceil(value / step - 1e-9) * step
    return int(rounded) if float(step).is_integer() else rounded


def _numbers(tasks: Iterable[TaskUsage], field: str) -> list[float]:
    return [float(v) for task in tasks for v in task.values.get(field, ())]


def step_usage(step: str, tasks: Sequence[TaskUsage]) -> StepUsage:
    """One step's row; its tasks are those with usage records."""
    peaks = _numbers(tasks, PEAK_MEMORY)
    cpu_peaks = _numbers(tasks, CPU_PEAK)
    cpu_means = _numbers(tasks, CPU_MEAN)
    requested_memory = _numbers(tasks, REQUESTED_MEMORY)
    requested_cpu = _numbers(tasks, REQUESTED_CPU)
    samples = _numbers(tasks, SAMPLES)
    return StepUsage(
        step=step,
        tasks=len(tasks),
        attempts=len(samples),
        sampled_attempts=sum(1 for s in samples if s > 0),
        requested_memory_mb=int(max(requested_memory)) if requested_memory else None,
        peak_memory_mb=max(peaks) if peaks else None,
        requested_cpu_cores=max(requested_cpu) if requested_cpu else None,
        peak_cpu_cores=max(cpu_peaks) if cpu_peaks else None,
        mean_cpu_cores=sum(cpu_means) / len(cpu_means) if cpu_means else None,
    )


def run_usage(pathspec: str, step_order: Sequence[str], tasks: Iterable[TaskUsage]) -> RunUsage:
    """The run's rows: a step whose tasks have no usage record did not run on Nomad."""
    by_step: dict[str, list[TaskUsage]] = {step: [] for step in step_order}
    for task in tasks:
        if SAMPLES in task.values:
            by_step.setdefault(task.step, []).append(task)
    rows = tuple(step_usage(step, found) for step, found in by_step.items() if found)
    return RunUsage(
        pathspec=pathspec,
        steps=rows,
        not_on_nomad=tuple(step for step, found in by_step.items() if not found),
    )


def _number(value: float | None, pattern: str = "{:,.0f}") -> str:
    return "-" if value is None else pattern.format(value)


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def usage_table(usage: RunUsage) -> list[str]:
    """The lines ``nomad usage`` prints."""
    header = (
        "step",
        "tasks",
        "attempts",
        "memory MB",
        "peak MB",
        "suggest MB",
        "cpu",
        "peak cpu",
        "mean cpu",
        "suggest cpu",
    )
    rows = [header]
    notes = []
    for row in usage.steps:
        rows.append(
            (
                row.step,
                str(row.tasks),
                str(row.attempts),
                _number(row.requested_memory_mb),
                _number(row.peak_memory_mb),
                _number(row.suggested_memory_mb),
                _cores(row.requested_cpu_cores),
                _number(row.peak_cpu_cores, "{:.2f}"),
                _number(row.mean_cpu_cores, "{:.2f}"),
                _cores(row.suggested_cpu_cores),
            )
        )
        if not row.sampled_attempts:
            notes.append(f"Step {row.step}: every attempt {NO_SAMPLE}; no suggestion.")
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"What the steps of {usage.pathspec} asked of Nomad and used:"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines += notes
    lines.append(
        f"Peaks are over every task and attempt; a suggestion is the peak plus "
        f"{HEADROOM - 1:.0%}, rounded up to {MEMORY_STEP_MB} MB and {CPU_STEP_CORES:g} cpu."
    )
    if usage.not_on_nomad:
        lines.append("Not run on Nomad: " + ", ".join(usage.not_on_nomad) + ".")
    return lines
