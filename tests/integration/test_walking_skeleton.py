"""Issue 2: steps run as real Nomad jobs on the local agent."""

import re

import pytest

from metaflow_nomad.api.lookup import find_jobs
from tests.support.nomad_checks import settled_allocations

pytestmark = pytest.mark.integration


def _jobs_of_run(client, flow_name, run_id):
    return find_jobs(client, flow_name, run_id, include_dead=True)


def test_user_guide_flow_runs_on_nomad(run_flow, nomad_client):
    result = run_flow("nomad_flow.py")
    assert result.returncode == 0, result.output
    assert "Computation result: 332833500" in result.output
    jobs = _jobs_of_run(nomad_client, "NomadFlow", result.run_id)
    assert [j["Meta"]["metaflow.step_name"] for j in jobs] == ["compute_on_nomad"]
    job = nomad_client.job(jobs[0]["ID"])
    task = job["TaskGroups"][0]["Tasks"][0]
    # @nomad(cpu=2, memory=1000, disk=500) beats @resources(cpu=1, memory=500).
    assert task["Resources"]["CPU"] == 2000
    assert task["Resources"]["MemoryMB"] == 1000
    assert job["TaskGroups"][0]["EphemeralDisk"]["SizeMB"] == 500
    assert job["Type"] == "batch"
    assert job["TaskGroups"][0]["RestartPolicy"]["Attempts"] == 0
    assert job["TaskGroups"][0]["ReschedulePolicy"]["Attempts"] == 0
    assert not job["TaskGroups"][0]["ReschedulePolicy"]["Unlimited"]
    allocs = settled_allocations(lambda: nomad_client.job_allocations(jobs[0]["ID"])[0])
    assert allocs[0]["ClientStatus"] == "complete"
    assert "cpu=2000 MHz (@nomad)" in result.output


def test_failing_step_fails_the_run_and_says_why(run_flow, nomad_client):
    result = run_flow("fail_flow.py")
    assert result.returncode != 0
    assert "boom from the nomad task" in result.output
    assert re.search(r"Step failed on Nomad .*the task exited with code 1", result.output)
    assert "Step explode (task-id" in result.output
    jobs = _jobs_of_run(nomad_client, "FailFlow", result.run_id)
    allocs, _ = nomad_client.job_allocations(jobs[0]["ID"])
    assert allocs[0]["ClientStatus"] == "failed"


def test_with_option_reaches_the_submitted_job(run_flow, nomad_client):
    result = run_flow("with_flow.py", "--with", "nomad:cpu=300,memory=333,disk=444")
    assert result.returncode == 0, result.output
    assert "x + 1 = 42" in result.output
    jobs = _jobs_of_run(nomad_client, "WithFlow", result.run_id)
    assert sorted(j["Meta"]["metaflow.step_name"] for j in jobs) == ["end", "start"]
    for stub in jobs:
        job = nomad_client.job(stub["ID"])
        resources = job["TaskGroups"][0]["Tasks"][0]["Resources"]
        assert (resources["CPU"], resources["MemoryMB"]) == (300, 333)
        assert job["TaskGroups"][0]["EphemeralDisk"]["SizeMB"] == 444


def test_local_datastore_without_shared_filesystem_is_refused(run_flow, nomad_client):
    result = run_flow(
        "with_flow.py", "--with", "nomad", env={"METAFLOW_NOMAD_SHARED_FILESYSTEM": ""}
    )
    assert result.returncode != 0
    assert "METAFLOW_NOMAD_SHARED_FILESYSTEM=1" in result.output
    assert "--datastore=s3" in result.output
    assert nomad_client.list_jobs(prefix="mf-withflow-") == [] or all(
        j["Meta"]["metaflow.run_id"] != result.run_id
        for j in nomad_client.list_jobs(prefix="mf-withflow-")
    )
