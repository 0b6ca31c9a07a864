"""Issue 13 item 4: a deployed run stopped by the user, its runner lost, its flow
redeployed while it runs.  ``terminate`` runs on the plain agent and on the
ACL+mTLS agent; the lost runner and the redeploy run on the ACL+mTLS agent only,
where the runner acts with its workload identity alone: the plain agent takes the
same code path with no token, and each of those tests costs half a minute of CI."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.support.deploy import (
    active_jobs_of_run,
    allocations,
    deploy_cli,
    runner_job_of,
    running_allocations,
    triggered_run_id,
    wait_runner_done,
    wait_step_running,
)
from tests.support.flows import client_script, wait_for

pytestmark = pytest.mark.integration

FLOW = "DeploySleepFlow"
FILE = "deploy_sleep_flow.py"
DEPLOYMENT = "deploysleepflow"


@pytest.fixture(scope="module")
def sleeper(deploy_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"sleeper-{deploy_cluster.name}")
    create = deploy_cli(deploy_cluster, workdir, FILE, "create")
    assert create.returncode == 0, create.output
    deploy_cluster.bind_runner_policy(workdir, FILE, DEPLOYMENT)
    yield workdir
    deploy_cli(deploy_cluster, workdir, FILE, "delete")


def _trigger(cluster, workdir, seconds: int) -> str:
    return triggered_run_id(
        deploy_cli(cluster, workdir, FILE, "trigger", "--seconds", str(seconds))
    )


def _status(cluster, workdir, run_id: str) -> str:
    return deploy_cli(cluster, workdir, FILE, "status", run_id).stdout.strip().splitlines()[-1]


def test_terminate_stops_the_runner_and_every_step_job(deploy_cluster, sleeper):
    run_id = _trigger(deploy_cluster, sleeper, 600)
    nap = wait_step_running(deploy_cluster, FLOW, run_id, "nap")
    runner = runner_job_of(deploy_cluster, DEPLOYMENT, run_id)
    started = time.monotonic()
    terminate = deploy_cli(deploy_cluster, sleeper, FILE, "terminate", run_id)
    assert terminate.returncode == 0, terminate.output
    took = time.monotonic() - started
    # No job of the run is left running: not the runner, not the step it was running.
    assert active_jobs_of_run(deploy_cluster, FLOW, run_id) == []
    left = wait_for(
        lambda: not running_allocations(deploy_cluster, [runner["ID"], nap["ID"]]) or None,
        60,
        "the runner's and the step's allocations to stop",
    )
    assert left
    assert deploy_cluster.api("GET", f"/v1/job/{nap['ID'].replace('/', '%2F')}")["Stop"] is True
    assert _status(deploy_cluster, sleeper, run_id) == "Terminated"
    print(f"terminate returned after {took:.1f}s with nothing left running")
    again = deploy_cli(deploy_cluster, sleeper, FILE, "terminate", run_id)
    assert again.returncode == 0 and "is not running (Terminated)" in again.output


# The production-shaped cluster only (see the module's docstring).
ACL_ONLY = pytest.mark.parametrize("deploy_cluster", ["acl"], indirect=True)


@ACL_ONLY
def test_a_lost_runner_is_replaced_and_resumes_the_run_reusing_finished_steps(
    deploy_cluster, sleeper
):
    # The nap outlasts the replacement runner's start even on a busy machine: the
    # replacement must find the lost attempt's step still running and stop it.
    run_id = _trigger(deploy_cluster, sleeper, 30)
    first_nap = wait_step_running(deploy_cluster, FLOW, run_id, "nap")
    runner = runner_job_of(deploy_cluster, DEPLOYMENT, run_id)
    (lost,) = [
        a for a in allocations(deploy_cluster, runner["ID"]) if a["ClientStatus"] == "running"
    ]
    # What a drained or failed node does to the runner: its allocation goes away.
    deploy_cluster.api("POST", f"/v1/allocation/{lost['ID']}/stop")
    lost_at = time.monotonic()
    wait_runner_done(deploy_cluster, DEPLOYMENT, run_id, timeout=240)
    print(f"run finished {time.monotonic() - lost_at:.1f}s after its runner was lost")
    assert _status(deploy_cluster, sleeper, run_id) == "Succeeded"
    allocs = allocations(deploy_cluster, runner["ID"])
    assert [a["ClientStatus"] for a in allocs] == ["complete", "complete"]
    # The lost attempt's step job was stopped, not left to run beside the resumed one.
    assert deploy_cluster.api("GET", f"/v1/job/{first_nap['ID'].replace('/', '%2F')}")["Stop"]
    resumed = run_id + "-r1"
    code = (
        "import json\n"
        "from metaflow import DeployedFlow, Run, namespace\n"
        "namespace(None)\n"
        f"triggered = DeployedFlow.get_triggered_run({DEPLOYMENT!r}, {run_id!r}, "
        "impl='nomad_workflows')\n"
        "run = triggered.run\n"
        "tasks = {s.id: [t.metadata_dict.get('nomad-job-id') for t in s] for s in run}\n"
        f"first = Run('{FLOW}/{run_id}')\n"
        "print(json.dumps([run.pathspec, run.successful, tasks, first.finished,\n"
        "                  run['start'].task.origin_pathspec]))\n"
    )
    out = client_script(sleeper, deploy_cluster.env(sleeper), code)
    pathspec, successful, tasks, first_finished, origin = json.loads(out.splitlines()[-1])
    assert (pathspec, successful, first_finished) == (f"{FLOW}/{resumed}", True, False)
    # `start` finished before the loss: cloned, not run again; `nap` and `end` ran again.
    assert origin.startswith(f"{FLOW}/{run_id}/start/")
    assert re.match(r"mf-deploysleepflow-d\w+-nap/dispatch-", tasks["nap"][0])
    assert tasks["nap"][0] != first_nap["ID"]
    log = "".join(
        deploy_cluster.agent.api_text(
            f"/v1/client/fs/logs/{allocs[-1]['ID']}?task=runner&type=stderr&plain=true"
            f"&namespace={deploy_cluster.namespace or 'default'}"
        )
    )
    assert f"The runner of {run_id} was lost; resuming it as {resumed}" in log


@ACL_ONLY
def test_a_redeploy_does_not_break_the_run_in_flight(deploy_cluster, tmp_path):
    create = deploy_cli(deploy_cluster, tmp_path, FILE, "--name=sleeper-v", "create")
    assert create.returncode == 0, create.output
    deploy_cluster.bind_runner_policy(tmp_path, FILE, "sleeper-v", name="sleeper-v")
    old_steps = _step_jobs_version(deploy_cluster, "sleeper-v")
    run_id = triggered_run_id(
        deploy_cli(deploy_cluster, tmp_path, FILE, "--name=sleeper-v", "trigger", "--seconds", "12")
    )
    wait_step_running(deploy_cluster, FLOW, run_id, "nap")
    flow = tmp_path / FILE
    flow.write_text(
        flow.read_text()
        .replace('VERSION = "v1"', 'VERSION = "v2"')
        .replace("memory=128", "memory=160")
    )
    redeploy = deploy_cli(deploy_cluster, tmp_path, FILE, "--name=sleeper-v", "create")
    assert redeploy.returncode == 0, redeploy.output
    new_steps = _step_jobs_version(deploy_cluster, "sleeper-v")
    assert new_steps != old_steps
    # The old step jobs stay while the run in flight may still dispatch them.
    assert deploy_cluster.api("GET", f"/v1/job/mf-deploysleepflow-d{old_steps}-end")
    wait_runner_done(deploy_cluster, "sleeper-v", run_id)
    second = triggered_run_id(
        deploy_cli(deploy_cluster, tmp_path, FILE, "--name=sleeper-v", "trigger", "--seconds", "1")
    )
    wait_runner_done(deploy_cluster, "sleeper-v", second)
    code = (
        "import json\nfrom metaflow import Run, namespace\nnamespace(None)\n"
        f"old, new = Run('{FLOW}/{run_id}'), Run('{FLOW}/{second}')\n"
        "print(json.dumps([old.successful, old.data.started_by, old.data.ended_by,\n"
        "                  new.successful, new.data.ended_by,\n"
        "                  old['end'].task.metadata_dict.get('nomad-job-id')]))\n"
    )
    out = client_script(tmp_path, deploy_cluster.env(tmp_path), code)
    old_ok, started_by, ended_by, new_ok, new_ended_by, old_end_job = json.loads(
        out.splitlines()[-1]
    )
    # The run in flight finished on the code and step jobs it started with.
    assert (old_ok, started_by, ended_by) == (True, "v1", "v1")
    assert old_end_job.startswith(f"mf-deploysleepflow-d{old_steps}-end/dispatch-")
    assert (new_ok, new_ended_by) == (True, "v2")
    # A later create drops the step jobs no run uses any more.
    assert deploy_cli(deploy_cluster, tmp_path, FILE, "--name=sleeper-v", "create").returncode == 0
    with pytest.raises(Exception, match="404"):
        deploy_cluster.api("GET", f"/v1/job/mf-deploysleepflow-d{old_steps}-end")
    delete = deploy_cli(deploy_cluster, tmp_path, FILE, "--name=sleeper-v", "delete")
    assert delete.returncode == 0, delete.output


def _step_jobs_version(cluster, deployment: str) -> str:
    runner = cluster.api("GET", f"/v1/job/{deployment}")
    return runner["TaskGroups"][0]["Tasks"][0]["Env"]["METAFLOW_NOMAD_STEP_JOBS"]
