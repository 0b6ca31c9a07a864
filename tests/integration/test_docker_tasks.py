"""Real docker tasks on a real engine: the user guide's default path.

Every step here runs in the offline-built ``python:3.11`` image, which holds
Python and Metaflow's dependencies but not this project (the code package brings
it), with an S3 datastore (moto) and no shared filesystem: the task sees nothing
of the launcher's disk.  Outcomes are checked through the Nomad API, the Docker
engine and the Metaflow client.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.lookup import find_jobs
from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent
from metaflow_nomad.testing.pki import make_test_pki
from tests.support.docker import containers_of
from tests.support.flows import agent_flow_env, agent_path_env, run_flow, start_flow, wait_for
from tests.support.nomad_checks import settled_allocations, wait_no_active_jobs, wait_task_running
from tests.support.s3 import S3_TEMPLATES, put_s3_credentials

pytestmark = pytest.mark.integration

USER_GUIDE_RESULT = "Computation result: 332833500"


@pytest.fixture(scope="module")
def docker_s3(docker_agent, s3_server):
    """The docker agent with S3 credentials in Nomad Variables, for every job."""
    put_s3_credentials(docker_agent, s3_server.credentials)
    return docker_agent, s3_server


def docker_env(agent, s3, workdir, prefix: str, **extra) -> dict:
    """A launcher set up for docker tasks on S3: no shared filesystem, host networking
    (the tasks reach the agent and moto on loopback), the Variables template."""
    return agent_flow_env(
        agent,
        workdir,
        extra={
            **s3.metaflow_env(prefix),
            "METAFLOW_NOMAD_DRIVER": "docker",
            "METAFLOW_NOMAD_SHARED_FILESYSTEM": "",
            "METAFLOW_NOMAD_NETWORK_MODE": "host",
            "METAFLOW_NOMAD_TEMPLATES_DIR": str(S3_TEMPLATES),
            **extra,
        },
    )


def test_user_guide_flow_runs_unchanged_in_docker_on_s3(docker_s3, docker_engine, tmp_path):
    agent, s3 = docker_s3
    client = NomadClient(agent.connection_settings())
    started = time.time() - 1
    run = run_flow(
        "nomad_flow.py",
        tmp_path,
        docker_env(agent, s3, tmp_path, "docker-guide"),
        top_args=("--datastore=s3",),
        timeout=300,
    )
    assert run.returncode == 0, run.output
    assert USER_GUIDE_RESULT in run.output
    assert "This step is running on Nomad!" in run.output  # streamed from S3 while it ran
    [stub] = find_jobs(client, "NomadFlow", run.run_id, include_dead=True)
    job = client.job(stub["ID"])
    task = job["TaskGroups"][0]["Tasks"][0]
    assert task["Driver"] == "docker"
    assert task["Config"]["image"] == "python:3.11"
    assert task["Config"]["network_mode"] == "host"
    [alloc] = settled_allocations(lambda: client.job_allocations(stub["ID"])[0])
    assert alloc["ClientStatus"] == "complete"
    events = containers_of(docker_engine, alloc["ID"], started)
    actions = [e["Action"] for e in events]
    assert "start" in actions and "die" in actions, events
    assert {e["Actor"]["Attributes"]["image"] for e in events} == {"python:3.11"}
    assert docker_engine.running_containers() == []


def _alloc_events(client, job_id: str) -> list[dict]:
    allocs, _ = client.job_allocations(job_id)
    return [
        event
        for alloc in allocs
        for event in ((alloc.get("TaskStates") or {}).get("metaflow") or {}).get("Events") or []
    ]


def test_foreach_with_retry_and_tricky_environment_values(docker_s3, docker_engine, tmp_path):
    agent, s3 = docker_s3
    client = NomadClient(agent.connection_settings())
    run = run_flow(
        "docker_foreach_flow.py",
        tmp_path,
        docker_env(agent, s3, tmp_path, "docker-foreach"),
        top_args=("--datastore=s3",),
        timeout=400,
    )
    assert run.returncode == 0, run.output
    assert "total of squares: 30" in run.output
    jobs = find_jobs(client, "DockerForeachFlow", run.run_id, include_dead=True)
    square_jobs = [j for j in jobs if j["Meta"]["metaflow.step_name"] == "square"]
    # Four items, and one more attempt for the planned failure: five docker jobs.
    assert len(square_jobs) == 5
    assert sorted(j["Meta"]["metaflow.attempt"] for j in square_jobs) == ["0"] * 4 + ["1"]
    for stub in square_jobs:
        assert client.job(stub["ID"])["TaskGroups"][0]["Tasks"][0]["Driver"] == "docker"
    script = (
        "from metaflow import Run, namespace; namespace(None); "
        f"r = Run('DockerForeachFlow/{run.run_id}'); "
        "import json; print(json.dumps([r['join'].task.data.seen, r['join'].task.data.attempts]))"
    )
    seen, attempts = _client_read(script, tmp_path, run.env)
    from tests.flows.docker_foreach_flow import TRICKY

    assert seen == [TRICKY] * 4
    assert attempts == {"1": 0, "2": 0, "3": 1, "4": 0}
    assert docker_engine.running_containers() == []


def _client_read(script: str, workdir, env) -> object:
    """Run Metaflow client code as a user would, in the flow's directory and env."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_oom_is_reported_for_memory_with_its_limit_and_retried_as_a_failure(
    docker_s3, docker_engine, tmp_path
):
    agent, s3 = docker_s3
    client = NomadClient(agent.connection_settings())
    run = run_flow(
        "oom_flow.py",
        tmp_path,
        docker_env(agent, s3, tmp_path, "docker-oom"),
        top_args=("--datastore=s3",),
        timeout=300,
    )
    assert run.returncode != 0
    expected = (
        "the task was killed for running out of memory (limit 200 MB); "
        "raise `memory` in @nomad or @resources"
    )
    # The verdict of attempt 0, and of @retry's attempt 1: a normal, retryable failure.
    verdicts = [line for line in run.output.splitlines() if "Step failed on Nomad" in line]
    assert len(verdicts) == 2, run.output
    assert all(
        line.endswith(f"{expected}. This could be a transient error. Use @retry to retry.")
        for line in verdicts
    ), verdicts
    jobs = find_jobs(client, "OomFlow", run.run_id, include_dead=True)
    assert sorted(j["Meta"]["metaflow.attempt"] for j in jobs if "hungry" in j["ID"]) == ["0", "1"]
    for job in jobs:
        if "hungry" not in job["ID"]:
            continue
        [terminated] = [e for e in _alloc_events(client, job["ID"]) if e["Type"] == "Terminated"]
        assert terminated["Details"]["oom_killed"] == "true"  # Docker said so, not us
        assert client.job(job["ID"])["Status"] == "dead"
    assert docker_engine.running_containers() == []


@pytest.mark.parametrize(
    "image", ["metaflow-nomad/not-here:1.0", "python:latest"], ids=["missing", "latest"]
)
def test_an_image_that_cannot_be_pulled_fails_in_seconds_and_says_why(
    docker_s3, docker_engine, tmp_path, image
):
    agent, s3 = docker_s3
    client = NomadClient(agent.connection_settings())
    started = time.monotonic()
    run = run_flow(
        "nomad_flow.py",
        tmp_path,
        docker_env(agent, s3, tmp_path, "docker-image"),
        "--with",
        f"nomad:image={image}",
        top_args=("--datastore=s3",),
        timeout=180,
    )
    elapsed = time.monotonic() - started
    assert run.returncode != 0
    assert elapsed < 60, f"took {elapsed:.0f}s"
    note = " (a `latest` or untagged image is pulled every time)" if "latest" in image else ""
    headline = (
        f"the docker image `{image}` could not be pulled on node mf-nomad-test{note}: "
        'API error (500): Get "https://registry-1.docker.io/v2/"'
    )
    assert headline in run.output, run.output
    jobs = find_jobs(client, "NomadFlow", run.run_id, include_dead=True)
    assert jobs and all(client.job(j["ID"])["Status"] == "dead" for j in jobs)
    assert docker_engine.running_containers() == []


def test_ctrl_c_leaves_no_container_and_no_job(docker_s3, docker_engine, tmp_path):
    agent, s3 = docker_s3
    client = NomadClient(agent.connection_settings())
    env = docker_env(agent, s3, tmp_path, "docker-ctrl-c")
    run = start_flow(
        "sleep_flow.py", tmp_path, env, "--seconds", "120", top_args=("--datastore=s3",)
    )
    try:
        run_id = run.wait_run_id()
        job = wait_task_running(client, run, "SleepFlow", run_id, timeout=120)
        assert wait_for(docker_engine.running_containers, 30, "the step's container")
        os.killpg(run.proc.pid, signal.SIGINT)  # the terminal's Ctrl-C
        run.finish(60)
    finally:
        run.kill()
    cleanup = wait_no_active_jobs(client, "SleepFlow", run_id, [job["ID"]], timeout=30)
    assert (cleanup.jobs_left, cleanup.allocs_left) == (0, 0)
    assert wait_for(lambda: docker_engine.running_containers() == [], 30, "no container")
    assert f"Stopped Nomad job {job['ID']} (received SIGINT)" in run.output


def test_logs_stream_while_the_container_runs_and_logs_command_reads_them(docker_s3, tmp_path):
    agent, s3 = docker_s3
    env = docker_env(agent, s3, tmp_path, "docker-stream")
    run = start_flow("docker_stream_flow.py", tmp_path, env, top_args=("--datastore=s3",))
    try:
        run_id = run.wait_run_id()
        wait_for(lambda: "STREAM-FIRST" in run.output, 180, "the first line, streamed")
        assert "STREAM-SECOND" not in run.output
        bucket, _, prefix = env["METAFLOW_DATASTORE_SYSROOT_S3"][5:].partition("/")
        s3.client().put_object(Bucket=bucket, Key=f"{prefix}/go-ahead/{run_id}", Body=b"go")
        assert run.wait(180) == 0, run.output
    finally:
        run.kill()
    assert run.output.index("STREAM-FIRST") < run.output.index("STREAM-SECOND")
    logs = _task_logs("docker_stream_flow.py", tmp_path, env, f"{run_id}/start")
    assert "STREAM-FIRST" in logs and "STREAM-SECOND" in logs


def _task_logs(flow_file: str, workdir, env, pathspec: str) -> str:
    """What `flow.py logs <pathspec>` prints for a task on the S3 datastore."""
    logs = run_flow(
        flow_file,
        workdir,
        env,
        pathspec,
        command="logs",
        top_args=("--datastore=s3",),
        copy=False,
        timeout=120,
    )
    assert logs.returncode == 0, logs.output
    return logs.output


def test_docker_tasks_share_the_nodes_package_cache_when_one_is_set(docker_s3, tmp_path):
    """With ``package_cache`` the node's directory is mounted into every container:
    the first task unpacks the package there, the next one starts from it."""
    agent, s3 = docker_s3
    cache = tmp_path / "node-package-cache"
    env = docker_env(agent, s3, tmp_path, "docker-cache", METAFLOW_NOMAD_PACKAGE_CACHE=str(cache))
    run = run_flow(
        "two_step_flow.py", tmp_path, env, "--with", "nomad", top_args=("--datastore=s3",)
    )
    assert run.returncode == 0, run.output
    assert "the word is cached" in run.output
    [entry] = cache.iterdir()
    assert (entry / ".mf_code" / "metaflow" / "__init__.py").is_file()
    assert any((entry / ".mf_code" / "metaflow" / "__pycache__").iterdir())
    unpacked = "Setting up task environment."
    assert unpacked in _task_logs("two_step_flow.py", tmp_path, env, f"{run.run_id}/start")
    assert unpacked not in _task_logs("two_step_flow.py", tmp_path, env, f"{run.run_id}/end")


def test_a_mount_the_nodes_docker_plugin_refuses_fails_at_once_and_says_what_to_change(
    docker_agent_without_volumes, s3_server, docker_engine, tmp_path
):
    agent = docker_agent_without_volumes
    put_s3_credentials(agent, s3_server.credentials)
    cache = tmp_path / "node-package-cache"
    env = docker_env(
        agent, s3_server, tmp_path, "docker-refused", METAFLOW_NOMAD_PACKAGE_CACHE=str(cache)
    )
    run = run_flow(
        "two_step_flow.py", tmp_path, env, "--with", "nomad", top_args=("--datastore=s3",)
    )
    assert run.returncode == 1, run.output
    assert (
        "the docker plugin on node mf-nomad-test does not allow bind mounts, and the step "
        f"mounts {cache}: set `volumes {{ enabled = true }}`"
    ) in run.output
    assert "transient" not in run.output
    assert "Traceback" not in run.output
    jobs = agent.api("GET", "/v1/jobs")
    assert jobs and all(job["Stop"] and job["Status"] == "dead" for job in jobs), jobs
    allocations = agent.api("GET", "/v1/allocations")
    assert [a["ClientStatus"] for a in allocations] == ["failed"]
    assert docker_engine.running_containers() == []
    assert not cache.exists()


@pytest.fixture(scope="module")
def secure_docker_agent(docker_engine, tmp_path_factory):
    """ACLs and mutual TLS, as production clusters run, with the docker driver."""
    pki = make_test_pki(tmp_path_factory.mktemp("docker-pki"))
    agent = LocalAgent(
        options=AgentOptions(
            acl=True,
            tls=pki,
            env=agent_path_env(),
            docker_plugin=docker_engine.nomad_plugin_config(),
        )
    )
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def test_docker_task_calls_the_mtls_cluster_with_the_mounted_certificates(
    secure_docker_agent, docker_engine, tmp_path
):
    """The local datastore on a shared filesystem: the template bind-mounts its root
    into the container at the same path, and the TLS directory at a fixed one."""
    agent = secure_docker_agent
    pki = agent.options.tls
    env = agent_flow_env(
        agent,
        tmp_path,
        extra={
            "METAFLOW_NOMAD_DRIVER": "docker",
            "METAFLOW_NOMAD_NETWORK_MODE": "host",
            "METAFLOW_NOMAD_TASK_TLS_DIR": str(pki.directory),
        },
    )
    run = run_flow("mtls_flow.py", tmp_path, env, timeout=300)
    assert run.returncode == 0, run.output
    leader = agent.api("GET", "/v1/status/leader")
    assert f"leader seen from the task: {leader}" in run.output
    client = NomadClient(agent.connection_settings())
    [stub] = [
        j for j in find_jobs(client, "MtlsFlow", run.run_id, include_dead=True) if "call" in j["ID"]
    ]
    task = client.job(stub["ID"])["TaskGroups"][0]["Tasks"][0]
    assert task["Driver"] == "docker"
    assert task["Env"]["NOMAD_CACERT"] == "/etc/metaflow-nomad/tls/ca.pem"
    [mount] = task["Config"]["mount"]
    assert (mount["source"], mount["target"], mount["readonly"]) == (
        str(pki.directory),
        "/etc/metaflow-nomad/tls",
        True,
    )
    root = str(tmp_path / ".metaflow")
    assert f"{root}:{root}" in task["Config"]["volumes"]
    assert "NOMAD_TOKEN" not in task["Env"]
    assert docker_engine.running_containers() == []
