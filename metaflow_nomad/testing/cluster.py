"""A production-shaped Nomad cluster on loopback, for tests of faults a single agent
cannot have: a lost leader, a dead or frozen client node, a registry that is down.

Shape (the defaults of ``ClusterOptions``):

- 3 servers (``s0``-``s2``, datacenter dc1), ``bootstrap_expect = 3``: a real raft
  election among separate processes; they find each other with
  ``server_join { retry_join }`` on their serf ports.
- 3 clients in 2 datacenters (``c0``, ``c1`` in dc1, ``c2`` in dc2), told the
  servers' RPC ports in ``client { servers }``.  Each has its own data dir (so its
  own node ID, alloc and state dirs) and its own slice of Nomad's dynamic port
  range (20000-31999), since all of them hand out ports of the same host.
- Every agent is its own process with its own data dir under one temporary
  directory, on ports from ``ports.free_port`` (15000-19999: below the ephemeral
  range, so nothing else takes them between the pick and the bind).
- ACLs (bootstrapped once; ``management_token``, ``create_namespace_token``) and
  mutual TLS everywhere, from ``pki.make_test_pki``: servers present
  ``server.<region>.nomad``, clients ``client.<region>.nomad`` (Nomad checks the
  role with ``verify_server_hostname``), HTTPS wants a client certificate.
- raw_exec on every client; with ``ClusterOptions(docker=True)`` also the docker
  driver, every client on ONE private ``DockerEngine``, and a private ``Registry``
  (TLS + password) holding the task image as ``task_image``, not present in the
  engine, so that a docker task makes Nomad pull it with credentials.

Heartbeats (server side): ``min_heartbeat_ttl = "5s"`` and ``heartbeat_grace =
"5s"``.  A server gives each client a TTL between min_heartbeat_ttl and twice it
(Nomad adds a random stagger), and marks the node down when no heartbeat came in
TTL + grace: a dead or frozen client is "down" (its allocations lost) 10-15 s after
its last heartbeat, instead of Nomad's 10 s TTL + 10 s grace.  After a leader
election every node gets ``failover_heartbeat_ttl`` (Nomad: 5 minutes, so as not
to mark every node down while they find the new leader); here 30 s, so that a node
that dies around a failover is still noticed within a test's patience.

Use::

    cluster = ProductionCluster(ClusterOptions(docker=True)).start()
    try:
        settings = cluster.connection_settings()          # or connection_env()
        cluster.kill_client("c2"); cluster.freeze_client("c0"); cluster.leader()
    finally:
        cluster.stop()                                     # nothing is left behind

``start()`` launches all agents at once (the clients once the engine runs, so that
their first fingerprint finds docker): a server holds a client's registration for
up to 5 s while no leader is elected yet, which covers an election here.  The
registry is filled in a background thread meanwhile.  The test suite's
module-scoped fixture is ``tests/support/cluster.py``; docs/testing.md says more.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import tempfile
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.testing.agent_process import (
    NOT_YET,
    AgentOptions,
    AgentProcess,
    wait_until,
)
from metaflow_nomad.testing.cleanup import kill_processes_under
from metaflow_nomad.testing.docker_engine import DockerEngine
from metaflow_nomad.testing.local_agent import find_nomad_binary, interpreter_path
from metaflow_nomad.testing.pki import AgentPki, make_test_pki
from metaflow_nomad.testing.registry import Registry

TASK_REPOSITORY = "metaflow-nomad/task"
TASK_TAG = "py3.11"
# The image pushed to the registry (DockerEngine.ensure_image's tag).
TASK_IMAGE_SOURCE = "python:3.11"
DYNAMIC_PORTS = range(20000, 32000)


def _default_clients() -> dict[str, str]:
    return {"c0": "dc1", "c1": "dc1", "c2": "dc2"}


def _default_env() -> dict[str, str]:
    # raw_exec tasks inherit the agent's PATH: this interpreter first, as LocalAgent's.
    return {"PATH": interpreter_path()}


@dataclass
class ClusterOptions:
    servers: int = 3
    # Client node name -> its datacenter.
    clients: dict[str, str] = field(default_factory=_default_clients)
    region: str = "global"
    # The docker driver on every client, on one private engine.
    docker: bool = False
    # A shared engine to use (not stopped with the cluster); by default, with docker,
    # the cluster starts and stops its own.
    engine: DockerEngine | None = None
    # With docker: a private registry holding the task image (costs a push, ~15 s).
    registry: bool = True
    # The client agents' environment (their raw_exec tasks inherit it).
    env: dict[str, str] = field(default_factory=_default_env)
    heartbeat_grace: str = "5s"
    min_heartbeat_ttl: str = "5s"
    failover_heartbeat_ttl: str = "30s"


class ClusterMember(AgentProcess):
    """One agent of a ``ProductionCluster``: a server, or a client of one datacenter."""

    def __init__(self, cluster: ProductionCluster, options: AgentOptions, server: bool) -> None:
        super().__init__(cluster.binary, options, cluster.dir / options.name)
        self.cluster = cluster
        self.server = server
        self.label = f"nomad {'server' if server else 'client'} {options.name}"

    @property
    def name(self) -> str:
        return self.options.name

    def _tls_files(self) -> tuple[Path, Path]:
        return self.cluster.role_certs["server" if self.server else "client"]

    def _role_config(self) -> str:
        servers = self.cluster.servers.values()
        if self.server:
            o = self.cluster.options
            joins = ", ".join(f'"127.0.0.1:{s.ports["serf"]}"' for s in servers)
            return f"""server {{
  enabled                = true
  bootstrap_expect       = {o.servers}
  job_gc_threshold       = "1h"
  heartbeat_grace        = "{o.heartbeat_grace}"
  min_heartbeat_ttl      = "{o.min_heartbeat_ttl}"
  failover_heartbeat_ttl = "{o.failover_heartbeat_ttl}"
  server_join {{
    retry_join     = [{joins}]
    retry_interval = "1s"
  }}
}}"""
        rpcs = ", ".join(f'"127.0.0.1:{s.ports["rpc"]}"' for s in servers)
        low, high = self.cluster.dynamic_ports(self.name)
        return f"""client {{
  enabled          = true
  node_pool        = "{self.options.node_pool}"
  servers          = [{rpcs}]
  gc_max_allocs    = 500
  min_dynamic_port = {low}
  max_dynamic_port = {high}
}}"""

    def _ready(self) -> str | None:
        """A server knows the leader; a client's node is ready with its drivers."""
        if self.server:
            return None if self._get("/v1/status/leader") else "no leader known"
        return self.cluster.nodes_not_ready([self.name], via=self)

    def node_id(self) -> str:
        """The client's node ID (Nomad keeps it in its data dir across restarts)."""
        return (self.data_dir / "data" / "client" / "client-id").read_text().strip()


class ProductionCluster:
    """3 servers and 3 clients in 2 datacenters, ACL + mTLS, optionally docker and a
    private registry; every process ours, stopped without a trace."""

    def __init__(self, options: ClusterOptions | None = None, binary: str | None = None) -> None:
        self.options = options or ClusterOptions()
        self.binary = binary or find_nomad_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="mf-cluster-"))
        self.pki: AgentPki = make_test_pki(self.dir / "pki", self.options.region)
        region = self.options.region
        self.role_certs = {
            role: self.pki.issue(f"{role}-{region}", [f"{role}.{region}.nomad", "localhost"])
            for role in ("server", "client")
        }
        self.engine: DockerEngine | None = self.options.engine
        self._owns_engine = self.options.docker and self.options.engine is None
        self.registry: Registry | None = None
        # The registry's reference to the task image, once pushed.
        self.task_image: str | None = None
        self.management_token: str | None = None
        # Seconds from start() until: "leader", "clients" ready, "docker" (registry
        # filled): where a slow start spent its time.
        self.timings: dict[str, float] = {}
        self.servers: dict[str, ClusterMember] = {}
        self.clients: dict[str, ClusterMember] = {}
        for index in range(self.options.servers):
            self._add(f"s{index}", "dc1", server=True)
        for name, datacenter in self.options.clients.items():
            self._add(name, datacenter, server=False)

    def _add(self, name: str, datacenter: str, server: bool) -> None:
        options = AgentOptions(
            name=name,
            datacenter=datacenter,
            region=self.options.region,
            acl=True,
            tls=self.pki,
            env={} if server else dict(self.options.env),
        )
        member = ClusterMember(self, options, server)
        (self.servers if server else self.clients)[name] = member

    @property
    def members(self) -> list[ClusterMember]:
        return [*self.servers.values(), *self.clients.values()]

    def member(self, name: str) -> ClusterMember:
        return {**self.servers, **self.clients}[name]

    def dynamic_ports(self, client: str) -> tuple[int, int]:
        """The client's own slice of Nomad's dynamic port range: on one host, two
        nodes must not hand the same port to two tasks."""
        names = list(self.clients)
        size = len(DYNAMIC_PORTS) // len(names)
        low = DYNAMIC_PORTS.start + names.index(client) * size
        return low, low + size - 1

    # -- start and stop --------------------------------------------------------------

    def start(self, timeout: float = 120) -> ProductionCluster:
        """Start everything and wait until a leader is elected and every client is
        ready with its drivers (and the registry holds the task image).  On failure
        nothing is left running."""
        docker_work: concurrent.futures.Future | None = None
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        began = time.monotonic()
        try:
            for server in self.servers.values():
                server.launch()
            if self.options.docker:
                if self.engine is None:
                    self.engine = DockerEngine().start()
                for client in self.clients.values():
                    client.options.docker_plugin = self.engine.nomad_plugin_config(shared=True)
                docker_work = pool.submit(self._fill_registry, began)
            for client in self.clients.values():
                client.launch()
            wait_until(self._no_leader, list(self.servers.values()), timeout, "nomad servers")
            self.timings["leader"] = time.monotonic() - began
            wait_until(self._bootstrap_acl, list(self.servers.values()), timeout, "ACLs")
            wait_until(self._token_unknown, list(self.servers.values()), timeout, "the token")
            wait_until(self.nodes_not_ready, self.members, timeout, "nomad clients")
            self.timings["clients"] = time.monotonic() - began
            if docker_work is not None:
                docker_work.result()
        except BaseException:
            if docker_work is not None:
                concurrent.futures.wait([docker_work])
            self.stop()
            raise
        finally:
            pool.shutdown()
        return self

    def _fill_registry(self, began: float) -> None:
        """The task image in the engine, pushed to a new registry, untagged locally."""
        assert self.engine is not None
        self.engine.ensure_image()
        if self.options.registry:
            self.registry = Registry(self.pki, self.dir / "registry").start()
            reference = self.registry.reference(TASK_REPOSITORY, TASK_TAG)
            self.registry.push(self.engine, TASK_IMAGE_SOURCE, reference)
            self.task_image = reference
        self.timings["docker"] = time.monotonic() - began

    def stop(self) -> None:
        """Stop every agent, task, container, the registry and (if ours) the engine;
        remove every directory.  Safe to call twice, and after a failed start."""
        self._kill_containers(list(self.clients))
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.members)) as pool:
            # Each member's stop() waits up to 15 s for its agent: in parallel.
            list(pool.map(lambda m: m.stop(), self.members))
        if self.registry is not None:
            self.registry.stop()
        if self._owns_engine and self.engine is not None:
            self.engine.stop()
            self.engine = None
        kill_processes_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ProductionCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------

    def front(self) -> ClusterMember:
        """The server tests and launchers talk to: the first one not killed (a real
        cluster's load balancer would do the same)."""
        for server in self.servers.values():
            if server.running:
                return server
        raise RuntimeError("no nomad server of the cluster is running")

    @property
    def address(self) -> str:
        return self.front().address

    def _no_leader(self) -> str | None:
        """None once a leader is elected with every server a raft peer."""
        front = self.front()
        if not front.api("GET", "/v1/status/leader"):
            return "no leader"
        peers = front.api("GET", "/v1/status/peers")
        if len(peers) < len(self.servers):
            return f"{len(peers)} of {len(self.servers)} servers are raft peers"
        return None

    def _bootstrap_acl(self) -> None:
        """Bootstrap ACLs once (retried while the new leader settles); every member
        gets the management token, so that each can be asked directly."""
        self.management_token = self.front().bootstrap_acl()
        for member in self.members:
            member.management_token = self.management_token

    def _token_unknown(self) -> str | None:
        """A server that does not know the management token yet: the bootstrap is
        applied on the leader first, and a follower answers "ACL token not found"
        until its copy of the raft log has it."""
        for server in self.servers.values():
            try:
                server.api("GET", "/v1/acl/token/self")
            except urllib.error.HTTPError as exc:
                return f"{server.name}: HTTP {exc.code}"
        return None

    def nodes_not_ready(
        self, names: list[str] | None = None, via: AgentProcess | None = None
    ) -> str | None:
        """None once every named client (all by default) is a ready node with healthy
        raw_exec (and docker, in a docker cluster), else who is not."""
        names = list(self.clients) if names is None else names
        nodes = {n["Name"]: n for n in (via or self.front()).api("GET", "/v1/nodes")}
        drivers = ["raw_exec", "docker"] if self.options.docker else ["raw_exec"]
        missing = [
            name
            for name in names
            if name not in nodes
            or nodes[name]["Status"] != "ready"
            or not all(nodes[name]["Drivers"].get(d, {}).get("Healthy") for d in drivers)
        ]
        return f"not ready: {', '.join(missing)}" if missing else None

    def leader(self) -> str:
        """The name of the leading server, as the front server sees it."""
        address = self.front().api("GET", "/v1/status/leader")
        for name, server in self.servers.items():
            if address == f"127.0.0.1:{server.ports['rpc']}":
                return name
        raise RuntimeError(f"no leader (the front server says {address!r})")

    def wait_for_leader(self, timeout: float = 30, other_than: str | None = None) -> str:
        """Wait for a running leader (not ``other_than``) and return its name."""
        deadline = time.monotonic() + timeout
        last = "none"
        while time.monotonic() < deadline:
            try:
                name = self.leader()
                if name != other_than and self.servers[name].running:
                    return name
                last = name
            except (RuntimeError, *NOT_YET) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"no new leader after {timeout}s (last answer: {last})")

    def node_name_of_alloc(self, alloc_id: str) -> str:
        return self.api("GET", f"/v1/allocation/{alloc_id}")["NodeName"]

    # -- faults ----------------------------------------------------------------------

    def kill_server(self, name: str) -> None:
        """SIGKILL a server, as a crash would (``restart_member`` brings it back)."""
        self.servers[name].kill()

    def kill_client(self, name: str) -> None:
        """The client's machine dies: SIGKILL its agent and every task it started
        (raw_exec tasks outlive their agent on one machine, containers live in the
        shared engine)."""
        client = self.clients[name]
        client.kill()
        kill_processes_under(client.data_dir)
        self._kill_containers([name])

    def freeze_client(self, name: str) -> None:
        """SIGSTOP the client agent only: it stops heartbeating, its tasks carry on."""
        self.clients[name].pause()

    def thaw_client(self, name: str) -> None:
        self.clients[name].resume()

    def restart_member(self, name: str, timeout: float = 60) -> None:
        """Start a killed (or stopped) member again on its ports and data dir, and wait
        until it knows the leader (a server) or its node is ready (a client)."""
        self.member(name).start(timeout)

    def _kill_containers(self, clients: list[str]) -> None:
        """Kill the containers of these clients' tasks (each labelled with its node ID)."""
        if self.engine is None or self.engine.process is None:
            return
        for name in clients:
            try:
                node_id = self.clients[name].node_id()
            except OSError:
                continue  # never registered: no containers
            found = self.engine.docker(
                "ps", "-q", "--filter", f"label=com.hashicorp.nomad.node_id={node_id}"
            )
            if found.stdout.split():
                self.engine.docker("kill", *found.stdout.split(), check=False)

    # -- the API, as the launcher reaches it -------------------------------------------

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        """One call through the front server (management token by default)."""
        return self.front().api(method, path, body, token)

    def api_text(self, path: str, token: str | None = None) -> str:
        return self.front().api_text(path, token)

    def connection_config(self, token: str | None = None) -> dict[str, str]:
        """What reaches the cluster through its front server (see LocalAgent's)."""
        return self.front().connection_config(token)

    def connection_env(self, token: str | None = None) -> dict[str, str]:
        return self.front().connection_env(token)

    def connection_settings(self, token: str | None = None) -> ConnectionSettings:
        return self.front().connection_settings(token)

    def create_namespace_token(
        self, namespace: str, policy: str = "write", name: str | None = None
    ) -> str:
        """Create ``namespace`` and a client token whose only right is ``policy`` in it."""
        return self.front().create_namespace_token(namespace, policy, name)
