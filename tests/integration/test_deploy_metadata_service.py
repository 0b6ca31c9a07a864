"""A deployed flow on Metaflow's metadata service, on a cluster with ACLs and mTLS.

The runner and its steps reach the service at its internal URL, each request
checked for the API key by a gate (tests/support/metadata_service.py), and read
the key from the Nomad Variable with their workload identity only.  The steps run
in the deployment's production namespace, so a card (which reads its task back
through the client API) is rendered.  The key is in no job, dispatch meta, log or
file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from metaflow_nomad.api.lookup import find_jobs
from tests.support.deploy import (
    NAMESPACE,
    Cli,
    allocations,
    deploy_cli,
    runner_log,
    secure_cluster,
    triggered_run_id,
    wait_runner_done,
)
from tests.support.leaks import file_places, job_places, secret_locations
from tests.support.metadata_service import (
    API_KEY_HEADER,
    FLOW,
    FLOW_NAME,
    VARIABLE,
    card_shows,
    delete_headers_variable,
    put_headers_variable,
    read_back,
    service_env,
)

pytestmark = pytest.mark.integration

DEPLOYMENT = "serviceflow"


@dataclass
class DeployedRun:
    workdir: Path
    run_id: str
    runner: dict
    outputs: list[Cli]


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    yield from secure_cluster(tmp_path_factory)


@pytest.fixture(scope="module")
def deployed_run(secure, service_gates, tmp_path_factory):
    """ServiceFlow created and triggered once, as a user does, and run to its end."""
    public, internal = service_gates
    put_headers_variable(secure.agent, public.api_key, NAMESPACE)
    workdir = tmp_path_factory.mktemp("deploy-service")
    settings = service_env(public, internal)
    create = deploy_cli(secure, workdir, FLOW, "create", env=settings)
    assert create.returncode == 0, create.output
    secure.bind_runner_policy(workdir, FLOW, DEPLOYMENT)
    trigger = deploy_cli(secure, workdir, FLOW, "trigger", env=settings)
    run_id = triggered_run_id(trigger)
    runner = wait_runner_done(secure, DEPLOYMENT, run_id)
    yield DeployedRun(workdir, run_id, runner, [create, trigger])
    deploy_cli(secure, workdir, FLOW, "delete", env=settings)
    delete_headers_variable(secure.agent, NAMESPACE)


def test_a_deployed_step_runs_in_the_production_namespace_and_renders_its_card(
    secure, deployed_run, metadata_service
):
    status = deploy_cli(secure, deployed_run.workdir, FLOW, "status", deployed_run.run_id)
    (alloc,) = allocations(secure, deployed_run.runner["ID"])
    runner_output = runner_log(secure, alloc["ID"], "stdout")
    assert status.stdout.strip().splitlines()[-1] == "Succeeded", runner_output
    pathspec = f"{FLOW_NAME}/{deployed_run.run_id}"
    run = read_back(deployed_run.workdir, metadata_service.url, pathspec)
    production = next(t for t in run["system_tags"] if t.startswith("production:"))
    assert run["successful"]
    assert run["namespace_seen"] == run["start_namespace"] == production
    assert "Written on Nomad" in card_shows(run["card"])


def test_the_runner_and_its_steps_use_the_internal_url_with_the_key(deployed_run, service_gates):
    public, internal = service_gates
    assert internal.requests_for(FLOW_NAME, deployed_run.run_id)
    assert public.requests_for(FLOW_NAME, deployed_run.run_id) == []
    assert [s for gate in service_gates for s in gate.seen if not s.authorized] == []


def test_the_api_key_is_in_no_deployed_job_dispatch_meta_log_or_file(
    secure, deployed_run, service_gates
):
    public, _ = service_gates
    steps = find_jobs(secure.admin(), FLOW_NAME, deployed_run.run_id, include_dead=True)
    assert {j["Meta"]["metaflow.step_name"] for j in steps} == {"start", "end"}
    tasks = {DEPLOYMENT: None, deployed_run.runner["ID"]: "runner"}
    tasks.update({step["ID"].split("/")[0]: None for step in steps})
    tasks.update({step["ID"]: "metaflow" for step in steps})
    places = {f"output {i}": cli.output for i, cli in enumerate(deployed_run.outputs)}
    for job_id, task in tasks.items():
        places.update(job_places(secure.agent, job_id, task, NAMESPACE))
    assert any(k.endswith("Meta mf_command") for k in places)  # dispatch meta, decoded
    places.update(file_places(deployed_run.workdir / ".metaflow"))
    key = public.api_key
    secrets = {"the API key": key, "the headers": json.dumps({API_KEY_HEADER: key})}
    assert secret_locations(secrets, places) == []
    # What the runner and the step jobs hold instead: the Variable's path.
    for job_id in {DEPLOYMENT, *(s["ID"].split("/")[0] for s in steps)}:
        job = secure.api("GET", f"/v1/job/{job_id}")
        [template] = job["TaskGroups"][0]["Tasks"][0]["Templates"]
        assert "nomadVar" in template["EmbeddedTmpl"]
        assert f'"{VARIABLE}"' in template["EmbeddedTmpl"], job_id
