"""Issue 21: flows that start flows.  Deployed flows wait on events (``@trigger``) and on
other flows finishing (``@trigger_on_finish``); events are published from a shell, from
Python, and by a deployed run that finishes.

Every test runs on the plain agent and on an agent with ACLs and mutual TLS, where the
user's token may only write in one namespace and each runner has only its workload
identity and the policy `nomad-workflows policy` prints.  Outcomes are read from
outside: the Nomad API, the Metaflow client, and the commands' own output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from metaflow_nomad.deploy.event_dispatch import pending_path
from metaflow_nomad.deploy.naming import run_id_for_runner_job
from tests.support.deploy import (
    allocations,
    copy_flow,
    deploy_cli,
    runner_jobs_of,
    runner_log,
    triggered_run_id,
    wait_runner_done,
)
from tests.support.flows import client_script, wait_for

pytestmark = pytest.mark.integration

# flow file -> deployment
FLOWS = {
    "etl_flow.py": "etlflow",
    "train_on_finish_flow.py": "trainflow",
    "event_flow.py": "eventflow",
    "two_events_flow.py": "twoeventsflow",
}

READ_RUN = """
import json, sys
from metaflow import Flow, Run, namespace
namespace(None)
def _run(path):
    return Run(path) if "/" in path else Flow(path).latest_run
run = _run(sys.argv[1])
print(json.dumps({"successful": run.successful,
                  "data": {k: getattr(run.data, k) for k in sys.argv[2:]}}))
"""

PUBLISH_FROM_PYTHON = """
import sys
from metaflow_nomad.events import NomadEvent
for d in NomadEvent(sys.argv[1]).publish({"path": sys.argv[2]}):
    print(d.deployment, d.run_id, ",".join(d.missing))
"""


@pytest.fixture(scope="module")
def deployed(deploy_cluster, tmp_path_factory):
    """The four flows, deployed by the user (each runner's policy bound by the admin);
    yields the workdir and what each `create` printed."""
    workdir = tmp_path_factory.mktemp(f"triggers-{deploy_cluster.name}")
    created = {}
    for flow_file, deployment in FLOWS.items():
        create = deploy_cli(deploy_cluster, workdir, flow_file, "create")
        assert create.returncode == 0, create.output
        deploy_cluster.bind_runner_policy(workdir, flow_file, deployment)
        created[deployment] = create.output
    yield workdir, created
    for flow_file in FLOWS:
        deploy_cli(deploy_cluster, workdir, flow_file, "delete")  # the test deleted one


def _read_run(cluster, workdir: Path, pathspec: str, *artifacts: str) -> dict:
    """The artifacts of a run (the latest run of a flow if ``pathspec`` is a flow name)."""
    output = client_script(workdir, cluster.env(workdir), READ_RUN, pathspec, *artifacts)
    return json.loads(output.splitlines()[-1])["data"]


def _finished_run(cluster, workdir: Path, deployment: str, pathspec: str, *artifacts: str):
    """The run's success and artifacts once its runner ended (its log if it failed)."""
    runner = wait_runner_done(cluster, deployment, pathspec.split("/")[1])
    [alloc] = allocations(cluster, runner["ID"])
    log = runner_log(cluster, alloc["ID"])
    assert alloc["ClientStatus"] == "complete", log
    output = client_script(workdir, cluster.env(workdir), READ_RUN, pathspec, *artifacts)
    return json.loads(output.splitlines()[-1]), log


def _publish(cluster, workdir: Path, name: str, *payload: str, ok: bool = True) -> str:
    """`metaflow-nomad event publish NAME --payload k=v ...`, as the user; its output."""
    command = [str(Path(sys.executable).parent / "metaflow-nomad"), "event", "publish", name]
    for field in payload:
        command += ["--payload", field]
    done = subprocess.run(
        command, cwd=workdir, env=cluster.env(workdir), capture_output=True, text=True
    )
    print(f"$ {' '.join(command[1:])} (exit {done.returncode})\n{done.stdout}{done.stderr}")
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done.stdout + done.stderr


def _grant_pending_events(cluster) -> None:
    """What the administrator does when told: add the Variables rule to the user's policy."""
    from metaflow_nomad.deploy.policy import pending_events_rule

    rules = f'namespace "{cluster.namespace}" {{\n  policy = "write"\n{pending_events_rule()}}}\n'
    name = f"{cluster.namespace}-write"
    cluster.agent.api("POST", f"/v1/acl/policy/{name}", {"Name": name, "Rules": rules})


def _started_run(output: str, deployment: str) -> str:
    for line in output.splitlines():
        if line.startswith(f"{deployment}: started run "):
            return line.split()[-1]
    raise AssertionError(f"{deployment} was not started:\n{output}")


def _the_run_of(cluster, deployment: str, timeout: float = 120) -> str:
    """The run id of the deployment's only run, once it has one."""
    runs = wait_for(lambda: runner_jobs_of(cluster, deployment), timeout, f"a run of {deployment}")
    assert len(runs) == 1, [r["ID"] for r in runs]
    return run_id_for_runner_job(runs[0]["ID"])


def _pending(cluster, deployment: str) -> dict | None:
    try:
        return cluster.api("GET", f"/v1/var/{pending_path(deployment)}")
    except urllib.error.HTTPError as missing:
        assert missing.code == 404
        return None


def test_train_starts_when_etl_finishes_and_reads_the_etl_run(deploy_cluster, deployed):
    workdir, created = deployed
    assert "A run starts on the event metaflow.EtlFlow.end" in created["trainflow"]
    assert runner_jobs_of(deploy_cluster, "trainflow") == []

    etl_run = triggered_run_id(deploy_cli(deploy_cluster, workdir, "etl_flow.py", "trigger"))
    _, etl_log = _finished_run(deploy_cluster, workdir, "etlflow", f"EtlFlow/{etl_run}")
    train_run = _the_run_of(deploy_cluster, "trainflow")
    train, _ = _finished_run(
        deploy_cluster,
        workdir,
        "trainflow",
        f"TrainFlow/{train_run}",
        "upstream",
        "upstream_rows",
        "event_name",
        "seen_in_end",
    )
    assert train["successful"], train
    assert train["data"] == {
        "upstream": f"EtlFlow/{etl_run}",
        "upstream_rows": 1200,
        "event_name": "metaflow.EtlFlow.end",
        "seen_in_end": f"EtlFlow/{etl_run}",
    }
    assert f"trainflow started run {train_run}" in etl_log
    listed = deploy_cli(deploy_cluster, workdir, "train_on_finish_flow.py", "list-runs")
    assert f"triggered by run EtlFlow/{etl_run}" in listed.output


def test_an_event_with_a_payload_starts_a_flow_with_the_mapped_parameters(deploy_cluster, deployed):
    workdir, created = deployed
    assert "A run starts on the event data_ready" in created["eventflow"]
    published = _publish(
        deploy_cluster,
        workdir,
        "data_ready",
        "table_name=sales",
        "row_count=1200",
        'options={"k": [1, 2]}',
    )
    run_id = _started_run(published, "eventflow")
    run, _ = _finished_run(
        deploy_cluster, workdir, "eventflow", f"EventFlow/{run_id}", "got", "event"
    )
    assert run["successful"], run
    assert run["data"]["got"] == {"table": "sales", "rows": 1200, "options": {"k": [1, 2]}}
    assert run["data"]["event"]["name"] == "data_ready"
    assert run["data"]["event"]["type"] == "event"
    status = deploy_cli(deploy_cluster, workdir, "event_flow.py", "status", run_id)
    assert "Triggered by event data_ready." in status.output
    assert status.stdout.strip().splitlines()[-1] == "Succeeded"
    if deploy_cluster.secure:
        return  # a step has no token on this cluster (docs/deploy.md: from a step)

    # From a step on Nomad: the step reaches its cluster through its Task API socket.
    copy_flow("publisher_flow.py", workdir)
    publisher = subprocess.run(
        [sys.executable, "publisher_flow.py", "--no-pylint", "run"],
        cwd=workdir,
        env=deploy_cluster.env(workdir),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert publisher.returncode == 0, publisher.stdout + publisher.stderr
    [from_step] = _read_run(deploy_cluster, workdir, "PublisherFlow", "started")["started"]
    run, _ = _finished_run(deploy_cluster, workdir, "eventflow", f"EventFlow/{from_step}", "got")
    assert run["data"]["got"] == {"table": "from_a_step", "rows": 7, "options": {}}


def test_a_flow_waiting_on_two_events_starts_after_both_and_never_once_deleted(
    deploy_cluster, deployed
):
    workdir, created = deployed
    assert "all of the events left_ready, mfns.right_ready" in created["twoeventsflow"]
    env = deploy_cluster.env(workdir)
    if deploy_cluster.secure:
        refused = _publish(deploy_cluster, workdir, "left_ready", "path=/data/left", ok=False)
        assert "keeps those that arrived in the Nomad Variable metaflow/triggers/" in refused
        assert 'path "metaflow/triggers/*"' in refused and "Traceback" not in refused
        _grant_pending_events(deploy_cluster)

    first = client_script(workdir, env, PUBLISH_FROM_PYTHON, "left_ready", "/data/left")
    assert first.split() == ["twoeventsflow", "None", "mfns.right_ready"]
    time.sleep(2)
    assert runner_jobs_of(deploy_cluster, "twoeventsflow") == []
    assert _pending(deploy_cluster, "twoeventsflow") is not None

    run_id = _started_run(
        _publish(deploy_cluster, workdir, "mfns.right_ready", "path=/data/right"), "twoeventsflow"
    )
    run, _ = _finished_run(
        deploy_cluster, workdir, "twoeventsflow", f"TwoEventsFlow/{run_id}", "events", "paths"
    )
    assert run["successful"], run
    assert run["data"] == {
        "events": ["left_ready", "mfns.right_ready"],
        "paths": ["/data/left", "/data/right"],
    }
    assert _pending(deploy_cluster, "twoeventsflow") is None
    assert [
        run_id_for_runner_job(j["ID"]) for j in runner_jobs_of(deploy_cluster, "twoeventsflow")
    ] == [run_id]

    # Deleted with an event pending: that event is forgotten, and nothing starts it again.
    again = client_script(workdir, env, PUBLISH_FROM_PYTHON, "left_ready", "/data/left2")
    assert again.split() == ["twoeventsflow", "None", "mfns.right_ready"]
    deleted = deploy_cli(deploy_cluster, workdir, "two_events_flow.py", "delete")
    assert deleted.returncode == 0, deleted.output
    assert _pending(deploy_cluster, "twoeventsflow") is None
    after = _publish(deploy_cluster, workdir, "mfns.right_ready", "path=/data/right2")
    assert "No deployment waits on the event mfns.right_ready." in after
    assert len(runner_jobs_of(deploy_cluster, "twoeventsflow")) == 1
