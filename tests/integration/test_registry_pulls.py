"""Private registry pulls for real, on the production-shaped cluster: its docker
clients pull the task image from a TLS + htpasswd registry (Debian's docker-registry)
with credentials from a Nomad Variable (``registry_auth``), never from the jobspec.

Every run sets ``force_pull``, so that each task pulls even though an earlier one left
the image on the (shared) engine.  A wrong password, a missing tag and a registry that
is down each fail the step in seconds, naming the registry, the image and the fix;
a registry that goes down mid-run fails the next task, and ``resume`` finishes the run
once it is back.  Outcomes are checked through the Nomad API, the registry's access
log and the Metaflow client.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.lookup import find_jobs
from metaflow_nomad.runtime.outcome import registry_of
from tests.support.flows import flow_env, read_run, run_flow, start_flow
from tests.support.leaks import job_places, secret_locations
from tests.support.nomad_checks import wait_no_active_jobs, wait_task_running

pytestmark = pytest.mark.integration

FLOW_FILE = "registry_flow.py"
FLOW = "RegistryFlow"
VARIABLE = "nomad/jobs"
# A pull that fails must fail the step well inside Nomad's 5 minute pull timeout.
FAILS_WITHIN_S = 90
WITH_NOMAD = ("--with", "nomad")


@pytest.fixture(scope="module")
def cluster(production_cluster):
    """The cluster with the registry's credentials in the Variable every job may read."""
    put_credentials(production_cluster, production_cluster.registry.credentials.password)
    return production_cluster


@pytest.fixture()
def client(cluster) -> NomadClient:
    return NomadClient(cluster.connection_settings())


def put_credentials(cluster, password: str) -> None:
    username = cluster.registry.credentials.username
    body = {
        "Path": VARIABLE,
        "Items": {"registry_username": username, "registry_password": password},
    }
    cluster.api("PUT", f"/v1/var/{VARIABLE}", body)


def tag_lookups(registry, image: str) -> list[str]:
    """The registry's access-log lines of answered requests for ``image``'s tag: a
    pull ``HEAD``s (or ``GET``s) the tag's manifest, then fetches what it lacks."""
    repository, tag = image[len(registry.address) + 1 :].rsplit(":", 1)
    log = registry.log_path.read_text(errors="replace").splitlines()
    return [
        line
        for line in log
        if f"/v2/{repository}/manifests/{tag} HTTP" in line
        and ('"HEAD ' in line or '"GET ' in line)
        and '" 200 ' in line
    ]


def assert_nothing_left(client: NomadClient, run_id: str) -> None:
    """No job of the run active, no allocation of it running."""
    job_ids = [j["ID"] for j in find_jobs(client, FLOW, run_id, include_dead=True)]
    assert job_ids
    left = wait_no_active_jobs(client, FLOW, run_id, job_ids, timeout=30)
    assert (left.jobs_left, left.allocs_left) == (0, 0)


def env_for(cluster, workdir: Path, image: str, **extra: str) -> dict:
    return flow_env(
        None,
        workdir,
        {
            **cluster.connection_env(),
            "METAFLOW_NOMAD_DRIVER": "docker",
            "METAFLOW_NOMAD_DEFAULT_IMAGE": image,
            "METAFLOW_NOMAD_REGISTRY_AUTH": VARIABLE,
            "METAFLOW_NOMAD_FORCE_PULL": "1",
            "METAFLOW_NOMAD_NETWORK_MODE": "host",
            "METAFLOW_NOMAD_MEMORY": "400",
            **extra,
        },
    )


def run_on_nomad(cluster, workdir: Path, image: str, *args: str, **extra: str):
    began = time.monotonic()
    run = run_flow(
        FLOW_FILE, workdir, env_for(cluster, workdir, image, **extra), "--with", "nomad", *args
    )
    return run, time.monotonic() - began


def test_a_flow_pulls_its_image_with_the_variables_credentials_and_holds_none(
    cluster, client, tmp_path
):
    registry, image = cluster.registry, cluster.task_image
    lookups_before = len(tag_lookups(registry, image))
    run, took = run_on_nomad(cluster, tmp_path, image)
    print(f"\nregistry flow: 2 docker steps, each pulled, in {took:.1f}s")
    assert run.returncode == 0, run.output
    summary = read_run(run, f"{FLOW}/{run.run_id}")
    assert summary["successful"]
    [start] = summary["steps"]["start"]
    assert start["data"]["registry_env"] == []  # the step never sees the credentials
    # Both tasks asked the registry for the tag (force_pull) with the Variable's
    # credentials: it answered 200 only to an authenticated request.
    assert len(tag_lookups(registry, image)) - lookups_before == 2
    password = registry.credentials.password
    for stub in find_jobs(client, FLOW, run.run_id, include_dead=True):
        job = client.job(stub["ID"])
        task = job["TaskGroups"][0]["Tasks"][0]
        assert task["Config"]["image"] == image
        assert task["Config"]["auth"] == [
            {
                "username": "${METAFLOW_NOMAD_REGISTRY_USERNAME}",
                "password": "${METAFLOW_NOMAD_REGISTRY_PASSWORD}",
            }
        ]
        assert f'$path := "{VARIABLE}"' in task["Templates"][0]["EmbeddedTmpl"]
        places = job_places(cluster, stub["ID"], "metaflow")
        assert secret_locations({"registry password": password}, places) == []
    assert password not in run.output


@pytest.mark.parametrize("fault", ["wrong password", "missing tag", "registry down"])
def test_a_pull_that_cannot_succeed_fails_in_seconds_and_says_why(cluster, client, tmp_path, fault):
    registry, image = cluster.registry, cluster.task_image
    if fault == "missing tag":
        image = image.rsplit(":", 1)[0] + ":no-such-tag"
    if fault == "wrong password":
        put_credentials(cluster, "not-the-password")
    if fault == "registry down":
        registry.stop(cleanup=False)
    try:
        run, took = run_on_nomad(cluster, tmp_path, image)
    finally:
        put_credentials(cluster, registry.credentials.password)
        if registry.process is None:
            registry.start()
    print(f"\n{fault}: the run failed after {took:.1f}s")
    assert run.returncode != 0
    assert took < FAILS_WITHIN_S, run.output
    output = " ".join(run.output.split())
    host = registry_of(image)
    assert f"the docker image `{image}` could not be pulled on node c" in output, run.output
    fixes = {
        "wrong password": f"The registry {host} refused the credentials: set `registry_auth`",
        "missing tag": f"The registry {host} has no such image or tag: check the step's `image`",
        "registry down": f"could not reach the registry {host}: check that it is up",
    }
    assert fixes[fault] in output, run.output
    assert "Traceback" not in run.output
    assert_nothing_left(client, run.run_id)


def test_the_registry_going_down_mid_run_fails_the_next_task_and_resume_finishes(
    cluster, client, tmp_path
):
    registry, image = cluster.registry, cluster.task_image
    env = env_for(cluster, tmp_path, image, WORK_SECONDS="8")
    run = start_flow(FLOW_FILE, tmp_path, env, "--with", "nomad")
    run_id = run.wait_run_id()
    job = wait_task_running(client, run, FLOW, run_id)
    assert job["Meta"]["metaflow.step_name"] == "start"
    registry.stop(cleanup=False)
    try:
        run.wait(180)
    finally:
        registry.start()
    assert run.returncode != 0
    output = " ".join(run.output.split())
    assert f"could not reach the registry {registry_of(image)}" in output, run.output
    summary = read_run(run, f"{FLOW}/{run_id}")
    [start] = summary["steps"]["start"]
    assert start["successful"]  # the task already running finished; nothing was lost
    assert_nothing_left(client, run_id)
    resumed = run_flow(FLOW_FILE, tmp_path, env, "--with", "nomad", command="resume", copy=False)
    assert resumed.returncode == 0, resumed.output
    summary = read_run(resumed, f"{FLOW}/{resumed.run_id}")
    assert summary["successful"]
    [end] = summary["steps"]["end"]
    assert end["data"]["node"].startswith("c")


def test_doctor_probe_pulls_the_image_as_a_task_does(cluster, tmp_path):
    image = cluster.task_image
    env = env_for(cluster, tmp_path, image)
    good = run_flow(
        FLOW_FILE, tmp_path, env, "doctor", "--probe", command="nomad", top_args=WITH_NOMAD
    )
    lines = [line.strip() for line in good.output.splitlines()]
    assert good.returncode == 0, good.output
    assert (
        f"ok    registry credentials: tasks pull {image} with registry_username and "
        f"registry_password from the Nomad Variable {VARIABLE} in namespace 'default'" in lines
    )
    assert any(line.startswith("ok    task start: started on node c") for line in lines), (
        good.output
    )
    put_credentials(cluster, "not-the-password")
    try:
        bad = run_flow(
            FLOW_FILE,
            tmp_path / "bad",
            env,
            "doctor",
            "--probe",
            command="nomad",
            top_args=WITH_NOMAD,
        )
    finally:
        put_credentials(cluster, cluster.registry.credentials.password)
    assert bad.returncode == 1, bad.output
    task_start = next(line for line in bad.output.splitlines() if "task start:" in line)
    assert task_start.strip().startswith("FAIL  task start: the docker image"), bad.output
    assert "refused the credentials" in task_start
