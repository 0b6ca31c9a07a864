"""A @parallel step's gang (render.parallel): its job shape, discovery and per-node
scripts, rendered through the base template like any feature."""

from __future__ import annotations

import base64
import os
import subprocess

import pytest

from metaflow_nomad.errors import NomadException
from metaflow_nomad.model import JobIdentity, TaskLaunch, parallel_node_task_id
from metaflow_nomad.render.jobspec import check_offline, render_job, step_request
from metaflow_nomad.render.parallel import (
    MAIN_ADDRESS_FILE,
    NODE_COMMAND_ENV,
    dispatch_script,
    gang_env,
    gang_for,
    gang_settings,
    node_step_options,
    service_name,
)
from metaflow_nomad.settings import resolve_step_settings
from tests.support.render import render_inputs

IDENTITY = JobIdentity("Flow", "7", "train", "3", 1, "me")


def _settings(**attributes):
    return resolve_step_settings("train", attributes, python_version=(3, 11))


def test_workers_are_named_after_the_control_as_kubernetes_names_them():
    assert [parallel_node_task_id("3", i) for i in range(3)] == ["3", "3-worker-0", "3-worker-1"]
    assert gang_for("job", "3", 3).task_ids == ["3", "3-worker-0", "3-worker-1"]


def test_a_gang_needs_at_least_one_node():
    with pytest.raises(NomadException, match="num_parallel >= 1"):
        gang_for("job", "3", 0)


def test_the_service_is_a_valid_name_unique_per_attempt():
    long_job = "mf-" + "x" * 200 + "-0"
    name = service_name(long_job)
    assert len(name) <= 63 and name.replace("-", "").isalnum()
    assert service_name(IDENTITY.job_id) != service_name(IDENTITY.job_id[:-1] + "2")


def test_each_node_runs_as_its_own_task_in_its_ubf_context():
    gang = gang_for("job", "3", 3)
    control = node_step_options({"task_id": "3", "input_paths": "x"}, gang, 0)
    worker = node_step_options({"task_id": "3", "input_paths": "x"}, gang, 2)
    assert control == {
        "task_id": "3",
        "split_index": "0",
        "ubf_context": "ubf_control",
        "num_parallel": "3",
        "input_paths": "x",
    }
    assert worker["task_id"] == "3-worker-1"
    assert (worker["split_index"], worker["ubf_context"]) == ("2", "ubf_task")


def test_the_gang_renders_one_group_of_n_nodes_with_its_service_and_template(tmp_path):
    gang = gang_for(IDENTITY.job_id, "3", 4)
    request = step_request(_settings(driver="raw_exec"), IDENTITY, TaskLaunch("x"), gang)
    rendered = render_job(request, render_inputs(tmp_path))
    check_offline(rendered.hcl)
    hcl = rendered.hcl
    assert rendered.context.features["parallel"] is True
    assert hcl.count('group "step"') == 1
    assert "count = 4" in hcl
    assert 'port "mf_parallel" {}' in hcl
    assert 'provider = "nomad"' in hcl
    assert f'name     = "{gang.service}"' in hcl
    assert 'tags     = ["mf-node-${NOMAD_ALLOC_INDEX}"]' in hcl
    assert f'destination = "local/{MAIN_ADDRESS_FILE}"' in hcl
    assert f'{{{{ range nomadService "{gang.service}" }}}}' in hcl
    assert '{{ if in .Tags "mf-node-0" }}' in hcl


def test_a_lone_task_has_none_of_the_gang(tmp_path):
    rendered = render_job(
        step_request(_settings(driver="raw_exec"), IDENTITY, TaskLaunch("x")),
        render_inputs(tmp_path),
    )
    assert "count = 1" in rendered.hcl
    assert "nomadService" not in rendered.hcl and "network {" not in rendered.hcl


def test_docker_nodes_share_the_host_network():
    settings = gang_settings(_settings(driver="docker", image="python:3.11"), "train")
    assert settings.docker.network_mode == "host"
    with pytest.raises(NomadException, match="network_mode 'host'"):
        gang_settings(
            _settings(driver="docker", image="python:3.11", network_mode="bridge"), "train"
        )
    assert gang_settings(_settings(driver="raw_exec"), "train").docker is None


def _dispatch(tmp_path, index: int, main_file: str | None, timeout_s: int = 5):
    """Run the dispatcher as a node of a 3-node gang would, with scripts that echo."""
    gang = gang_for("job", "3", 3)
    gang = type(gang)(gang.num_nodes, gang.control_task_id, gang.service, timeout_s)
    scripts = [
        f'echo "node {i} $MF_PARALLEL_NODE_INDEX $MF_PARALLEL_MAIN_IP $MF_PARALLEL_MAIN_PORT"'
        for i in range(3)
    ]
    if main_file is not None:
        (tmp_path / MAIN_ADDRESS_FILE).write_text(main_file)
    env = {
        **os.environ,
        **gang_env(gang, scripts),
        "NOMAD_ALLOC_INDEX": str(index),
        "NOMAD_TASK_DIR": str(tmp_path),
        "NOMAD_IP_mf_parallel": "10.0.0.5",
        "NOMAD_PORT_mf_parallel": "24000",
    }
    return subprocess.run(
        ["bash", "-c", dispatch_script(gang)], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_control_runs_its_own_script_with_its_own_address(tmp_path):
    proc = _dispatch(tmp_path, 0, None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "node 0 0 10.0.0.5 24000"


def test_a_worker_runs_its_script_with_the_controls_address_from_the_template(tmp_path):
    proc = _dispatch(tmp_path, 2, "10.0.0.9:31000\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "node 2 2 10.0.0.9 31000"


def test_a_worker_that_finds_no_control_fails_and_says_why(tmp_path):
    proc = _dispatch(tmp_path, 1, "\n", timeout_s=1)
    assert proc.returncode == 1
    assert "found no control (node 0)" in proc.stderr
    assert proc.stdout == ""


def test_every_node_script_travels_encoded():
    env = gang_env(gang_for("job", "3", 2), ["echo ${x}", "echo two"])
    assert env["MF_PARALLEL_NUM_NODES"] == "2"
    assert env["MF_PARALLEL_CONTROL_TASK_ID"] == "3"
    assert base64.b64decode(env[f"{NODE_COMMAND_ENV}0"]).decode() == "echo ${x}"
    assert "$" not in env[f"{NODE_COMMAND_ENV}0"]
