"""Issue 13 item 3: no stored credentials.  On a cluster with ACLs and mutual TLS,
a deployed run acts with its workload identity alone, under the policy bound to
its runner job; without that policy it fails saying what to do; and no token
(the user's, the management token, or the identity itself) is written anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.deploy import (
    allocations,
    deploy_cli,
    runner_log,
    secure_cluster,
    triggered_run_id,
    wait_runner_done,
)
from tests.support.leaks import decoded_payloads

pytestmark = pytest.mark.integration

# Every workload identity is a JWT, whose header always starts like this.
JWT_HEADER = "eyJhbGciOi"


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    yield from secure_cluster(tmp_path_factory)


def _everything_written(cluster, workdir: Path, tasks: dict[str, str | None]) -> dict[str, str]:
    """Job specs (every version, with their HCL), task logs, Variables, Metaflow files.

    ``tasks`` maps each job ID to the name of its task (None for a parameterized
    parent job, which runs nothing itself).
    """
    places = {}
    for job_id, task in tasks.items():
        quoted = job_id.replace("/", "%2F")
        job = cluster.api("GET", f"/v1/job/{quoted}")
        places[f"job {job_id}"] = json.dumps(job)
        # Base64 payloads (a task's script, a dispatched task's env in mf_command), decoded.
        places.update({f"job {job_id} {k}": v for k, v in decoded_payloads(job).items()})
        places[f"versions {job_id}"] = json.dumps(cluster.api("GET", f"/v1/job/{quoted}/versions"))
        if task is None:
            submission = cluster.api("GET", f"/v1/job/{quoted}/submission?version=0")
            places[f"submission {job_id}"] = json.dumps(submission)
            continue
        for alloc in allocations(cluster, job_id):
            for stream in ("stdout", "stderr"):
                places[f"log {job_id} {stream}"] = cluster.agent.api_text(
                    f"/v1/client/fs/logs/{alloc['ID']}?task={task}&type={stream}&plain=true"
                    f"&namespace={cluster.namespace}"
                )
    places["variables"] = json.dumps(cluster.agent.api("GET", "/v1/vars?namespace=*"))
    for path in (workdir / ".metaflow").rglob("*"):
        if path.is_file():
            places[f"file {path.relative_to(workdir)}"] = path.read_bytes().decode("latin-1")
    return places


def test_a_deployed_run_leaves_no_token_in_any_jobspec_log_variable_or_artifact(secure, tmp_path):
    create = deploy_cli(secure, tmp_path, "deploy_flow.py", "create")
    assert create.returncode == 0, create.output
    secure.bind_runner_policy(tmp_path, "deploy_flow.py", "deployflow")
    trigger = deploy_cli(secure, tmp_path, "deploy_flow.py", "trigger", "--alpha", "2")
    run_id = triggered_run_id(trigger)
    runner = wait_runner_done(secure, "deployflow", run_id)
    status = deploy_cli(secure, tmp_path, "deploy_flow.py", "status", run_id)
    assert status.stdout.strip().splitlines()[-1] == "Succeeded", status.output
    from metaflow_nomad.api.lookup import find_jobs

    steps = [j["ID"] for j in find_jobs(secure.admin(), "DeployFlow", run_id, include_dead=True)]
    assert len(steps) == 2
    parents = {step.split("/")[0] for step in steps}
    tasks = {"deployflow": None, runner["ID"]: "runner", **dict.fromkeys(parents)}
    tasks.update(dict.fromkeys(steps, "metaflow"))
    places = _everything_written(secure, tmp_path, tasks)
    places["create output"] = create.output
    places["trigger output"] = trigger.output
    assert "Starting run" in places[f"log {runner['ID']} stderr"]
    assert any("message: hello 4" in t for k, t in places.items() if k.startswith("log mf-"))
    assert any(k.startswith("file ") and "/data/" in k for k in places)  # the artifacts
    secrets = {
        "the user's token": secure.user_token,
        "the management token": secure.agent.management_token,
        "a workload identity (JWT)": JWT_HEADER,
    }
    leaks = [
        f"{what} in {where}"
        for what, v in secrets.items()
        for where, text in places.items()
        if v in text
    ]
    assert leaks == []
    # The identity the runner had: exposed to its task only, by Nomad, as NOMAD_TOKEN.
    task = secure.api("GET", "/v1/job/deployflow")["TaskGroups"][0]["Tasks"][0]
    assert task["Identity"] == {"Env": True, "File": False}
    assert not {"NOMAD_TOKEN", "METAFLOW_NOMAD_TOKEN", "NOMAD_CLIENT_KEY"} & set(task["Env"])
    deploy_cli(secure, tmp_path, "deploy_flow.py", "delete")


def test_a_runner_without_its_policy_fails_and_says_what_to_do(secure, tmp_path):
    create = deploy_cli(secure, tmp_path, "deploy_flow.py", "--name=unbound", "create")
    assert create.returncode == 0, create.output
    assert "nomad-workflows policy" in create.output
    run_id = triggered_run_id(
        deploy_cli(secure, tmp_path, "deploy_flow.py", "--name=unbound", "trigger")
    )
    runner = wait_runner_done(secure, "unbound", run_id, timeout=180)
    status = deploy_cli(secure, tmp_path, "deploy_flow.py", "--name=unbound", "status", run_id)
    assert status.stdout.strip().splitlines()[-1] == "Failed"
    (alloc,) = allocations(secure, runner["ID"])
    # The runner's first call, reading its own job, is refused.
    log = runner_log(secure, alloc["ID"], "stdout") + runner_log(secure, alloc["ID"], "stderr")
    assert "workload identity is not allowed to do this in namespace 'team-a'" in log
    assert "nomad-workflows policy" in log and "Traceback" not in log
    # Nothing ran: no step's job was dispatched.
    version = secure.api("GET", "/v1/job/unbound")["TaskGroups"][0]["Tasks"][0]["Env"][
        "METAFLOW_NOMAD_STEP_JOBS"
    ]
    step_jobs = secure.api("GET", f"/v1/jobs?prefix=mf-deployflow-d{version}-")
    assert len(step_jobs) == 2 and not [j for j in step_jobs if j.get("ParentID")]
    deploy_cli(secure, tmp_path, "deploy_flow.py", "--name=unbound", "delete")
