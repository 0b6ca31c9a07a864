"""Issue 23 on a real agent: what a task used, from Nomad, the links to Nomad's
UI (in the task's metadata and the launcher's lines), and right-sizing from them
(``nomad usage`` and the ``nomad_usage`` card, looked at in headless Chromium).

UsageFlow runs three steps with ``memory=1000``: ``start`` ends within a second,
then side by side ``idle`` runs 36 s with nothing allocated (the task's own footprint: the step's
Python with Metaflow, the log capture, bash; on raw_exec also Nomad's executor),
``hold`` holds 300 MB more for 36 s (two samples, at 5 s and 35 s).  Read back
through the Metaflow client.  The ``end`` step's card charts the run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from metaflow_nomad.runtime.usage import NO_SAMPLE
from metaflow_nomad.usage_chart import BAR_PX, REQUESTED_COLOUR, USED_COLOUR
from tests.integration.test_docker_tasks import docker_env, docker_s3  # noqa: F401 - fixture
from tests.support import browser, flows
from tests.support.metadata_service import (
    delete_headers_variable,
    put_headers_variable,
    service_env,
)

pytestmark = pytest.mark.integration

HOLD_MB = 300


def _tasks(run) -> dict[str, dict]:
    steps = flows.read_run(run, f"UsageFlow/{run.run_id}")["steps"]
    return {name: tasks[0]["metadata"] for name, tasks in steps.items()}


def _label(run, step: str, task_id: int) -> str:
    return f"[nomad {run.run_id}/{step}/{task_id}]"


def _check_usage(run, measured: set[str], short_unsampled: bool) -> None:
    assert run.returncode == 0, run.output
    tasks = _tasks(run)
    hold, idle, short = tasks["hold"], tasks["idle"], tasks["start"]
    # The held memory shows in the peak: within 20% of the real size once the
    # task's own footprint (the idle step's peak) is taken off.
    peak = float(hold["nomad-usage-peak-memory-mb"])
    footprint = float(idle["nomad-usage-peak-memory-mb"])
    assert abs((peak - footprint) - HOLD_MB) <= 0.2 * HOLD_MB, (peak, footprint)
    assert peak >= HOLD_MB
    assert hold["nomad-usage-requested-memory-mb"] == "1000"
    assert hold["nomad-usage-requested-cpu-cores"] == "1"
    assert int(hold["nomad-usage-samples"]) >= 1
    assert float(hold["nomad-usage-cpu-peak-cores"]) >= float(hold["nomad-usage-cpu-mean-cores"])
    assert measured <= set(hold["nomad-usage-measured"].split(","))
    # The line rounds the mean to 0.1 core, the metadata to 0.01: they agree to 0.05.
    line = f"{_label(run, 'hold', 3)} Task used peak {peak:,.0f} MB of 1,000 MB, CPU "
    said = re.search(re.escape(line) + r"(\d+\.\d) mean", run.output)
    assert said, run.output
    assert abs(float(said.group(1)) - float(hold["nomad-usage-cpu-mean-cores"])) <= 0.051
    # The short task says it had no sample, and records no number.  (A docker
    # task lives longer than its step: starting the container and fetching the
    # package from S3 can outlast the first sample, which then is a real one.)
    no_sample = f"{_label(run, 'start', 1)} Task {NO_SAMPLE}: no usage recorded."
    if short_unsampled or short["nomad-usage-samples"] == "0":
        assert no_sample in run.output
        assert short["nomad-usage-samples"] == "0"
        assert "nomad-usage-peak-memory-mb" not in short
    else:
        assert no_sample not in run.output
        assert float(short["nomad-usage-peak-memory-mb"]) > 0
    # Every task's allocation is linked to Nomad's UI, in its metadata and its lines.
    for step, task_id in (("start", 1), ("idle", 2), ("hold", 3)):
        alloc_id = tasks[step]["nomad-alloc-id"]
        url = tasks[step]["nomad-alloc-url"]
        assert url == f"{run.env['METAFLOW_NOMAD_ADDRESS']}/ui/allocations/{alloc_id}"
        assert f"{_label(run, step, task_id)} Task is running on node" in run.output or (
            f"{_label(run, step, task_id)} Task placed on node" in run.output
        )
        assert f"(allocation {alloc_id[:8]}, {url})." in run.output


CARD_HTML = """
import sys
from metaflow import Step, namespace
from metaflow.cards import get_cards
namespace(None)
card = get_cards(Step(sys.argv[1]).task, type="nomad_usage")[0]
open(sys.argv[2], "w").write(card.get())
"""


def _card_pairs(page: str) -> list[dict[str, str]]:
    pairs = []
    for attrs in re.findall(r'<g class="bar-pair" ([^>]*)>', page):
        pairs.append(dict(re.findall(r'data-([a-z-]+)="([^"]*)"', attrs)))
    return pairs


def _check_right_sizing(run, tmp_path) -> None:
    """``nomad usage`` suggests less than was asked for the step that held 300 MB,
    and the end step's card, drawn by Chromium, shows each step's bars with the
    numbers of the metadata."""
    tasks = _tasks(run)
    report = flows.flow_cli(run, "usage_flow.py", "nomad", "usage", run.run_id)
    assert report.returncode == 0, report.stdout + report.stderr
    rows = {line.split()[0]: line.split() for line in report.stdout.splitlines()[2:5]}
    hold = tasks["hold"]
    peak = f"{float(hold['nomad-usage-peak-memory-mb']):,.0f}"
    assert rows["hold"][:5] == ["hold", "1", "1", "1,000", peak], report.stdout
    assert int(rows["hold"][5].replace(",", "")) < 1000, report.stdout
    assert "Not run on Nomad: join, end." in report.stdout

    page_path = tmp_path / "usage-card.html"
    flows.client_script(
        run.workdir,
        {**flows.clean_environ(), **run.env},
        CARD_HTML,
        f"UsageFlow/{run.run_id}/end",
        str(page_path),
    )
    pairs = _card_pairs(page_path.read_text())
    memory = {p["step"]: p for p in pairs if p["chart"] == "memory"}
    assert set(memory) == {"start", "idle", "hold"}
    for step in ("idle", "hold"):
        assert float(memory[step]["used"]) == float(tasks[step]["nomad-usage-peak-memory-mb"])
        assert memory[step]["requested"] == tasks[step]["nomad-usage-requested-memory-mb"]
    png = browser.screenshot(page_path, tmp_path / "usage-card.png")
    drawn = browser.drawn_bars(png, {REQUESTED_COLOUR, USED_COLOUR}, min_height=BAR_PX)
    expected = [
        (pair["chart"], pair["step"], colour, int(pair[px]))
        for pair in pairs
        for colour, px in ((REQUESTED_COLOUR, "requested-px"), (USED_COLOUR, "used-px"))
        if int(pair[px])
    ]
    assert [(bar.colour, bar.length) for bar in drawn] == [e[2:] for e in expected], (
        drawn,
        expected,
    )
    # The hold step's used memory bar is longer than the idle step's: 300 MB more.
    used = {(chart, step): px for chart, step, colour, px in expected if colour == USED_COLOUR}
    assert used[("memory", "hold")] > used[("memory", "idle")]


def test_raw_exec_usage_and_ui_links(nomad_agent, tmp_path):
    env = flows.flow_env(nomad_agent.address, tmp_path)
    run = flows.start_flow("usage_flow.py", tmp_path, env)
    try:
        flows.wait_for(lambda: f"holding {HOLD_MB} MB" in run.output, 150, "the hold step")
        # `nomad list` links each unfinished job to its page in Nomad's UI.
        listed = subprocess.run(
            [sys.executable, "usage_flow.py", "--no-pylint", "nomad", "list"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        job_id = f"mf-usageflow-{run.run_id}-hold-3-0"
        assert f"job {job_id} status running {nomad_agent.address}/ui/jobs/{job_id}@default" in (
            listed.stdout + listed.stderr
        )
        run.wait(300)
    finally:
        run.finish(5)
    _check_usage(run, {"RSS", "Percent"}, short_unsampled=True)
    _check_right_sizing(run, tmp_path)


def test_docker_usage_and_ui_links(docker_s3, tmp_path):  # noqa: F811 - fixture import
    agent, s3 = docker_s3
    env = docker_env(agent, s3, tmp_path, "docker-usage")
    run = flows.run_flow("usage_flow.py", tmp_path, env, top_args=("--datastore=s3",), timeout=300)
    run.env = env
    _check_usage(run, {"RSS", "Usage", "Throttled Time", "Percent"}, short_unsampled=False)
    _check_right_sizing(run, tmp_path)


SERVICE_READ = """
import json, sys
from metaflow import Step, namespace
namespace(None)
print(json.dumps(Step(sys.argv[1]).task.metadata_dict))
"""


def test_the_launcher_records_in_the_metadata_service(
    nomad_agent, service_gates, metadata_service, tmp_path
):
    """With --metadata=service the launcher's records reach the service (through its
    gate, with the API key), as the task's own do."""
    public, internal = service_gates
    put_headers_variable(nomad_agent, public.api_key)
    try:
        env = flows.flow_env(nomad_agent.address, tmp_path, service_env(public, internal))
        run = flows.run_flow("sleep_flow.py", tmp_path, env, "--seconds", "6", timeout=240)
    finally:
        delete_headers_variable(nomad_agent)
    assert run.returncode == 0, run.output
    reader = {
        **flows.clean_environ(),
        "METAFLOW_DEFAULT_METADATA": "service",
        "METAFLOW_SERVICE_URL": metadata_service.url,
        "METAFLOW_HOME": str(tmp_path / "mfhome"),
        "USER": "tester",
    }
    out = flows.client_script(tmp_path, reader, SERVICE_READ, f"SleepFlow/{run.run_id}/nap")
    metadata = json.loads(out.splitlines()[-1])
    alloc_id = metadata["nomad-alloc-id"]
    assert metadata["nomad-alloc-url"] == f"{nomad_agent.address}/ui/allocations/{alloc_id}"
    assert metadata["nomad-usage-requested-memory-mb"] == "128"
    assert int(metadata["nomad-usage-samples"]) >= 1
    assert float(metadata["nomad-usage-peak-memory-mb"]) > 0
    assert "Could not record" not in run.output
