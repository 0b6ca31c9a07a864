"""Where a step's jobs can go: the region, node pool, nodes, drivers and devices
the step asks for, checked against what the cluster has (for ``doctor``).

Listing nodes needs ``node:read``, which a namespace-scoped token often lacks;
then only the scheduler's plan (``runtime.probe.check_plan``) can judge placement.
"""

from __future__ import annotations

import fnmatch

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.doctor import FAIL, INFO, OK, WARN, Check
from metaflow_nomad.config import STEP_SPECS
from metaflow_nomad.errors import NomadForbidden

SHOWN_DRIVERS = ("docker", "exec", "raw_exec")
# What a node's docker driver reports when its plugin config allows bind mounts.
DOCKER_VOLUMES_ATTRIBUTE = "driver.docker.volumes.enabled"


def _where_set(key: str) -> str:
    return f"{STEP_SPECS[key].describe()} or @nomad({key}=...)"


def check_region(client: NomadClient, region: str | None) -> Check:
    known = client.regions()
    if region is None:
        return Check(OK, "region", f"not set: the agent's own (known: {', '.join(known)})")
    if region in known:
        return Check(OK, "region", f"'{region}' exists")
    return Check(
        FAIL,
        "region",
        f"'{region}' is not known to this cluster (known: {', '.join(known)}): set "
        f"{_where_set('region')} to one of them.",
    )


def check_node_pool(client: NomadClient, node_pool: str | None) -> Check:
    if node_pool is None:
        return Check(OK, "node pool", "not set: Nomad's default")
    try:
        found = client.node_pool(node_pool)
    except NomadForbidden:
        return Check(WARN, "node pool", f"'{node_pool}' cannot be read with this token")
    if found is None:
        return Check(
            FAIL,
            "node pool",
            f"'{node_pool}' does not exist: create it (`nomad node pool apply`) or set "
            f"another with {_where_set('node_pool')}.",
        )
    return Check(OK, "node pool", f"'{node_pool}' exists")


def read_nodes(client: NomadClient) -> tuple[list[dict] | None, Check | None]:
    """All client nodes, or None and a warning when the token may not list them."""
    try:
        return client.nodes(), None
    except NomadForbidden:
        return None, Check(
            WARN,
            "nodes",
            'this token may not list nodes (that needs a `node { policy = "read" }` rule), '
            "so datacenters, drivers and devices are judged by the scheduler's plan only",
        )


def in_placement(node: dict, datacenters, node_pool: str | None) -> bool:
    pool = node_pool or "default"
    in_pool = pool == "all" or node.get("NodePool", "default") == pool
    return in_pool and any(fnmatch.fnmatchcase(node.get("Datacenter", ""), p) for p in datacenters)


def usable(node: dict) -> bool:
    return (
        node.get("Status") == "ready"
        and node.get("SchedulingEligibility") == "eligible"
        and not node.get("Drain")
    )


def check_nodes(nodes: list[dict], datacenters, node_pool: str | None) -> tuple[Check, list[dict]]:
    """Whether any ready, eligible node is where the step asks; and those nodes."""
    asked = f"datacenters {list(datacenters)}, node pool '{node_pool or 'default'}'"
    there = [n for n in nodes if in_placement(n, datacenters, node_pool)]
    eligible = [n for n in there if usable(n)]
    if eligible:
        names = ", ".join(sorted(n.get("Name", "?") for n in eligible))
        return Check(
            OK, "nodes", f"{len(eligible)} ready and eligible in {asked}: {names}"
        ), eligible
    if there:
        states = ", ".join(
            f"{n.get('Name')} {n.get('Status')}/{n.get('SchedulingEligibility')}" for n in there
        )
        return Check(
            FAIL, "nodes", f"no ready, eligible node in {asked} ({states}): bring one up."
        ), []
    known = sorted({n.get("Datacenter", "?") for n in nodes}) or ["none"]
    return Check(
        FAIL,
        "nodes",
        f"no client node in {asked} (the cluster's nodes are in datacenters: "
        f"{', '.join(known)}): set them with {_where_set('datacenters')}, or choose "
        "another node pool.",
    ), []


def node_lines(eligible: list[dict]) -> list[Check]:
    """One info line per node: where it is and its drivers' health."""
    lines = []
    for node in sorted(eligible, key=lambda n: n.get("Name", "")):
        drivers = node.get("Drivers") or {}
        states = []
        for name in SHOWN_DRIVERS:
            info = drivers.get(name) or {}
            if info.get("Healthy"):
                states.append(f"{name} healthy")
            elif info.get("Detected"):
                states.append(f"{name} unhealthy ({info.get('HealthDescription') or '-'})")
            else:
                reason = info.get("HealthDescription")
                states.append(f"{name} not detected" + (f" ({reason})" if reason else ""))
        where = f"{node.get('Datacenter')}, pool {node.get('NodePool', 'default')}"
        lines.append(Check(INFO, f"node {node.get('Name')}", f"{where}: {', '.join(states)}"))
    return lines


def check_driver(eligible: list[dict], driver: str) -> Check:
    healthy = [n for n in eligible if ((n.get("Drivers") or {}).get(driver) or {}).get("Healthy")]
    if healthy:
        return Check(
            OK, f"driver {driver}", f"healthy on {len(healthy)} of {len(eligible)} node(s)"
        )
    others = sorted(
        {
            name
            for n in eligible
            for name, info in (n.get("Drivers") or {}).items()
            if name in SHOWN_DRIVERS and (info or {}).get("Healthy")
        }
    )
    have = (
        f"they have: {', '.join(others)}" if others else "they have none of docker, exec, raw_exec"
    )
    return Check(
        FAIL,
        f"driver {driver}",
        f"no eligible node has a healthy {driver} driver ({have}): enable {driver} on the "
        f"client nodes, or choose another driver with {_where_set('driver')}.",
    )


def requested_devices(job: dict) -> list[tuple[str, int]]:
    """(name, count) of every device a job's tasks ask for, as its template wrote them
    (``nvidia/gpu`` from the GPU variant, or whatever a project template requests)."""
    return [
        (device.get("Name", ""), int(device.get("Count") or 1))
        for group in job.get("TaskGroups") or []
        for task in group.get("Tasks") or []
        for device in (task.get("Resources") or {}).get("Devices") or []
    ]


def requested_bind_mounts(job: dict) -> list[str]:
    """The node paths a job's docker tasks bind-mount: the step's ``volumes``, the
    package cache, a local datastore on a shared filesystem."""
    return [
        mount.split(":")[0]
        for group in job.get("TaskGroups") or []
        for task in group.get("Tasks") or []
        if task.get("Driver") == "docker"
        for mount in (task.get("Config") or {}).get("volumes") or []
    ]


def _docker_nodes(eligible: list[dict]) -> tuple[list[dict], list[dict]]:
    """The nodes with a healthy docker driver, and those of them that allow volumes."""
    docker = [n for n in eligible if ((n.get("Drivers") or {}).get("docker") or {}).get("Healthy")]
    allowing = [
        n
        for n in docker
        if (n["Drivers"]["docker"].get("Attributes") or {}).get(DOCKER_VOLUMES_ATTRIBUTE) == "true"
    ]
    return docker, allowing


def check_docker_volumes(eligible: list[dict], mounts: list[str]) -> Check | None:
    """Whether the nodes' docker plugin lets the step bind-mount node paths.

    The scheduler places a docker task whatever its mounts; the driver refuses it
    on the node unless its plugin config has ``volumes { enabled = true }``, which
    the node reports as an attribute.  None when nothing is mounted or no node runs
    docker (the driver's own line says so).
    """
    docker, allowing = _docker_nodes(eligible)
    if not mounts or not docker:
        return None
    paths = ", ".join(mounts)
    if not allowing:
        return Check(
            FAIL,
            "docker volumes",
            f"the step bind-mounts {paths}, and no eligible node's docker plugin allows "
            'it: set `volumes { enabled = true }` in the `plugin "docker"` config '
            "of the client nodes, or drop the mounts (the step's `volumes`, "
            f"{_where_set('package_cache')}, a local datastore).",
        )
    if len(allowing) < len(docker):
        refusing = sorted(n.get("Name", "?") for n in docker if n not in allowing)
        return Check(
            WARN,
            "docker volumes",
            f"the step bind-mounts {paths}, which {', '.join(refusing)} refuse(s) "
            f"({len(allowing)} of {len(docker)} docker node(s) allow it): a task "
            "placed there fails. Enable volumes in their docker plugin config, or keep "
            "the step off them with a constraint in a template override.",
        )
    return Check(
        OK, "docker volumes", f"the step bind-mounts {paths}; allowed on {len(allowing)} node(s)"
    )


def package_cache_hint(eligible: list[dict], package_cache: str | None) -> Check | None:
    """What a docker step without ``package_cache`` pays, where the nodes would allow it."""
    _, allowing = _docker_nodes(eligible)
    if package_cache or not allowing:
        return None
    return Check(
        INFO,
        "package cache",
        "not set: every docker task unpacks and byte-compiles the code package "
        "itself (about 1 s of a no-op task); these nodes allow volumes, so set "
        f"{_where_set('package_cache')} to a node directory, e.g. "
        "/var/cache/metaflow-nomad.",
    )


def _matches(request: str, group: dict) -> bool:
    """Nomad's device names: ``type``, ``vendor/type`` or ``vendor/type/name``."""
    parts = request.split("/")
    have = [group.get("Vendor"), group.get("Type"), group.get("Name")]
    if len(parts) == 1:
        return parts[0] == have[1]
    return parts == have[: len(parts)]


def check_devices(eligible: list[dict], request: str, count: int) -> Check:
    """Whether one node has ``count`` healthy instances of the device ``request``."""
    best, seen = 0, set()
    for node in eligible:
        groups = ((node.get("NodeResources") or {}).get("Devices")) or []
        seen.update(f"{g.get('Vendor')}/{g.get('Type')}/{g.get('Name')}" for g in groups)
        healthy = sum(
            1
            for group in groups
            if _matches(request, group)
            for instance in group.get("Instances") or []
            if instance.get("Healthy")
        )
        best = max(best, healthy)
    name = f"device {request} x {count}"
    if best >= count:
        return Check(OK, name, f"a node has {best} healthy")
    found = ", ".join(sorted(seen)) or "no devices"
    return Check(
        FAIL,
        name,
        f"no eligible node has {count} healthy {request} instance(s) (found: {found}): "
        "lower `gpu`, set `gpu_vendor`, or add nodes with the device and its plugin.",
    )
