"""The production-shaped test cluster is what it claims to be: 3 servers with one raft
leader, 3 clients in 2 datacenters, ACL and mutual TLS enforced, raw_exec and docker
tasks placed on its clients, a docker image pulled from a private registry with
credentials, a new leader soon after the old one dies, and nothing left after stop().
"""

from __future__ import annotations

import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.testing.cluster import ClusterOptions, ProductionCluster
from metaflow_nomad.testing.registry import DOCKER_CERTS_D, Registry
from tests.support.cluster import run_batch_job, task_output

pytestmark = pytest.mark.integration

# A one-task batch job that Nomad never restarts or reschedules, as a step's job is.
BATCH_JOB = """
job "JOB" {
  type        = "batch"
  datacenters = DATACENTERS
CONSTRAINT  group "g" {
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    task "t" {
TASK
    }
  }
}
"""

PINNED = """  constraint {
    attribute = "${node.unique.name}"
    value     = "NODE"
  }
"""

RAW_EXEC_TASK = """
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "echo ran in ${NOMAD_DC} on ${node.unique.name}"]
      }
      resources {
        cpu    = 50
        memory = 32
      }
"""

# The credentials sit in the jobspec only here, in this smoke test of the registry.
DOCKER_TASK = """
      driver = "docker"
      config {
        image        = "IMAGE"
        network_mode = "host"
        command      = "python"
        args         = ["-c", "import sys; open('/alloc/data/pulled', 'w').write(WRITTEN)"]
        auth {
          username = "USERNAME"
          password = "PASSWORD"
        }
      }
      resources {
        cpu    = 100
        memory = 128
      }
"""

LONG_DOCKER_TASK = """
      driver = "docker"
      config {
        image        = "python:3.11"
        network_mode = "host"
        command      = "sleep"
        args         = ["300"]
      }
"""


def batch_job(name: str, task: str, datacenters: str = '["dc1", "dc2"]', node: str = "") -> str:
    """``BATCH_JOB`` around ``task``, pinned to the client ``node`` when one is named."""
    constraint = PINNED.replace("NODE", node) if node else ""
    return _fill(
        BATCH_JOB, JOB=name, DATACENTERS=datacenters, CONSTRAINT=constraint, TASK=task.strip("\n")
    )


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace(key, value)
    return template


def _raw_exec_job(name: str, datacenter: str) -> str:
    return batch_job(name, RAW_EXEC_TASK, datacenters=f'["{datacenter}"]')


def _client(cluster: ProductionCluster) -> NomadClient:
    return NomadClient(cluster.connection_settings())


def _tls_context(cluster: ProductionCluster, client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cluster.pki.ca_file))
    if client_cert:
        context.load_cert_chain(str(cluster.pki.client_cert), str(cluster.pki.client_key))
    return context


def _raft_servers(cluster: ProductionCluster) -> list[dict]:
    return cluster.api("GET", "/v1/operator/raft/configuration")["Servers"]


def test_three_servers_are_raft_voters_with_one_leader(production_cluster):
    cluster = production_cluster
    rpc_addresses = {f"127.0.0.1:{s.ports['rpc']}" for s in cluster.servers.values()}
    assert set(cluster.api("GET", "/v1/status/peers")) == rpc_addresses
    servers = _raft_servers(cluster)
    assert {s["Address"] for s in servers} == rpc_addresses
    assert all(s["Voter"] for s in servers)
    [leader] = [s for s in servers if s["Leader"]]
    assert leader["Node"] == f"{cluster.leader()}.global"
    # Three processes, not one agent with three names.
    assert len({s.process.pid for s in cluster.servers.values()}) == 3


def test_three_ready_clients_in_two_datacenters_with_raw_exec_and_docker(production_cluster):
    nodes = {n["Name"]: n for n in production_cluster.api("GET", "/v1/nodes")}
    assert {name: n["Datacenter"] for name, n in nodes.items()} == {
        "c0": "dc1",
        "c1": "dc1",
        "c2": "dc2",
    }
    assert len({n["ID"] for n in nodes.values()}) == 3
    for node in nodes.values():
        assert node["Status"] == "ready"
        assert node["Drivers"]["raw_exec"]["Healthy"]
        assert node["Drivers"]["docker"]["Healthy"]


def test_acl_is_enforced(production_cluster):
    cluster = production_cluster
    anonymous = urllib.request.Request(cluster.address + "/v1/jobs")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=5, context=_tls_context(cluster, True))
    assert refused.value.code == 403
    reader = cluster.create_namespace_token("cluster-team", policy="read")
    assert cluster.api("GET", "/v1/jobs?namespace=cluster-team", token=reader) == []
    with pytest.raises(urllib.error.HTTPError) as elsewhere:
        cluster.api("GET", "/v1/jobs?namespace=default", token=reader)
    assert elsewhere.value.code == 403


def test_only_https_with_a_client_certificate_is_served(production_cluster):
    cluster = production_cluster
    port = cluster.front().ports["http"]
    with pytest.raises(urllib.error.HTTPError) as plain:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/leader", timeout=5)
    assert plain.value.code == 400
    assert "HTTPS server" in plain.value.read().decode()
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(
            cluster.address + "/v1/status/leader", timeout=5, context=_tls_context(cluster, False)
        ).read()
    with urllib.request.urlopen(
        cluster.address + "/v1/status/leader", timeout=5, context=_tls_context(cluster, True)
    ) as answer:
        assert answer.status == 200


def test_a_raw_exec_job_for_dc2_runs_on_its_client(production_cluster):
    client = _client(production_cluster)
    alloc = run_batch_job(client, _raw_exec_job("cluster-raw-exec-dc2", "dc2"))
    assert alloc["ClientStatus"] == "complete", task_output(client, alloc)
    assert production_cluster.node_name_of_alloc(alloc["ID"]) == "c2"
    assert task_output(client, alloc).strip() == "ran in dc2 on c2"


def test_the_docker_image_is_pulled_from_the_private_registry(production_cluster):
    cluster = production_cluster
    registry, image, engine = cluster.registry, cluster.task_image, cluster.engine
    assert registry is not None and image is not None and engine is not None
    assert image.startswith(f"127.0.0.1:{registry.port}/metaflow-nomad/task:")
    # Pushed, then untagged: Nomad must pull it.
    assert engine.docker("image", "inspect", image, check=False).returncode != 0
    pulls_before = len(registry.manifest_pulls(image))
    credentials = registry.credentials
    hcl = _fill(
        batch_job("cluster-registry-pull", DOCKER_TASK),
        IMAGE=image,
        WRITTEN="f'python {sys.version_info[:2]} pulled'",
        USERNAME=credentials.username,
        PASSWORD=credentials.password,
    )
    client = _client(cluster)
    try:
        alloc = run_batch_job(client, hcl, timeout=180)
        assert alloc["ClientStatus"] == "complete", task_output(client, alloc)
        # Read from the allocation's directory: Nomad's docker logger can miss the
        # stdout of a container that ends before it attached (CI saw an empty log).
        written = cluster.api_text(f"/v1/client/fs/cat/{alloc['ID']}?path=alloc/data/pulled")
        assert written == "python (3, 11) pulled"
        assert len(registry.manifest_pulls(image)) > pulls_before, registry.log_tail()
        assert engine.docker("image", "inspect", image, check=False).returncode == 0
    finally:
        # The next test of the module must find the image missing again.
        engine.docker("rmi", image, check=False)


def test_a_killed_client_takes_its_containers_and_comes_back(production_cluster):
    """kill_client: the node's machine dies, containers included (they live in the
    shared engine, labelled with their node); restart_member: it is back and ready."""
    cluster, engine = production_cluster, production_cluster.engine
    assert engine is not None
    node_id = cluster.clients["c0"].node_id()
    label = f"label=com.hashicorp.nomad.node_id={node_id}"
    client = _client(cluster)
    client.register(
        client.parse(batch_job("cluster-kill-c0", LONG_DOCKER_TASK, '["dc1"]', node="c0"))
    )
    try:
        deadline = time.monotonic() + 120
        while not engine.docker("ps", "-q", "--filter", label).stdout.split():
            assert time.monotonic() < deadline, "no container for the task"
            time.sleep(0.3)
        cluster.kill_client("c0")
        assert engine.docker("ps", "-q", "--filter", label).stdout.split() == []
        assert _processes_of(cluster.clients["c0"].data_dir) == []
        cluster.restart_member("c0")
        assert cluster.nodes_not_ready() is None
    finally:
        client.deregister("cluster-kill-c0", purge=True)


def test_the_registry_wants_the_password(production_cluster):
    registry = production_cluster.registry
    assert registry is not None
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        registry.status()
    assert anonymous.value.code == 401
    assert registry.status(registry.credentials) == 200


def _processes_of(directory: Path) -> list[int]:
    """Processes whose command line names ``directory`` (every agent, the registry) or
    whose working directory is in it (raw_exec tasks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if str(directory) in cmdline or cwd.startswith(f"{directory}/"):
                found.append(int(entry.name))
    return [pid for pid in found if _alive(pid)]


def _alive(pid: int) -> bool:
    """A process with this pid exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_a_new_leader_is_elected_after_the_leader_dies_and_stop_leaves_nothing(
    docker_engine,
):
    """On a cluster of its own: it kills a server, and it must be stopped to check."""
    began = time.monotonic()
    cluster = ProductionCluster(ClusterOptions(docker=True, engine=docker_engine))
    try:
        cluster.start()
        print(f"\nsecond cluster started in {time.monotonic() - began:.1f}s {cluster.timings}")
        old_leader = cluster.leader()
        killed_at = time.monotonic()
        cluster.kill_server(old_leader)
        new_leader = cluster.wait_for_leader(timeout=30, other_than=old_leader)
        elected_after = time.monotonic() - killed_at
        print(f"{new_leader} leads {elected_after:.1f}s after {old_leader} was killed")
        assert elected_after < 10
        client = _client(cluster)
        alloc = run_batch_job(client, _raw_exec_job("cluster-after-failover", "dc1"))
        assert alloc["ClientStatus"] == "complete", task_output(client, alloc)

        cluster.restart_member(old_leader)
        deadline = time.monotonic() + 60
        while sum(s["Voter"] for s in _raft_servers(cluster)) < 3:
            assert time.monotonic() < deadline, _raft_servers(cluster)
            time.sleep(0.5)
        assert cluster.nodes_not_ready() is None

        assert cluster.registry is not None
        pids = [m.process.pid for m in cluster.members if m.process is not None]
        pids.append(cluster.registry.process.pid)
        assert len(pids) == 7
        trusted_ca = DOCKER_CERTS_D / cluster.registry.address
        assert trusted_ca.is_dir()
    finally:
        cluster.stop()
    assert [pid for pid in pids if _alive(pid)] == []
    assert _processes_of(cluster.dir) == []
    assert not cluster.dir.exists()
    assert not trusted_ca.exists()


def _node_status(cluster: ProductionCluster) -> dict[str, str]:
    return {n["Name"]: n["Status"] for n in cluster.api("GET", "/v1/nodes")}


def _wait_for_status(cluster: ProductionCluster, wanted: dict[str, str], timeout: float) -> float:
    """Seconds until the nodes have the ``wanted`` statuses."""
    began = time.monotonic()
    while True:
        status = _node_status(cluster)
        if all(status[name] == s for name, s in wanted.items()):
            return time.monotonic() - began
        assert time.monotonic() - began < timeout, status
        time.sleep(0.2)


def test_a_dead_or_frozen_client_is_down_within_the_heartbeat_window():
    """min_heartbeat_ttl 5 s (TTLs of 5-10 s) + heartbeat_grace 5 s: down within 15 s
    of the last heartbeat.  A killed client's raw_exec task dies with it; a thawed
    client is ready again."""
    cluster = ProductionCluster(ClusterOptions(docker=False))
    try:
        cluster.start()
        client = _client(cluster)
        hcl = _raw_exec_job("cluster-doomed", "dc2").replace(
            '"echo ran in ${NOMAD_DC} on ${node.unique.name}"', '"exec sleep 300"'
        )
        client.register(client.parse(hcl))
        doomed = cluster.clients["c2"].data_dir
        deadline = time.monotonic() + 60
        while not _processes_of(doomed / "data" / "alloc"):
            assert time.monotonic() < deadline, "the task did not start"
            time.sleep(0.2)

        cluster.kill_client("c2")
        cluster.freeze_client("c1")
        assert _processes_of(doomed) == []
        down_after = _wait_for_status(cluster, {"c1": "down", "c2": "down"}, timeout=30)
        print(f"\nkilled and frozen clients down after {down_after:.1f}s")
        assert down_after < 20
        # The node's allocations are marked lost by the evaluation its going down makes.
        deadline = time.monotonic() + 10
        while client.job_allocations("cluster-doomed", wait_s=1)[0][0]["ClientStatus"] != "lost":
            assert time.monotonic() < deadline, client.job_allocations("cluster-doomed")[0]
            time.sleep(0.2)

        cluster.thaw_client("c1")
        _wait_for_status(cluster, {"c1": "ready", "c0": "ready"}, timeout=30)
    finally:
        cluster.stop()


def test_a_stopped_registry_comes_back_on_its_port_with_its_images(tmp_path):
    """``stop(cleanup=False)`` + ``start()``: the "registry down" fault, then recovery."""
    registry = Registry(directory=tmp_path / "registry").start()
    try:
        port, config = registry.port, (registry.dir / "config.yml").read_text()
        registry.stop(cleanup=False)
        with pytest.raises(urllib.error.URLError):
            registry.status()
        registry.start()
        assert (registry.port, (registry.dir / "config.yml").read_text()) == (port, config)
        assert registry.status(registry.credentials) == 200
    finally:
        registry.stop()
    assert not registry.dir.exists()
    assert not (DOCKER_CERTS_D / registry.address).exists()
