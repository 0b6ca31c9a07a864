"""Issue 12: ``doctor`` against a real agent (and a real S3 server, moto), as a user
runs it: ``python flow.py nomad doctor [--probe]`` and ``metaflow-nomad doctor``.

Each test asserts the exact lines a user reads, and checks from outside (the Nomad
API, the datastore) what the probe claims to have done.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from metaflow_nomad.testing.ports import free_port
from tests.support.flows import (
    agent_flow_env,
    clean_environ,
    flow_env,
    flow_source,
    run_flow,
)
from tests.support.s3 import BUCKET, S3_TEMPLATES, put_s3_credentials

pytestmark = pytest.mark.integration

FLOW = "nomad_flow.py"  # the user guide's example: its @nomad step is compute_on_nomad
PACKAGE_CACHE_HINT = "info  package cache: not set: every docker task unpacks"
CREDENTIALS_HINT = (
    "Credentials reach a task through a Nomad Variable or Vault template, or the node's "
    "environment or credentials file (see docs/s3.md)."
)


def _lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines()]


def _doctor(workdir: Path, env: dict, *options: str, flow: str = FLOW, top_args=()):
    return run_flow(flow, workdir, env, "doctor", *options, command="nomad", top_args=top_args)


def _own_package(workdir: Path) -> None:
    """The user guide's flow with a code package of its own: nodes cache packages by
    content, so a package fetched before could hide a failing download."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / FLOW).write_text(flow_source(FLOW).read_text() + f"# {workdir}\n")


def _section(lines: list[str], title_start: str, count: int) -> list[str]:
    i = next(n for n, line in enumerate(lines) if line.startswith(title_start))
    return lines[i + 1 : i + 1 + count]


def test_healthy_agent_passes_every_check_and_the_probe_cleans_up(
    nomad_agent, nomad_client, tmp_path
):
    result = _doctor(tmp_path, flow_env(nomad_agent.address, tmp_path), "--probe")
    assert result.returncode == 0, result.output
    lines = _lines(result.output)
    assert lines[-1].startswith("Verdict: all ") and lines[-1].endswith(" checks passed.")
    assert "FAIL" not in result.output
    assert _section(lines, "Cluster:", 4) == [
        f"ok    address: {nomad_agent.address} (from METAFLOW_NOMAD_ADDRESS) answers "
        f"(leader {nomad_client.leader()})",
        "ok    TLS: not used (the address is http://)",
        "ok    token: ACLs are disabled on this cluster: none needed",
        "ok    Nomad version: 1.6.1 (1.6.0 or newer is needed)",
    ]
    assert "ok    driver raw_exec: healthy on 1 of 1 node(s)" in lines
    assert "ok    placement: the scheduler would place this step's job now" in lines
    assert "METAFLOW_NOMAD_DRIVER: raw_exec (from METAFLOW_NOMAD_DRIVER)" in lines
    assert "METAFLOW_NOMAD_TOKEN (or NOMAD_TOKEN): not set" in lines

    title = next(line for line in lines if line.startswith("Probe with step"))
    job_id = re.search(r"\(job (\S+)\):$", title).group(1)
    probe = _section(lines, "Probe with step", 5)
    assert probe[0].startswith("ok    code package upload: ")
    assert re.fullmatch(
        r"ok    task start: started on node mf-nomad-test \(allocation \w{8}\)", probe[1]
    )
    assert probe[2] == "ok    code package download: the task fetched and unpacked it"
    blob = re.fullmatch(
        r"ok    datastore: the task wrote (\S+) and this launcher read it back", probe[3]
    ).group(1)
    assert probe[4] == f"ok    clean-up: job {job_id} stopped and purged"
    # From outside: the job is gone from Nomad, the probe's blob from the datastore.
    assert nomad_client.job(job_id) is None
    assert blob.startswith(str(tmp_path)) and not os.path.exists(blob)


def _healthy_drivers(nomad_client) -> list[str]:
    [node] = nomad_client.nodes()
    return sorted(
        name
        for name, info in node["Drivers"].items()
        if name in ("docker", "exec", "raw_exec") and info.get("Healthy")
    )


def test_a_driver_no_node_has(nomad_agent, nomad_client, tmp_path):
    env = flow_env(nomad_agent.address, tmp_path, {"METAFLOW_NOMAD_DRIVER": "docker"})
    result = _doctor(tmp_path, env, flow="with_flow.py", top_args=("--with", "nomad"))
    assert result.returncode == 1
    lines = _lines(result.output)
    have = ", ".join(_healthy_drivers(nomad_client))
    assert "docker" not in have  # the session agent has no Docker engine
    steps = _section(lines, "Steps 'start', 'end': driver=docker (METAFLOW_NOMAD_DRIVER)", 6)
    assert steps[3].startswith("info  node mf-nomad-test: dc1, pool default: docker not detected")
    assert steps[4:] == [
        f"FAIL  driver docker: no eligible node has a healthy docker driver (they have: {have}): "
        "enable docker on the client nodes, or choose another driver with "
        "METAFLOW_NOMAD_DRIVER or @nomad(driver=...).",
        "skip  placement: not planned: fix the lines above first",
    ]
    assert lines[-1] == (
        "Verdict: 1 of 14 checks FAILED (driver docker (steps 'start', 'end')). "
        "Each FAIL line says what to change."
    )


def test_an_unknown_datacenter(nomad_agent, tmp_path):
    env = flow_env(nomad_agent.address, tmp_path, {"METAFLOW_NOMAD_DEFAULT_DATACENTERS": "nope"})
    result = _doctor(tmp_path, env, "--probe")
    assert result.returncode == 1
    lines = _lines(result.output)
    assert _section(lines, "Step 'compute_on_nomad': ", 4) == [
        "ok    region: not set: the agent's own (known: global)",
        "ok    node pool: not set: Nomad's default",
        "FAIL  nodes: no client node in datacenters ['nope'], node pool 'default' (the "
        "cluster's nodes are in datacenters: dc1): set them with "
        "METAFLOW_NOMAD_DEFAULT_DATACENTERS or @nomad(datacenters=...), or choose another "
        "node pool.",
        "skip  placement: not planned: fix the lines above first",
    ]
    assert "Probe with step 'compute_on_nomad': not run, fix the FAIL lines above first." in lines


@pytest.fixture()
def s3_env(s3_server, tmp_path):
    """A launcher on the S3 datastore (moto), with a prefix of its own."""
    return s3_server.metaflow_env(tmp_path.name)


def test_probe_passes_on_s3_with_credentials_from_nomad_variables(
    nomad_agent, s3_server, s3_env, credentials_in_nomad_variables, tmp_path
):
    _own_package(tmp_path)
    env = flow_env(
        nomad_agent.address, tmp_path, {**s3_env, "METAFLOW_NOMAD_TEMPLATES_DIR": str(S3_TEMPLATES)}
    )
    result = run_flow(FLOW, tmp_path, env, "doctor", "--probe", command="nomad", copy=False)
    assert result.returncode == 0, result.output
    probe = _section(_lines(result.output), "Probe with step", 5)
    assert probe[2] == "ok    code package download: the task fetched and unpacked it"
    blob = re.fullmatch(
        r"ok    datastore: the task wrote (\S+) and this launcher read it back", probe[3]
    ).group(1)
    bucket, _, key = blob[len("s3://") :].partition("/")
    assert bucket == BUCKET and key.startswith(f"{tmp_path.name}/NomadFlow/data/")
    listed = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=key).get("Contents", [])
    assert listed == []  # the probe's blob was removed


def test_probe_fails_when_tasks_cannot_reach_the_datastore(
    nomad_agent, nomad_client, s3_env, tmp_path
):
    """No Variables template: the launcher has S3 credentials, its tasks have none."""
    _own_package(tmp_path)
    env = flow_env(nomad_agent.address, tmp_path, s3_env)
    result = run_flow(FLOW, tmp_path, env, "doctor", "--probe", command="nomad", copy=False)
    assert result.returncode == 1
    lines = _lines(result.output)
    probe = _section(lines, "Probe with step", 5)
    url = re.fullmatch(r"ok    code package upload: \d+ KB saved at (\S+)", probe[0]).group(1)
    assert probe[1].startswith("ok    task start: started on node mf-nomad-test")
    assert probe[2:4] == [
        f"FAIL  code package download: the code package could not be fetched from {url}: the "
        f"task has no AWS credentials. {CREDENTIALS_HINT}",
        "skip  datastore: not reached",
    ]
    job_id = re.search(r"\(job (\S+)\):$", lines[lines.index(probe[0]) - 1]).group(1)
    assert probe[4] == f"ok    clean-up: job {job_id} stopped and purged"
    assert nomad_client.job(job_id) is None
    assert lines[-1] == (
        "Verdict: 1 of 19 checks FAILED (code package download (probe)). "
        "Each FAIL line says what to change."
    )


def _console_doctor(tmp_path, env):
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "metaflow-nomad"), "doctor"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_console_doctor_without_a_flow_file(nomad_agent, tmp_path):
    base = {**clean_environ(), "USER": "tester", "METAFLOW_HOME": str(tmp_path / "mfhome")}
    address = f"http://127.0.0.1:{free_port()}"
    down = _console_doctor(tmp_path, {**base, "NOMAD_ADDR": address})
    assert down.returncode == 1
    assert _lines(down.stdout)[-3:] == [
        f"FAIL  address: cannot reach Nomad at {address} (from NOMAD_ADDR): connection "
        "refused. Is the agent running there? To use another cluster, set "
        "METAFLOW_NOMAD_ADDRESS (or NOMAD_ADDR).",
        "skip  TLS: nothing answered",
        "Verdict: 1 of 1 checks FAILED (address). Each FAIL line says what to change.",
    ]
    up = _console_doctor(
        tmp_path, {**base, "NOMAD_ADDR": nomad_agent.address, "METAFLOW_NOMAD_DRIVER": "raw_exec"}
    )
    assert up.returncode == 0, up.stdout + up.stderr
    lines = _lines(up.stdout)
    assert (
        f"METAFLOW_NOMAD_ADDRESS (or NOMAD_ADDR): {nomad_agent.address} (from NOMAD_ADDR)" in lines
    )
    assert "ok    placement: the scheduler would place this step's job now" in lines
    assert lines[-1] == "Verdict: all 14 checks passed."


@pytest.fixture()
def docker_on_s3(docker_agent, s3_server, tmp_path):
    """The docker agent with S3 credentials in Nomad Variables, and a launcher set up
    for docker tasks on S3 (host networking reaches the agent and moto on loopback)."""
    put_s3_credentials(docker_agent, s3_server.credentials)
    env = agent_flow_env(
        docker_agent,
        tmp_path,
        extra={
            **s3_server.metaflow_env(tmp_path.name),
            "METAFLOW_NOMAD_DRIVER": "docker",
            "METAFLOW_NOMAD_SHARED_FILESYSTEM": "",
            "METAFLOW_NOMAD_NETWORK_MODE": "host",
            "METAFLOW_NOMAD_TEMPLATES_DIR": str(S3_TEMPLATES),
        },
    )
    return env


def test_probe_in_docker_pulls_fetches_and_reaches_s3(docker_on_s3, tmp_path):
    result = _doctor(tmp_path, docker_on_s3, "--probe")
    assert result.returncode == 0, result.output
    lines = _lines(result.output)
    assert "ok    driver docker: healthy on 1 of 1 node(s)" in lines
    probe = _section(lines, "Probe with step", 5)
    assert probe[2] == "ok    code package download: the task fetched and unpacked it"
    assert probe[3].startswith("ok    datastore: the task wrote s3://")
    assert any(line.startswith(PACKAGE_CACHE_HINT) for line in lines), result.output


def test_probe_in_docker_mounts_the_package_cache_yet_downloads_the_package(docker_on_s3, tmp_path):
    cache = tmp_path / "node-package-cache"
    cache.mkdir()
    env = {**docker_on_s3, "METAFLOW_NOMAD_PACKAGE_CACHE": str(cache)}
    result = _doctor(tmp_path, env, "--probe")
    assert result.returncode == 0, result.output
    lines = _lines(result.output)
    assert f"ok    docker volumes: the step bind-mounts {cache}; allowed on 1 node(s)" in lines
    assert not any(line.startswith(PACKAGE_CACHE_HINT) for line in lines)
    probe = _section(lines, "Probe with step", 5)
    assert probe[2] == "ok    code package download: the task fetched and unpacked it"
    # The package went to the task's own cache, where nothing fetched before can
    # stand in for the download.
    assert list(cache.iterdir()) == []


def test_mounts_where_the_docker_plugin_refuses_volumes_fail_before_anything_runs(
    docker_agent_without_volumes, tmp_path
):
    agent = docker_agent_without_volumes
    cache = tmp_path / "node-package-cache"
    env = agent_flow_env(
        agent,
        tmp_path,
        extra={
            "METAFLOW_NOMAD_DRIVER": "docker",
            "METAFLOW_NOMAD_PACKAGE_CACHE": str(cache),
            "METAFLOW_NOMAD_NETWORK_MODE": "host",
        },
    )
    result = _doctor(tmp_path, env, "--probe")
    jobs = agent.api("GET", "/v1/jobs")
    assert result.returncode == 1, result.output
    lines = _lines(result.output)
    # The local datastore, on a shared filesystem, is mounted as well as the cache.
    assert (
        f"FAIL  docker volumes: the step bind-mounts {tmp_path / '.metaflow'}, {cache}, and no "
        "eligible node's docker plugin allows it: set `volumes { enabled = true }`"
    ) in result.output
    assert not any(line.startswith(PACKAGE_CACHE_HINT) for line in lines)
    assert "Probe with step 'compute_on_nomad': not run, fix the FAIL lines above first." in lines
    assert lines[-1].startswith("Verdict: 1 of ") and "docker volumes (step" in lines[-1]
    assert jobs == []
    assert not cache.exists()


def test_probe_in_docker_reports_an_image_that_cannot_be_pulled(docker_on_s3, tmp_path):
    image = "metaflow-nomad/not-here:1.0"
    env = {**docker_on_s3, "METAFLOW_NOMAD_DEFAULT_IMAGE": image}
    result = _doctor(tmp_path, env, "--probe", flow="with_flow.py", top_args=("--with", "nomad"))
    assert result.returncode == 1
    probe = _section(_lines(result.output), "Probe with step 'start'", 3)
    assert probe[0].startswith("ok    code package upload: ")
    assert probe[1].startswith(
        f"FAIL  task start: the docker image `{image}` could not be pulled on node "
        'mf-nomad-test: API error (500): Get "https://registry-1.docker.io/v2/"'
    )
    assert probe[2].startswith("ok    clean-up: job ")
