"""Read a run's usage records back through the Metaflow client, wherever the run's
metadata lives (local, or the metadata service for deployed and old runs)."""

from __future__ import annotations

from collections import defaultdict

from metaflow_nomad.usage_report import RunUsage, TaskUsage, run_usage

USAGE_PREFIX = "nomad-usage-"


def task_usage(task) -> TaskUsage:
    """One ``metaflow.Task``'s usage fields, every attempt's value of each."""
    values: dict[str, list[str]] = defaultdict(list)
    for datum in task.metadata:
        if datum.name.startswith(USAGE_PREFIX):
            values[datum.name].append(datum.value)
    return TaskUsage(step=task.parent.id, task_id=task.id, values=dict(values))


def read_run_usage(run) -> RunUsage:
    """The rows of one ``metaflow.Run``, its steps in the order they started."""
    steps = sorted(run.steps(), key=lambda step: step.created_at)
    tasks = [task_usage(task) for step in steps for task in step.tasks()]
    return run_usage(run.pathspec, [step.id for step in steps], tasks)
