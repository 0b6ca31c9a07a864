"""Issue 5 item 6: drivers other than raw_exec.

docker: there is no Docker engine on this machine (the agent fingerprints docker
as undetected), so a docker job is proven up to the cluster's own parser, with
the image, command and the mTLS bind mount.  exec: the agent binary is built with
cgo and runs as root, so exec is healthy here and a rendered job runs for real,
chrooted.
"""

from __future__ import annotations

import time

import pytest

from metaflow_nomad.client import ConnectionSettings, NomadClient, task_tls_material
from metaflow_nomad.jobspec import (
    BOOTSTRAP_ARGS,
    JobIdentity,
    TaskLaunch,
    parse_jobspec,
    render_jobspec,
)
from metaflow_nomad.local_agent import LocalAgent
from metaflow_nomad.settings import resolve_step_settings

pytestmark = pytest.mark.integration


def _identity(step: str) -> JobIdentity:
    return JobIdentity("DriverFlow", f"drv{int(time.time() * 1000)}", step, "1", 0, "tester")


def test_docker_job_renders_and_parses_with_image_and_command(nomad_client):
    settings = resolve_step_settings(
        "train", {"driver": "docker", "image": "python:3.11-slim"}, config={}
    )
    rendered = render_jobspec(settings, _identity("train"), TaskLaunch(script="echo hi"))
    job = parse_jobspec(rendered, nomad_client)
    task = job["TaskGroups"][0]["Tasks"][0]
    assert task["Driver"] == "docker"
    assert task["Config"]["image"] == "python:3.11-slim"
    assert task["Config"]["command"] == "/bin/bash"
    assert task["Config"]["args"] == list(BOOTSTRAP_ARGS)
    assert "mount" not in task["Config"]


def test_docker_job_over_mtls_bind_mounts_the_tls_directory(nomad_client):
    settings = resolve_step_settings(
        "train", {"driver": "docker", "image": "python:3.11-slim"}, config={}
    )
    tls = task_tls_material(
        ConnectionSettings(address="https://nomad.example:4646", client_cert="/c.pem"),
        "/etc/nomad.d/tls",
        "docker",
    )
    rendered = render_jobspec(settings, _identity("train"), TaskLaunch(script="true"), tls=tls)
    task = parse_jobspec(rendered, nomad_client)["TaskGroups"][0]["Tasks"][0]
    (mount,) = task["Config"]["mount"]
    assert mount == {
        "type": "bind",
        "source": "/etc/nomad.d/tls",
        "target": "/etc/metaflow-nomad/tls",
        "readonly": True,
    }
    assert task["Env"]["NOMAD_CACERT"] == "/etc/metaflow-nomad/tls/ca.pem"
    assert task["Env"]["NOMAD_ADDR"] == "https://nomad.example:4646"


@pytest.fixture()
def exec_agent():
    """Its own agent: exec allocations make the agent slow to shut down (chroot cleanup)."""
    agent = LocalAgent()
    agent.start()
    yield agent
    agent.stop()


def test_exec_driver_runs_a_rendered_job_for_real_in_a_chroot(exec_agent):
    nomad_agent = exec_agent
    nomad_client = NomadClient(ConnectionSettings(address=exec_agent.address))
    node = nomad_agent.api("GET", "/v1/nodes")[0]
    drivers = nomad_agent.api("GET", f"/v1/node/{node['ID']}")["Drivers"]
    assert drivers["exec"]["Healthy"], drivers["exec"]["HealthDescription"]
    settings = resolve_step_settings("probe", {"driver": "exec", "memory": 64}, config={})
    script = (
        'echo "exec-ran uid=$(id -u)"\n'
        # The repository exists on the host but not inside exec's chroot.
        f"if [ -e {nomad_agent.data_dir} ]; then echo not-isolated; else echo chrooted; fi\n"
    )
    rendered = render_jobspec(settings, _identity("probe"), TaskLaunch(script=script))
    nomad_client.register(parse_jobspec(rendered, nomad_client))
    try:
        deadline = time.monotonic() + 90
        allocs: list = []
        while time.monotonic() < deadline:
            allocs, _ = nomad_client.job_allocations(rendered.job_id)
            if allocs and allocs[0]["ClientStatus"] in ("complete", "failed", "lost"):
                break
            time.sleep(0.5)
        assert allocs and allocs[0]["ClientStatus"] == "complete", allocs
        out = nomad_client.alloc_logs(allocs[0]["ID"], "metaflow", "stdout", 4096)
        # exec drops to nobody by default, where raw_exec would run as the agent (root).
        assert "exec-ran uid=65534" in out
        assert "chrooted" in out
    finally:
        nomad_client.deregister(rendered.job_id, purge=True)
