"""Issue 5 item 7: device scheduling for real, with Nomad's example device plugin.

The plugin (built from Nomad's own source by scripts/get_nomad.sh) exposes files
in a directory as "nomad/file/mock" devices.  A project override of the step
template requests that device type in its `devices` block when the step's
feature `gpu` is on, which the step's `gpu=` setting switches on.
"""

import re
import subprocess
from pathlib import Path

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.lookup import find_jobs
from metaflow_nomad.testing.local_agent import REPO_ROOT, AgentOptions, LocalAgent
from tests.support.flows import agent_flow_env, agent_path_env, run_flow, wait_for

pytestmark = pytest.mark.integration
TEMPLATES = Path(__file__).resolve().parent.parent / "device_templates"


@pytest.fixture(scope="module")
def device_agent(tmp_path_factory):
    plugin = (
        subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "get_nomad.sh"), "example-device"],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
            timeout=900,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    devices = tmp_path_factory.mktemp("devices")
    for name in ("card0", "card1"):
        (devices / name).write_text(name)
    extra = f"""
plugin_dir = "{Path(plugin).parent}"
plugin "example-fs-device" {{
  config {{
    dir            = "{devices}"
    list_period    = "1s"
    unhealthy_perm = "-rwxrwxrwx"
  }}
}}
"""
    agent = LocalAgent(options=AgentOptions(env=agent_path_env(), extra_config=extra))
    agent.start()

    def healthy_devices():
        node = agent.api("GET", "/v1/node/" + agent.api("GET", "/v1/nodes")[0]["ID"])
        for group in node["NodeResources"].get("Devices") or []:
            if (group["Vendor"], group["Type"]) == ("nomad", "file"):
                return [i["ID"] for i in group["Instances"] if i["Healthy"]]
        return []

    try:
        assert sorted(wait_for(healthy_devices, 60, "the fake devices")) == ["card0", "card1"]
        yield agent
    finally:
        agent.stop()


def device_env(**extra):
    return {
        "METAFLOW_NOMAD_TEMPLATES_DIR": str(TEMPLATES),
        "METAFLOW_NOMAD_GPU_VENDOR": "nomad",
        **extra,
    }


def test_gpu_step_is_placed_with_its_devices(device_agent, tmp_path):
    flow = run_flow(
        "device_flow.py", tmp_path, agent_flow_env(device_agent, tmp_path, extra=device_env())
    )
    output = flow.output
    assert flow.proc.returncode == 0, output
    client = NomadClient(device_agent.connection_settings())
    [stub] = [
        j
        for j in find_jobs(client, "DeviceFlow", flow.run_id, include_dead=True)
        if j["Meta"]["metaflow.step_name"] == "start"
    ]
    assert stub["Meta"]["metaflow.template"] == "base.nomad.hcl.j2"
    allocs, _ = client.job_allocations(stub["ID"])
    alloc = client.allocation(allocs[0]["ID"])
    devices = alloc["AllocatedResources"]["Tasks"]["metaflow"]["Devices"]
    print(f"placed on {allocs[0]['NodeName']} with devices {devices}")
    assert [(d["Vendor"], d["Type"], d["Name"]) for d in devices] == [("nomad", "file", "mock")]
    assert sorted(devices[0]["DeviceIDs"]) == ["card0", "card1"]
    assert f"allocation {allocs[0]['ID']}" in output


def test_more_devices_than_exist_is_explained_and_times_out(device_agent, tmp_path):
    flow = run_flow(
        "too_many_devices_flow.py",
        tmp_path,
        agent_flow_env(
            device_agent, tmp_path, extra=device_env(METAFLOW_NOMAD_PENDING_TIMEOUT="5")
        ),
        timeout=120,
    )
    output = " ".join(flow.output.split())
    assert flow.proc.returncode != 0
    print(output[-800:])
    assert "Task is pending: task group 'step' cannot be placed" in output
    assert "1 of 1 node(s) lack the requested device" in output
    assert "pending after 5s (pending_timeout)" in output


def _doctor(flow_file, tmp_path, env):
    return run_flow(flow_file, tmp_path, env, "doctor", command="nomad", timeout=120)


def test_doctor_checks_the_devices_the_steps_template_asks_for(device_agent, tmp_path):
    """The devices come from the step's rendered job (here a project template asking
    for nomad/file/mock), and are counted on the node through the API."""
    env = agent_flow_env(device_agent, tmp_path, extra=device_env())
    fits = _doctor("device_flow.py", tmp_path / "fits", env)
    assert fits.returncode == 0, fits.output
    lines = [line.strip() for line in fits.output.splitlines()]
    assert "ok    device nomad/file/mock x 2: a node has 2 healthy" in lines
    assert "ok    placement: the scheduler would place this step's job now" in lines

    too_many = _doctor("too_many_devices_flow.py", tmp_path / "too-many", env)
    assert too_many.returncode == 1
    lines = [line.strip() for line in too_many.output.splitlines()]
    device = next(line for line in lines if line.startswith("FAIL  device"))
    assert re.fullmatch(
        r"FAIL  device nomad/file/mock x (\d+): no eligible node has \1 healthy nomad/file/mock "
        r"instance\(s\) \(found: nomad/file/mock\): lower `gpu`, set `gpu_vendor`, or add "
        r"nodes with the device and its plugin\.",
        device,
    ), device
    assert "skip  placement: not planned: fix the lines above first" in lines
