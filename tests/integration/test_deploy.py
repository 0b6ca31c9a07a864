"""Issue 13: a flow deployed to Nomad and run there with no laptop, as a user types it.

Every test runs twice: on the plain agent, and on an agent with ACLs and mutual
TLS where the user's token may only write in one namespace and the runner has
nothing but its workload identity (an administrator binds the runner's policy
with the `nomad` CLI).  Outcomes are read from outside: the Nomad API, the
Metaflow client, and the commands' own output.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.support.deploy import (
    allocations,
    deploy_cli,
    runner_jobs_of,
    runner_log,
    triggered_run_id,
    wait_runner_done,
)
from tests.support.flows import client_script

pytestmark = pytest.mark.integration

READ_RUN = """
import json, sys
from metaflow import Run, namespace
namespace(None)
run = Run(sys.argv[1] if len(sys.argv) > 1 else {pathspec!r})
print(json.dumps({{
    "successful": run.successful,
    "data": {{k: getattr(run.data, k) for k in {artifacts!r}}},
    "tags": sorted(run.system_tags),
    "jobs": {{s.id: [t.metadata_dict.get("nomad-job-id") for t in s] for s in run}},
}}))
"""


def _read_run(deploy_cluster, workdir, pathspec: str, *artifacts: str) -> dict:
    code = READ_RUN.format(pathspec=pathspec, artifacts=list(artifacts))
    return json.loads(client_script(workdir, deploy_cluster.env(workdir), code).splitlines()[-1])


@pytest.fixture(scope="module")
def deployed(deploy_cluster, tmp_path_factory):
    """DeployFlow, created by the user (the runner's policy bound by the admin)."""
    workdir = tmp_path_factory.mktemp(f"deploy-{deploy_cluster.name}")
    started = time.monotonic()
    create = deploy_cli(deploy_cluster, workdir, "deploy_flow.py", "create")
    assert create.returncode == 0, create.output
    deploy_cluster.bind_runner_policy(workdir, "deploy_flow.py", "deployflow")
    print(f"create took {time.monotonic() - started:.1f}s")
    yield workdir
    deploy_cli(deploy_cluster, workdir, "deploy_flow.py", "delete")


def test_create_registers_a_runner_job_and_one_parameterized_job_per_step(deploy_cluster, deployed):
    runner = deploy_cluster.api("GET", "/v1/job/deployflow")
    assert runner["ParameterizedJob"]["MetaOptional"] == [
        "alpha",
        "greeting",
        "metaflow.resume_origin_run_id",
        "metaflow.resume_step",
    ]
    assert runner["Meta"]["metaflow.flow_name"] == "DeployFlow"
    task = runner["TaskGroups"][0]["Tasks"][0]
    assert task["Identity"]["Env"] is True
    assert "NOMAD_TOKEN" not in task["Env"] and "METAFLOW_NOMAD_TOKEN" not in task["Env"]
    version = task["Env"]["METAFLOW_NOMAD_STEP_JOBS"]
    for step in ("start", "end"):
        step_job = deploy_cluster.api("GET", f"/v1/job/mf-deployflow-d{version}-{step}")
        assert "mf_command" in step_job["ParameterizedJob"]["MetaRequired"]
        assert step_job["Meta"]["metaflow.template"] == "v1/base.nomad.hcl.j2"
    submission = deploy_cluster.api(
        "GET", "/v1/job/deployflow/submission?version=" + str(runner["Version"])
    )
    assert "parameterized {" in submission["Source"]


def test_trigger_with_parameters_gives_a_finished_run_the_client_reads(deploy_cluster, deployed):
    started = time.monotonic()
    run_id = triggered_run_id(
        deploy_cli(
            deploy_cluster,
            deployed,
            "deploy_flow.py",
            "trigger",
            "--alpha",
            "21",
            "--greeting",
            "hi",
        )
    )
    assert run_id.startswith("nomad-dispatch-")
    runner = wait_runner_done(deploy_cluster, "deployflow", run_id)
    print(f"trigger to finished run: {time.monotonic() - started:.1f}s")
    status = deploy_cli(deploy_cluster, deployed, "deploy_flow.py", "status", run_id)
    assert status.stdout.strip().splitlines()[-1] == "Succeeded", status.output
    run = _read_run(deploy_cluster, deployed, f"DeployFlow/{run_id}", "message", "doubled")
    assert run["successful"] and run["data"] == {"message": "hi 42", "doubled": 42}
    assert any(t.startswith("production:") for t in run["tags"])
    # Each step ran as a dispatched child of the deployment's step job.
    for step, (job_id,) in run["jobs"].items():
        assert job_id.startswith("mf-deployflow-d") and f"-{step}/dispatch-" in job_id
    listed = deploy_cli(deploy_cluster, deployed, "deploy_flow.py", "list-runs", "--succeeded")
    assert f"{run_id}" in listed.output and runner["ID"] in listed.output


def test_a_bad_parameter_fails_on_the_callers_side_and_starts_nothing(deploy_cluster, deployed):
    before = len(runner_jobs_of(deploy_cluster, "deployflow"))
    bad = deploy_cli(deploy_cluster, deployed, "deploy_flow.py", "trigger", "--alpha", "many")
    assert bad.returncode != 0
    assert "Invalid value for '--alpha': many is not a valid integer" in bad.output
    unknown = deploy_cli(deploy_cluster, deployed, "deploy_flow.py", "trigger", "--beta", "1")
    assert unknown.returncode != 0 and "no such option: --beta" in unknown.output.lower()
    assert len(runner_jobs_of(deploy_cluster, "deployflow")) == before


def test_a_bad_runner_setting_fails_create_before_anything_is_stored_or_sent(
    deploy_cluster, tmp_path
):
    before = {j["ID"] for j in deploy_cluster.api("GET", "/v1/jobs")}
    bad = deploy_cli(deploy_cluster, tmp_path, "deploy_flow.py", "create", "--runner-memory", "5")
    assert bad.returncode != 0
    assert "--runner-memory = 5 is not valid. Expected a whole number of MB >= 10" in bad.output
    assert "Traceback" not in bad.output
    assert {j["ID"] for j in deploy_cluster.api("GET", "/v1/jobs")} == before
    assert not (tmp_path / ".metaflow" / "DeployFlow" / "data").exists()


def test_a_bad_value_dispatched_past_trigger_fails_the_run_with_the_reason(
    deploy_cluster, deployed
):
    """`nomad job dispatch` by hand: Nomad refuses unknown keys; the runner checks values."""
    from metaflow_nomad.deploy.naming import run_id_for_runner_job
    from metaflow_nomad.errors import NomadClientError

    admin = deploy_cluster.admin()
    with pytest.raises(NomadClientError, match=r"unpermitted metadata keys: \[beta\]"):
        admin.dispatch("deployflow", {"beta": "1"}, deploy_cluster.namespace)
    child = admin.dispatch("deployflow", {"alpha": "many"}, deploy_cluster.namespace)
    run_id = run_id_for_runner_job(child)
    runner = wait_runner_done(deploy_cluster, "deployflow", run_id, timeout=120)
    status = deploy_cli(deploy_cluster, deployed, "deploy_flow.py", "status", run_id)
    assert status.stdout.strip().splitlines()[-1] == "Failed"
    assert "the runner exited with code 2" in status.output
    (alloc,) = allocations(deploy_cluster, runner["ID"])
    assert "Invalid value for '--alpha': many is not a valid integer" in runner_log(
        deploy_cluster, alloc["ID"]
    )


def test_render_shows_every_job_create_would_register_and_sends_nothing(deploy_cluster, deployed):
    before = {j["ID"] for j in deploy_cluster.api("GET", "/v1/jobs")}
    render = deploy_cli(deploy_cluster, deployed, "deploy_flow.py", "render")
    assert render.returncode == 0, render.output
    assert render.stdout.count("parameterized {") == 3  # start, end, the runner
    assert 'job "deployflow" {' in render.stdout and "identity {" in render.stdout
    assert "nothing was registered" in render.stderr
    assert {j["ID"] for j in deploy_cluster.api("GET", "/v1/jobs")} == before


def test_a_periodic_schedule_starts_a_run_by_itself(deploy_cluster, tmp_path):
    create = deploy_cli(deploy_cluster, tmp_path, "scheduled_flow.py", "create")
    assert create.returncode == 0, create.output
    assert "runs on the schedule '0 3 1 1 *' Europe/Paris" in create.output
    deploy_cluster.bind_runner_policy(
        tmp_path, "scheduled_flow.py", "scheduledflow", "scheduledflow-schedule"
    )
    periodic = deploy_cluster.api("GET", "/v1/job/scheduledflow-schedule")
    assert periodic["Periodic"]["Spec"] == "0 3 1 1 *"
    assert periodic["Periodic"]["TimeZone"] == "Europe/Paris"
    # What Nomad's periodic launcher does at the scheduled time, now.
    deploy_cluster.api("POST", "/v1/job/scheduledflow-schedule/periodic/force")
    try:
        (runner,) = runner_jobs_of(deploy_cluster, "scheduledflow")
        from metaflow_nomad.deploy.naming import run_id_for_runner_job

        run_id = run_id_for_runner_job(runner["ID"])
        assert run_id.startswith("nomad-periodic-")
        wait_runner_done(deploy_cluster, "scheduledflow", run_id)
        run = _read_run(deploy_cluster, tmp_path, f"ScheduledFlow/{run_id}", "squares")
        assert run["successful"] and run["data"] == {"squares": [0, 1, 4]}
    finally:
        delete = deploy_cli(deploy_cluster, tmp_path, "scheduled_flow.py", "delete")
    assert delete.returncode == 0, delete.output
    for job_id in ("scheduledflow", "scheduledflow-schedule"):
        with pytest.raises(Exception, match="404"):
            deploy_cluster.api("GET", f"/v1/job/{job_id}")
    again = deploy_cli(deploy_cluster, tmp_path, "scheduled_flow.py", "trigger")
    assert again.returncode != 0 and "is not deployed as scheduledflow" in again.output


def test_the_deployer_api_creates_triggers_follows_and_deletes(deploy_cluster, tmp_path):
    env = deploy_cluster.env(tmp_path)
    deploy_cli(deploy_cluster, tmp_path, "deploy_flow.py", "render", "--offline")  # copies the flow
    created = client_script(
        tmp_path,
        env,
        "from metaflow import Deployer\n"
        "d = Deployer('deploy_flow.py', show_output=False).nomad_workflows(name='deploy-py')\n"
        "print(d.create().name)\n",
    )
    assert created.splitlines()[-1] == "deploy-py"
    deploy_cluster.bind_runner_policy(tmp_path, "deploy_flow.py", "deploy-py", name="deploy-py")
    out = client_script(
        tmp_path,
        env,
        "from metaflow import DeployedFlow\n"
        "flow = DeployedFlow.from_deployment('deploy-py', impl='nomad_workflows')\n"
        "listed = DeployedFlow.list_deployed_flows('DeployFlow', impl='nomad_workflows')\n"
        "names = [f.name for f in listed]\n"
        "run = flow.trigger(alpha=4, greeting='py')\n"
        "run.wait_for_completion(check_interval=2, timeout=240)\n"
        "import json\n"
        "print(json.dumps([names, run.status, run.run.data.message, flow.delete()]))\n",
    )
    names, status, message, deleted = json.loads(out.splitlines()[-1])
    assert "deploy-py" in names
    assert (status, message, deleted) == ("Succeeded", "py 8", True)
    with pytest.raises(Exception, match="404"):
        deploy_cluster.api("GET", "/v1/job/deploy-py")


def test_project_branches_deploy_apart_and_production_needs_its_token(deploy_cluster, tmp_path):
    flow = "project_deploy_flow.py"
    prod = deploy_cli(deploy_cluster, tmp_path, flow, "create", top_args=("--production",))
    assert prod.returncode == 0, prod.output
    token = re.search(r"production:(\S+)", prod.output).group(1)
    branch = deploy_cli(deploy_cluster, tmp_path, flow, "create", top_args=("--branch", "exp"))
    assert branch.returncode == 0, branch.output
    names = ("forecast.prod.projectdeployflow", "forecast.test.exp.projectdeployflow")
    deploy_cluster.bind_runner_policy(tmp_path, flow, names[0], top_args=("--production",))
    deploy_cluster.bind_runner_policy(tmp_path, flow, names[1], top_args=("--branch", "exp"))
    run_id = triggered_run_id(
        deploy_cli(deploy_cluster, tmp_path, flow, "trigger", top_args=("--production",))
    )
    wait_runner_done(deploy_cluster, names[0], run_id)
    run = _read_run(deploy_cluster, tmp_path, f"ProjectDeployFlow/{run_id}", "branch")
    assert run["successful"] and run["data"] == {"branch": "prod"}
    assert f"production:{token}" in run["tags"] and "project_branch:prod" in run["tags"]
    # Someone else may not replace production without its token.
    env = {"USER": "mallory", "METAFLOW_HOME": str(tmp_path / "mallory-home")}
    refused = deploy_cli(
        deploy_cluster, tmp_path, flow, "create", top_args=("--production",), env=env
    )
    assert refused.returncode != 0
    assert "was deployed by tester" in refused.output and "--authorize" in refused.output
    allowed = deploy_cli(
        deploy_cluster,
        tmp_path,
        flow,
        "create",
        "--authorize",
        token,
        top_args=("--production",),
        env=env,
    )
    assert allowed.returncode == 0, allowed.output
    for top in (("--production",), ("--branch", "exp")):
        assert deploy_cli(deploy_cluster, tmp_path, flow, "delete", top_args=top).returncode == 0


def test_a_remote_datastore_with_local_metadata_is_refused_with_what_to_set(
    deploy_cluster, tmp_path
):
    bad = deploy_cli(
        deploy_cluster,
        tmp_path,
        "deploy_flow.py",
        "create",
        top_args=("--datastore=s3", "--metadata=local"),
        env={"METAFLOW_DATASTORE_SYSROOT_S3": "s3://nowhere/metaflow"},
    )
    assert bad.returncode != 0
    assert "use Metaflow's metadata service (METAFLOW_DEFAULT_METADATA=service" in bad.output
    assert "Traceback" not in bad.output
