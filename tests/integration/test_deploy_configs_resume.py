"""Issue 21, parts 4 and 5: Configs, typed parameters through from_deployment, and
resume, on deployed flows.

Every test runs on the plain agent and on the agent with ACLs and mutual TLS
(`deploy_cluster`).  Outcomes are read from outside: the Metaflow client, the
Nomad API and the commands' own output.
"""

from __future__ import annotations

import json

import pytest

from tests.support.deploy import (
    deploy_cli,
    runner_jobs_of,
    triggered_run_id,
    wait_runner_done,
)
from tests.support.flows import client_script

pytestmark = pytest.mark.integration

READ_RUN = """
import json, sys
from metaflow import Run, namespace
namespace(None)
run = Run(sys.argv[1])
tasks = {step.id: step.task for step in run}
print(json.dumps({
    "successful": run.successful,
    "data": {
        name: {a.id: a.data for a in task if a.id in sys.argv[2:]}
        for name, task in tasks.items() if task.successful
    },
    "cloned_from": {
        name: task.metadata_dict.get("origin-run-id")
        if "origin-task-id" in task.metadata_dict else None
        for name, task in tasks.items()
    },
}))
"""


def _read_run(cluster, workdir, pathspec: str, *artifacts: str) -> dict:
    """The run's ``artifacts`` per step, and the run each step's task was cloned from
    (None for a task that ran)."""
    out = client_script(workdir, cluster.env(workdir), READ_RUN, pathspec, *artifacts)
    return json.loads(out.splitlines()[-1])


def _create(cluster, workdir, flow: str, deployment: str, top_args: tuple = ()) -> None:
    create = deploy_cli(cluster, workdir, flow, "create", top_args=top_args)
    assert create.returncode == 0, create.output
    cluster.bind_runner_policy(workdir, flow, deployment)


FROM_DEPLOYMENT = """
import json
from metaflow import DeployedFlow
flow = DeployedFlow.from_deployment("typedparamsflow", impl="nomad_workflows")
run = flow.trigger(rate=0.5, use_gpu=True, layers={"layers": [8]})
run.wait_for_completion(check_interval=1, timeout=180)
data = run.run["start"].task.data if run.run else None
print(json.dumps([run.status, data and data.values, data and data.types]))
"""


def test_from_deployment_triggers_every_parameter_type(deploy_cluster, tmp_path):
    """Only the values given are dispatched; the others keep the flow's defaults."""
    flow = "typed_params_flow.py"
    _create(deploy_cluster, tmp_path, flow, "typedparamsflow")
    try:
        out = client_script(tmp_path, deploy_cluster.env(tmp_path), FROM_DEPLOYMENT)
    finally:
        deploy_cli(deploy_cluster, tmp_path, flow, "delete")
    status, values, types = json.loads(out.splitlines()[-1])
    assert status == "Succeeded"
    assert values == [0.5, 10, "cnn", True, {"layers": [8]}]
    assert types == ["float", "int", "str", "bool", "dict"]


def test_a_config_file_given_to_create_reaches_the_runner_and_every_step(deploy_cluster, tmp_path):
    flow = "config_deploy_flow.py"
    (tmp_path / "cfg.json").write_text(json.dumps({"greeting": "from-file", "memory": 300}))
    _create(deploy_cluster, tmp_path, flow, "configdeployflow", ("--config", "cfg", "cfg.json"))
    try:
        runner = deploy_cluster.api("GET", "/v1/job/configdeployflow")
        version = runner["TaskGroups"][0]["Tasks"][0]["Env"]["METAFLOW_NOMAD_STEP_JOBS"]
        end_job = deploy_cluster.api("GET", f"/v1/job/mf-configdeployflow-d{version}-end")
        assert end_job["TaskGroups"][0]["Tasks"][0]["Resources"]["MemoryMB"] == 300
        run_id = triggered_run_id(deploy_cli(deploy_cluster, tmp_path, flow, "trigger"))
        wait_runner_done(deploy_cluster, "configdeployflow", run_id)
        run = _read_run(
            deploy_cluster, tmp_path, f"ConfigDeployFlow/{run_id}", "start_greeting", "end_greeting"
        )
    finally:
        deploy_cli(deploy_cluster, tmp_path, flow, "delete")
    assert run["successful"], run
    assert run["data"]["start"]["start_greeting"] == "from-file"
    assert run["data"]["end"]["end_greeting"] == "from-file"


DEPLOYER_CONFIG = """
from metaflow import Deployer
value = {"greeting": "from-deployer", "memory": 280}
deployer = Deployer("config_deploy_flow.py", show_output=False, config_value=[("cfg", value)])
print(deployer.nomad_workflows(name="config-py").create().name)
"""

TRIGGER_CONFIG = """
import json
from metaflow import DeployedFlow
run = DeployedFlow.from_deployment("config-py", impl="nomad_workflows").trigger()
run.wait_for_completion(check_interval=1, timeout=180)
print(json.dumps([run.status, run.run["end"].task.data.end_greeting]))
"""


def test_a_config_value_given_to_the_deployer_reaches_every_step(deploy_cluster, tmp_path):
    flow = "config_deploy_flow.py"
    env = deploy_cluster.env(tmp_path)
    deploy_cli(deploy_cluster, tmp_path, flow, "render", "--offline")  # copies the flow
    assert client_script(tmp_path, env, DEPLOYER_CONFIG).splitlines()[-1] == "config-py"
    deploy_cluster.bind_runner_policy(tmp_path, flow, "config-py", name="config-py")
    try:
        status, greeting = json.loads(client_script(tmp_path, env, TRIGGER_CONFIG).splitlines()[-1])
    finally:
        deploy_cli(deploy_cluster, tmp_path, flow, "--name=config-py", "delete")
    assert (status, greeting) == ("Succeeded", "from-deployer")


def _resumed_run_id(resume) -> str:
    """The new run's id, as `nomad-workflows resume` prints it."""
    assert resume.returncode == 0, resume.output
    for line in resume.output.splitlines():
        if line.startswith("Run ") and " resumes run " in line:
            return line.split()[1]
    raise AssertionError(f"no run id in:\n{resume.output}")


RESUME = """
import json, sys
from metaflow import DeployedFlow
flow = DeployedFlow.from_deployment("resumedeployflow", impl="nomad_workflows")
run = flow.resume(origin_run_id=sys.argv[1])
announced = run.run_id
run.wait_for_completion(check_interval=1, timeout=180)
print(json.dumps([announced, run.status, run.run.id]))
"""


def test_resume_of_a_failed_run_clones_what_finished_and_runs_the_rest(deploy_cluster, tmp_path):
    flow = "resume_deploy_flow.py"
    _create(deploy_cluster, tmp_path, flow, "resumedeployflow")
    flag = tmp_path / "flag"
    try:
        failed = triggered_run_id(
            deploy_cli(deploy_cluster, tmp_path, flow, "trigger", "--flag", str(flag))
        )
        wait_runner_done(deploy_cluster, "resumedeployflow", failed)
        assert not _read_run(deploy_cluster, tmp_path, f"ResumeDeployFlow/{failed}")["successful"]
        flag.write_text("present")
        out = client_script(tmp_path, deploy_cluster.env(tmp_path), RESUME, failed)
        run_id, status, client_run_id = json.loads(out.splitlines()[-1])
        resumed = _read_run(deploy_cluster, tmp_path, f"ResumeDeployFlow/{run_id}", "process_value")
        again = deploy_cli(
            deploy_cluster, tmp_path, flow, "resume", "--origin-run-id", run_id, "--step", "end"
        )
        rerun = _resumed_run_id(again)
        wait_runner_done(deploy_cluster, "resumedeployflow", rerun)
        rerun_data = _read_run(deploy_cluster, tmp_path, f"ResumeDeployFlow/{rerun}", "end_value")
    finally:
        deploy_cli(deploy_cluster, tmp_path, flow, "delete")
    assert run_id == client_run_id and run_id != failed
    assert status == "Succeeded" and resumed["successful"]
    assert resumed["data"]["process"]["process_value"] == "processed"
    assert resumed["cloned_from"] == {"start": failed, "process": None, "end": None}
    assert rerun_data["successful"] and rerun_data["data"]["end"] == {"end_value": "done"}
    assert rerun_data["cloned_from"] == {"start": run_id, "process": run_id, "end": None}


def test_a_bad_resume_is_refused_before_anything_is_dispatched(deploy_cluster, tmp_path):
    flow = "resume_deploy_flow.py"
    _create(deploy_cluster, tmp_path, flow, "resumedeployflow")
    try:
        before = len(runner_jobs_of(deploy_cluster, "resumedeployflow"))
        missing = deploy_cli(
            deploy_cluster, tmp_path, flow, "resume", "--origin-run-id", "nomad-dispatch-1-x"
        )
        step = deploy_cli(
            deploy_cluster, tmp_path, flow, "resume", "--origin-run-id", "x", "--step", "nope"
        )
        after = len(runner_jobs_of(deploy_cluster, "resumedeployflow"))
    finally:
        deploy_cli(deploy_cluster, tmp_path, flow, "delete")
    assert missing.returncode != 0 and "Traceback" not in missing.output
    assert "No run nomad-dispatch-1-x of ResumeDeployFlow in the datastore" in missing.output
    assert step.returncode != 0 and "Traceback" not in step.output
    assert "--step nope is not a step of the deployed ResumeDeployFlow" in step.output
    assert "its steps are: start, process, end" in step.output
    assert after == before
