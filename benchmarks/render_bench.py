"""Rendering speed, warm (one long-lived process) and cold (what one trampoline pays).

A trampoline renders exactly one job in a fresh process, so the warm rate says
how fast the template engine is, and the cold figures (run as a script, in a
new interpreter) say what rendering costs each task: importing the render path
(Jinja), compiling the template, and the first render.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

PACKAGE_METADATA = json.dumps({"version": 0, "archive_format": "tgz", "mfcontent_version": 1})


def fixture():
    """Settings, identity and launch shaped like a real local-datastore foreach task."""
    from metaflow.metaflow_environment import MetaflowEnvironment

    from metaflow_nomad.model import JobIdentity
    from metaflow_nomad.render.bootstrap import TaskScript, build_task_launch, task_environment
    from metaflow_nomad.settings import resolve_step_settings

    settings = resolve_step_settings("work", {"driver": "raw_exec", "memory": 256})
    identity = JobIdentity("FanoutFlow", "1754000000000001", "work", "17", 0, "bench")
    root = "/tmp/bench-datastore/.metaflow"
    code_package = {
        "url": f"{root}/FanoutFlow/data/ab/abcdef0123456789",
        "sha": "abcdef0123456789",
        "metadata": PACKAGE_METADATA,
    }
    step_cli = (
        "python -u flow.py --quiet --metadata=local --environment=local --datastore=local "
        "--datastore-root=/tmp/bench-datastore/.metaflow --event-logger=nullSidecarLogger "
        "--monitor=nullSidecarMonitor --no-pylint --with=nomad step work "
        "--run-id 1754000000000001 --task-id 17 --input-paths 1754000000000001/start/1 "
        "--split-index 16 --retry-count 0 --max-user-code-retries 0"
    )
    env = task_environment(identity, code_package, "local", {}, {}, os.environ)
    task = TaskScript(identity, step_cli, code_package, "local", root, env)
    launch = build_task_launch(MetaflowEnvironment(None), task)
    return settings, identity, launch


def rate(operation: Callable[[], object], window_s: float) -> float:
    """Operations per second over a fixed wall-clock window (at least one operation)."""
    count = 0
    started = time.perf_counter()
    deadline = started + window_s
    while True:
        operation()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def cold() -> dict:
    """Seconds a fresh process spends importing the render path, then rendering once and twice."""
    started = time.perf_counter()
    from metaflow_nomad.render.inputs import RenderInputs
    from metaflow_nomad.render.jobspec import render_job, step_request

    imported = time.perf_counter()
    settings, identity, launch = fixture()
    prepared = time.perf_counter()
    render_job(step_request(settings, identity, launch), RenderInputs())
    first = time.perf_counter()
    render_job(step_request(settings, identity, launch), RenderInputs())
    second = time.perf_counter()
    return {
        "import_s": imported - started,
        "first_render_s": first - prepared,
        "warm_render_s": second - first,
    }


if __name__ == "__main__":
    json.dump(cold(), sys.stdout)
