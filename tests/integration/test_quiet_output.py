"""Issue 12: quiet, useful output.  A stopped task says so in one line (who or what
stopped it) without echoing its interrupt tracebacks; a failed task's traceback is
shown once; nothing on the submit path prints a Python traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from metaflow_nomad.api.lookup import find_jobs
from tests.support.flows import flow_env, start_flow, wait_for
from tests.support.nomad_checks import running_allocations

pytestmark = pytest.mark.integration

USAGE_LINE = re.compile(r"Task (used peak .*|ended before Nomad's first usage sample: .*)")


def _launcher_lines(output: str, run_id: str, step: str, task_id: str) -> list[str]:
    """What one task's launcher printed (its lines carry "[nomad RUN/STEP/TASK]")."""
    tag = f"[nomad {run_id}/{step}/{task_id}] "
    return [line.split(tag, 1)[1] for line in output.splitlines() if tag in line]


def test_nomad_kill_of_a_foreach_prints_one_line_per_task(nomad_agent, nomad_client, tmp_path):
    env = flow_env(nomad_agent.address, tmp_path)
    run = start_flow("nap_foreach_flow.py", tmp_path, env)
    try:
        run_id = run.wait_run_id()

        def all_napping():
            jobs = find_jobs(nomad_client, "NapForeachFlow", run_id)
            running = running_allocations(nomad_client, [j["ID"] for j in jobs])
            return len(jobs) == 3 and run.output.count("napping") == 3 and len(running) == 3

        wait_for(all_napping, 120, "three running tasks that printed their first line")
        kill = subprocess.run(
            [sys.executable, "nap_foreach_flow.py", "--no-pylint", "nomad", "kill"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Stopped 3 Nomad job(s)." in kill.stderr, kill.stdout + kill.stderr
        assert run.wait(120) != 0
    finally:
        run.kill()
    output = run.output
    task_ids = sorted(set(re.findall(rf"\[nomad {run_id}/nap/(\d+)\]", output)))
    assert len(task_ids) == 3
    for task_id in task_ids:
        job_id = f"mf-napforeachflow-{run_id}-nap-{task_id}-0"
        said = _launcher_lines(output, run_id, "nap", task_id)
        running = next(n for n, line in enumerate(said) if line.startswith("Task is running"))
        # One line says why it stopped; the usage line (docs/usage.md) may come before it.
        *usage, stopped = said[running + 1 :]
        assert len(usage) <= 1 and all(USAGE_LINE.match(line) for line in usage), usage
        held_back = re.fullmatch(
            re.escape(
                "Task stopped: the Nomad job was stopped from outside (alloc not needed due to "
                "job update), e.g. by `nomad job stop`, the flow's `nomad kill` or the Nomad UI. "
                f"Job {job_id} is not retried."
            )
            + r"( Its last (\d+) log line\(s\), written while Nomad stopped it, are kept in the "
            r"task's log \(the `logs` command\)\.)?",
            stopped,
        )
        assert held_back, stopped
        kept = _task_log(tmp_path, env, f"{run_id}/nap/{task_id}")
        assert "napping" in kept
        print(f"task {task_id}: held back {held_back.group(2) or 0} line(s); its log:\n{kept}")
    for noise in ("Traceback", "KeyboardInterrupt", "nomad alloc logs", "Nomad task event"):
        assert noise not in output
    print(f"`nomad kill` of 3 running foreach tasks: {len(output.splitlines())} lines of output")


def _task_log(workdir, env, pathspec: str) -> str:
    """What ``python flow.py logs`` shows of a task: the log Nomad's stop left behind."""
    return subprocess.run(
        [sys.executable, "nap_foreach_flow.py", "--no-pylint", "logs", pathspec],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def test_ctrl_c_reports_the_signal_in_one_line(nomad_agent, nomad_client, tmp_path):
    run = start_flow("sleep_flow.py", tmp_path, flow_env(nomad_agent.address, tmp_path))
    try:
        run_id = run.wait_run_id()
        wait_for(lambda: "napping on nomad" in run.output, 120, "the task's first line")
        [job] = find_jobs(nomad_client, "SleepFlow", run_id)
        os.killpg(run.proc.pid, signal.SIGINT)
        run.finish(60)
    finally:
        run.kill()
    said = _launcher_lines(run.output, run_id, "nap", "2")
    assert said[-1] == f"Stopped Nomad job {job['ID']} (received SIGINT)."
    assert not [s for s in said if "SIGINT" in s][:-1]
    assert "Traceback" not in run.output


def test_a_failed_tasks_traceback_is_shown_once(run_flow):
    result = run_flow("fail_flow.py")
    assert result.returncode != 0
    output = result.output
    assert output.count("ValueError: boom from the nomad task") == 1
    assert "Task ended failed: the task exited with code 1" in output
    # Everything Nomad's raw logs hold was streamed already: no second copy.
    assert "nomad alloc logs" not in output


BROKEN_TEMPLATE = """{# metaflow-nomad-template-api: v1 #}
{% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
{% block task_extra %}
      this is = = not hcl
{% endblock %}
"""


def test_a_submission_error_has_no_traceback(run_flow, nomad_client):
    template = run_flow.workdir / "broken.nomad.hcl.j2"
    template.write_text(BROKEN_TEMPLATE)
    result = run_flow("with_flow.py", "--with", f"nomad:template={template}")
    assert result.returncode != 0
    said = _launcher_lines(result.output, result.run_id, "start", "1")
    lines = [line.split(")] ", 1)[-1] for line in result.output.splitlines()]
    # The excerpt marks the rejected rendered line; the headline must name that line
    # and the template line (4) that produced it.
    [marked] = [line for line in lines if line.endswith("|       this is = = not hcl")]
    assert marked.startswith(">")
    rendered_line = int(marked[1:].split("|")[0])
    assert said == [
        f"Nomad rejected the rendered jobspec: {template}:4: this template line produced "
        f"rendered line {rendered_line}, which Nomad rejected:",
    ]
    assert "Traceback" not in result.output
    assert "This failed task will not be retried." in result.output
    assert not find_jobs(nomad_client, "WithFlow", result.run_id, include_dead=True)
