"""Faults of the cluster around a run, on the production-shaped cluster (3 servers
with elections, 3 raw_exec clients in 2 datacenters, ACL and mTLS): the leader
server SIGKILLed while a step's tasks run, of a run and of a deployed run; a server
restarted a moment ago; Metaflow's metadata service restarted while tasks run.

What must hold each time: the run succeeds; every task is there once, as its
first attempt, with the right artifacts (the Metaflow client; the metadata
service, which every run here that is not deployed uses); every Nomad task is one
job with one allocation, the one the task says it ran in (the Nomad API); and
afterwards no job or allocation of the run is still running and no process of it
is left.

Each fault's cost is its run's time against the same run without a fault, counted
from the moment both work tasks run (the fault comes after it), so that what
comes before (a node's first task environment, the load of the machine while the
flow starts) does not blur it.  The module prints the figures at its end.

The launcher talks to a follower: a real cluster's address (a load balancer,
DNS) leads to the servers that are up, and the one server the launcher talks to
going away is another fault (``NomadClient`` rides out a 20 s outage of it).  A
deployed run's runner talks to its own client agent (the task API socket).
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.lookup import find_jobs
from metaflow_nomad.model import META_ATTEMPT, META_STEP_NAME, META_TASK_ID, TASK_NAME
from metaflow_nomad.testing.cluster import ClusterMember, ProductionCluster
from tests.support.cluster import RAW_EXEC, started_cluster
from tests.support.deploy import (
    Cluster,
    allocations,
    deploy_cli,
    runner_job_of,
    triggered_run_id,
    wait_step_running,
)
from tests.support.flows import FlowRun, flow_env, read_run, start_flow, wait_for
from tests.support.metadata_service import (
    MetadataService,
    Seen,
    ServiceGate,
    put_headers_variable,
    service_env,
    start_metadata_service,
)

pytestmark = pytest.mark.integration

FLOW = "ClusterFaultFlow"
FILE = "cluster_fault_flow.py"
DEPLOYMENT = "clusterfaultflow"
SECONDS = 6
# How long the metadata service stays down (its start adds 1-3 s).  Metaflow's
# service client gives a request up after 5 tries, 1+2+4+8 = 15 s after its first,
# and retries no HTTP status but 503: a longer outage, or a gateway in front of
# the service answering 502/504 meanwhile, fails the task whose request it meets.
SERVICE_DOWN_S = 8
ACTIVE = ("pending", "running")
STEPS = {"start": 1, "work": 2, "join": 1, "end": 1}
HCL = 'job "probe" {\n  group "g" {\n    task "t" {\n      driver = "raw_exec"\n    }\n  }\n}\n'


@dataclass
class Figure:
    outcome: str
    seconds: float  # the whole run
    after_start: float  # from both work tasks running to the run's end
    baseline: Finished | None


# fault -> its figure, printed at the module's end.
FIGURES: dict[str, Figure] = {}


# -- the cluster, the service and the deployment ------------------------------------


@pytest.fixture(scope="module")
def cluster():
    cluster = started_cluster(RAW_EXEC)
    try:
        yield cluster
    finally:
        print_figures()
        cluster.stop()


def print_figures() -> None:
    """The table: each run's time in all and from both work tasks running, and what
    the fault added to each against its baseline."""
    if not FIGURES:
        return
    print(
        "\nfault                                 | outcome   |    run | extra  "
        "| after start | extra"
    )
    for fault, f in FIGURES.items():
        extra = extra_start = "     -"
        if f.baseline is not None:
            extra = f"{f.seconds - f.baseline.seconds:+5.1f}s"
            extra_start = f"{f.after_start - f.baseline.after_start:+5.1f}s"
        print(
            f"{fault:<37} | {f.outcome:<9} | {f.seconds:5.1f}s | {extra} "
            f"| {f.after_start:10.1f}s | {extra_start}"
        )


@dataclass
class Gate(ServiceGate):
    """A ``ServiceGate`` that also records the requests it could not forward because
    the service was down; their client sees the connection closed, as it sees a
    refused one when it reaches the service directly."""

    unanswered: list[Seen] = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        # A refused forward ends the request; no traceback for each one.
        self._server.handle_error = lambda request, address: None

    def forward(self, method: str, path: str, body: bytes | None, headers) -> tuple:
        try:
            return super().forward(method, path, body, headers)
        except OSError:
            self.unanswered.append(Seen(method, path, True))
            raise


@dataclass
class Service:
    """metaflow-local-service behind a public and an internal gate that want one key."""

    root: Path
    process: MetadataService
    public: Gate
    internal: Gate

    @property
    def gates(self) -> tuple[Gate, Gate]:
        return self.public, self.internal

    def restart(self, down_s: float) -> float:
        """Stop the service by its pid, start it again ``down_s`` later on the same
        port and root; return the seconds it answered nothing."""
        stopped = time.monotonic()
        self.process.stop()
        time.sleep(down_s)  # the fault itself: the service stays down this long
        port = urllib.parse.urlsplit(self.process.url).port
        self.process = start_metadata_service(self.root, port=port)
        return time.monotonic() - stopped

    def stop(self) -> None:
        self.public.stop()
        self.internal.stop()
        self.process.stop()


@pytest.fixture(scope="module")
def service(cluster, tmp_path_factory):
    import secrets

    root = tmp_path_factory.mktemp("cluster-fault-service")
    key = "mf-key-" + secrets.token_urlsafe(24)
    process = start_metadata_service(root)
    service = Service(root, process, Gate(process.url, key), Gate(process.url, key))
    try:
        # The tasks' headers, as an operator stores them (docs/metadata-service.md).
        put_headers_variable(cluster.front(), key)
        yield service
    finally:
        service.stop()


def deploy_via(member: ClusterMember) -> Cluster:
    """tests/support/deploy.py's user, with the management token, through ``member``."""
    return Cluster("production", member)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def deployment(cluster, tmp_path_factory):
    """The flow deployed (its runner's policy bound by the admin), deleted at the end."""
    workdir = tmp_path_factory.mktemp("cluster-fault-deploy")
    user = deploy_via(follower(cluster))
    create = deploy_cli(user, workdir, FILE, "create")
    assert create.returncode == 0, create.output
    user.bind_runner_policy(workdir, FILE, DEPLOYMENT)
    yield workdir
    deploy_cli(deploy_via(cluster.front()), workdir, FILE, "delete")


# -- servers ---------------------------------------------------------------------------


def follower(cluster: ProductionCluster) -> ClusterMember:
    """A running server that is not the leader."""
    leader = cluster.wait_for_leader()
    return next(s for n, s in cluster.servers.items() if n != leader and s.running)


def healthy_voters(cluster: ProductionCluster) -> bool:
    """Every server a healthy raft voter (autopilot's view), with a leader."""
    try:
        health = cluster.api("GET", "/v1/operator/autopilot/health")
    except OSError:
        return False
    servers = health.get("Servers") or []
    return (
        bool(health.get("Healthy"))
        and len(servers) == len(cluster.servers)
        and all(s.get("Healthy") and s.get("Voter") for s in servers)
    )


def wait_full_cluster(cluster: ProductionCluster) -> None:
    """Before a server is killed: all of them up and voting, so that two stay a quorum."""
    wait_for(lambda: healthy_voters(cluster), 60, "every server a healthy raft voter")


def refuses_token(member: ClusterMember) -> str | None:
    """What the server answers a request it authorizes itself (no forwarding to the
    leader: a parse) with the management token, if it refuses it; else None."""
    try:
        member.api("POST", "/v1/jobs/parse", {"JobHCL": HCL})
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read().decode(errors='replace').strip()}"
    return None


def restart_server(cluster: ProductionCluster, name: str) -> None:
    """Start a killed server again, and wait until it serves: it knows the leader
    (``restart_member``) and has applied the raft log, so that it knows the tokens."""
    cluster.restart_member(name)
    member = cluster.servers[name]
    wait_for(lambda: refuses_token(member) is None, 30, f"{name} to know the token")


def kill_leader(cluster: ProductionCluster) -> tuple[str, float]:
    """SIGKILL the leader; return its name and the seconds until another one leads."""
    leader = cluster.leader()
    killed = time.monotonic()
    cluster.kill_server(leader)
    new = cluster.wait_for_leader(timeout=60, other_than=leader)
    elected = time.monotonic() - killed
    print(f"killed leader {leader}; {new} leads {elected:.1f}s later")
    return leader, elected


# -- runs ------------------------------------------------------------------------------


@dataclass
class Finished:
    run_id: str
    seconds: float
    after_start: float
    workdir: Path
    output: str


def start_run(cluster, member: ClusterMember, service: Service, workdir: Path):
    """ClusterFaultFlow through ``member``, on the service; its Metaflow client reads
    the service itself (past the gates)."""
    settings = {**member.connection_env(cluster.management_token)}
    settings.update(service_env(service.public, service.internal))
    began = time.monotonic()
    run = start_flow(FILE, workdir, flow_env(None, workdir, settings), "--seconds", str(SECONDS))
    run.env = {
        "METAFLOW_DEFAULT_METADATA": "service",
        "METAFLOW_SERVICE_URL": service.process.url,
        "METAFLOW_HOME": str(workdir / "mfhome"),
        "USER": "tester",
    }
    return run, run.wait_run_id(), began


def finish(run: FlowRun, run_id: str, began: float) -> Finished:
    code = run.wait(timeout=240)
    seconds = time.monotonic() - began
    assert code == 0, run.output
    output = run.output
    return Finished(run_id, seconds, after_both_started(output), run.workdir, output)


_STAMPED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) (.*)$")


def after_both_started(output: str) -> float:
    """Seconds from the later "work N started" line to "Done!", by the run's own
    timestamps."""
    starts, done = [], None
    for line in output.splitlines():
        match = _STAMPED.match(line)
        if not match:
            continue
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if re.search(r"\] work \d started$", match.group(2)):
            starts.append(at)
        elif match.group(2) == "Done!":
            done = at
    assert len(starts) == 2 and done is not None, output
    return done - max(starts)


def wait_both_working(run: FlowRun) -> None:
    """Both work tasks are in their step's code (their first lines reached the launcher)."""
    wait_for(
        lambda: (
            all(f"work {i} started" in run.output for i in (1, 2)) or run.proc.poll() is not None
        ),
        90,
        "both work tasks to start",
    )
    assert run.proc.poll() is None, run.output


# -- what must hold after every run -----------------------------------------------------


def check_tasks(summary: dict) -> dict[tuple[str, str], dict]:
    """Every task there, once, finished as its first attempt, with the right
    artifacts; by (step, task id)."""
    assert summary["successful"] is True
    steps = summary["steps"]
    assert {step: len(tasks) for step, tasks in steps.items()} == STEPS
    tasks = {}
    for step, step_tasks in steps.items():
        for task in step_tasks:
            assert task["successful"] is True, task["pathspec"]
            assert task["metadata"].get("attempt") == "0", (task["pathspec"], task["metadata"])
            tasks[(step, task["pathspec"].split("/")[-1])] = task
    assert sorted(t["data"]["square"] for t in steps["work"]) == [1, 4]
    assert steps["join"][0]["data"]["squares"] == [1, 4]
    assert steps["end"][0]["data"]["total"] == 5
    return tasks


def check_jobs(
    client: NomadClient, run_id: str, tasks: dict[tuple[str, str], dict], nomad_steps: set[str]
) -> tuple[list[dict], dict[tuple[str, str], dict]]:
    """One job per Nomad task, of its first attempt, with one allocation that completed:
    the one the task recorded.  The jobs, and the allocations by task."""
    jobs = find_jobs(client, FLOW, run_id, include_dead=True)
    by_task: dict[tuple[str, str], dict] = {}
    for job in jobs:
        meta = job["Meta"]
        key = (meta[META_STEP_NAME], meta[META_TASK_ID])
        assert key not in by_task, f"two jobs for task {key}: {by_task[key]['ID']}, {job['ID']}"
        assert meta[META_ATTEMPT] == "0", job["ID"]
        by_task[key] = job
    assert set(by_task) == {key for key in tasks if key[0] in nomad_steps}
    allocs = {}
    for key, job in by_task.items():
        job_allocs = ended_allocations(client, job)
        assert [a["ClientStatus"] for a in job_allocs] == ["complete"], (key, job_allocs)
        allocs[key] = job_allocs[0]
        task = tasks[key]
        assert task["metadata"].get("nomad-alloc-id") == allocs[key]["ID"], key
        if key[0] == "work":
            assert task["data"]["alloc_id"] == allocs[key]["ID"], key
    return jobs, allocs


def ended_allocations(client: NomadClient, job: dict, timeout: float = 60) -> list[dict]:
    """The job's allocations once none is pending or running any more.

    A launcher takes its task's end from the exit status the task records, at once;
    Nomad's client reports it to the servers in batches, retried while they elect a
    leader, so Nomad's account can come some seconds after the run ended."""
    began = time.monotonic()

    def ended():
        allocs, _ = client.job_allocations(job["ID"], namespace=job.get("Namespace"))
        return allocs if not [a for a in allocs if a["ClientStatus"] in ACTIVE] else None

    allocs = wait_for(ended, timeout, f"the allocations of {job['ID']} to end", interval=0.5)
    for alloc in allocs:
        # When the servers recorded the end (ModifyTime) against when the task ended.
        full = client.allocation(alloc["ID"])
        heard = full["ModifyTime"] / 1e9 - nomad_time(full["TaskStates"][TASK_NAME]["FinishedAt"])
        if heard > 1 or time.monotonic() - began > 1:
            print(f"the servers heard of the end of {job['ID']} {heard:.1f}s after it")
    return allocs


def alloc_dirs(cluster: ProductionCluster, client: NomadClient, jobs: list[dict]) -> list[Path]:
    dirs = []
    for job in jobs:
        allocs, _ = client.job_allocations(job["ID"], namespace=job.get("Namespace"))
        for alloc in allocs:
            node = cluster.clients[alloc["NodeName"]]
            dirs.append(node.data_dir / "data" / "alloc" / alloc["ID"])
    return dirs


def processes_in(places: list[Path]) -> list[str]:
    """Processes working in, or naming, one of ``places`` (but this one)."""
    roots = [str(p.resolve()) for p in places]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(cwd == r or cwd.startswith(r + "/") or r in command for r in roots):
            found.append(f"{entry.name} in {cwd}: {command[:200]}")
    return found


def wait_nothing_left(
    cluster: ProductionCluster, client: NomadClient, jobs: list[dict], places: list[Path]
) -> None:
    """No job of the run still running, no allocation pending or running, no process
    in the run's directory or in one of its allocations'."""

    def running() -> list[str]:
        left = []
        for job in jobs:
            namespace = job.get("Namespace")
            current = client.job(job["ID"], namespace=namespace)
            if current is not None and current["Status"] != "dead":
                left.append(f"job {job['ID']} {current['Status']}")
            allocs, _ = client.job_allocations(job["ID"], namespace=namespace)
            left += [
                f"alloc {a['ID']} {a['ClientStatus']}"
                for a in allocs
                if a["ClientStatus"] in ACTIVE
            ]
        return left

    wait_empty(running, 30, "the run's jobs and allocations to end")
    places = places + alloc_dirs(cluster, client, jobs)
    wait_empty(lambda: processes_in(places), 30, "the run's processes to end")


def wait_empty(listing, timeout: float, what: str) -> None:
    """Poll ``listing`` until it returns nothing; fail with what it last returned."""
    deadline = time.monotonic() + timeout
    left = listing()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = listing()
    assert not left, f"timed out after {timeout}s waiting for {what}: {left}"


def check_local_run(cluster, member: ClusterMember, run: FlowRun, finished: Finished) -> None:
    client = NomadClient(member.connection_settings(cluster.management_token))
    tasks = check_tasks(read_run(run, f"{FLOW}/{finished.run_id}"))
    jobs, _ = check_jobs(client, finished.run_id, tasks, {"work"})
    for i in (1, 2):
        assert finished.output.count(f"work {i} started") == 1, finished.output
    wait_nothing_left(cluster, client, jobs, [finished.workdir])


# -- the baseline ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline(cluster, service, tmp_path_factory) -> Finished:
    """The run without a fault: what each fault's extra time is counted against."""
    workdir = tmp_path_factory.mktemp("baseline")
    member = follower(cluster)
    run, run_id, began = start_run(cluster, member, service, workdir)
    finished = finish(run, run_id, began)
    check_local_run(cluster, member, run, finished)
    FIGURES["none (baseline run)"] = Figure(
        "succeeded", finished.seconds, finished.after_start, None
    )
    return finished


def test_a_run_without_faults_succeeds_with_each_task_once(baseline):
    assert baseline.after_start >= SECONDS


# -- servers killed --------------------------------------------------------------------


def test_a_run_whose_leader_is_killed_mid_task_finishes_with_each_task_once(
    cluster, service, baseline, tmp_path
):
    wait_full_cluster(cluster)
    member = follower(cluster)
    run, run_id, began = start_run(cluster, member, service, tmp_path)
    killed = None
    try:
        wait_both_working(run)
        assert cluster.leader() != member.name
        killed, elected = kill_leader(cluster)
        finished = finish(run, run_id, began)
    finally:
        run.kill()
        if killed:
            restart_server(cluster, killed)
    name = "leader SIGKILLed mid-task (run)"
    FIGURES[name] = Figure("succeeded", finished.seconds, finished.after_start, baseline)
    print(f"run {run_id} through {member.name}, election {elected:.1f}s: {finished.seconds:.1f}s")
    check_local_run(cluster, member, run, finished)


def test_a_server_restarted_a_moment_ago_delays_a_launch_through_it_but_fails_none(cluster):
    """A server that has just (re)started knows the leader, so a load balancer's
    health check passes, a moment before it has applied the raft log: until then it
    refuses every token with 403 "ACL token not found".  The client waits it out.

    The window lasts a few seconds at most; on a busy machine the restart may only be
    noticed after it closed, so the fault is made again (at most 3 times) until the
    test catches the server inside it."""
    wait_full_cluster(cluster)
    for attempt in range(1, 4):
        name, member, refused, client, parsed = _launch_through_a_restarted_leader(cluster)
        print(f"attempt {attempt}: restarted {name} first answered {refused!r}")
        if refused is not None:
            break
    # What Nomad 1.6 does (the premise): the restarted server refused the token at first.
    assert refused == "HTTP 403: ACL token not found"
    assert parsed["ID"] == "probe"
    assert client.request_count > 1  # it was refused, and asked again
    wait_for(lambda: refuses_token(member) is None, 30, f"{name} to know the token")


def _launch_through_a_restarted_leader(cluster):
    """Kill the leader (its window is the longest: ~4 s, a follower's ~0.5 s), let the
    cluster move on, restart it and parse through it at once."""
    name, _ = kill_leader(cluster)
    try:
        body = {"Path": "cluster-faults/moved-on", "Items": {"while": "down"}}
        cluster.api("PUT", "/v1/var/cluster-faults/moved-on", body)
        cluster.restart_member(name)  # back as soon as it knows the leader
        member = cluster.servers[name]
        client = NomadClient(member.connection_settings(cluster.management_token))
        refused = refuses_token(member)
        began = time.monotonic()
        parsed = client.parse(HCL)
        print(f"the client's parse through {name} took {time.monotonic() - began:.1f}s")
    finally:
        if not cluster.servers[name].running:
            restart_server(cluster, name)
    wait_full_cluster(cluster)
    return name, member, refused, client, parsed


# -- the metadata service restarted ----------------------------------------------------


def test_a_run_whose_metadata_service_restarts_mid_task_finishes_and_is_all_in_it(
    cluster, service, baseline, tmp_path
):
    member = follower(cluster)
    run, run_id, began = start_run(cluster, member, service, tmp_path)
    try:
        wait_both_working(run)
        down = service.restart(SERVICE_DOWN_S)
        finished = finish(run, run_id, began)
    finally:
        run.kill()
    name = f"metadata service down {down:.0f}s mid-task"
    FIGURES[name] = Figure("succeeded", finished.seconds, finished.after_start, baseline)
    print(f"run {run_id} with the service down {down:.1f}s: {finished.seconds:.1f}s")
    # The outage met the run: some of its requests found the service down, were retried.
    prefix = f"/flows/{FLOW}/runs/{run_id}/"
    unanswered = [s for g in service.gates for s in g.unanswered if s.path.startswith(prefix)]
    paths = sorted({s.path.removeprefix(prefix) for s in unanswered})
    print(f"{len(unanswered)} requests of the run met the outage: {paths}")
    assert [p for p in paths if not p.endswith("/heartbeat")], "no request but heartbeats met it"
    # Every request carried the key; the run and its tasks are in the restarted service.
    assert [s for g in service.gates for s in g.seen if not s.authorized] == []
    assert (service.root / ".metaflow" / FLOW / run_id / "_meta").is_dir()
    check_local_run(cluster, member, run, finished)


# -- a deployed run --------------------------------------------------------------------


def trigger_and_finish(user: Cluster, workdir: Path, during=None) -> tuple[Finished, dict]:
    """Trigger the deployment, call ``during(run_id)`` while a work task runs, wait for
    the run's end; its time runs from the trigger to the runner's end.  Also returns
    the runner job."""
    began = time.time()
    run_id = triggered_run_id(deploy_cli(user, workdir, FILE, "trigger", "--seconds", str(SECONDS)))
    if during is not None:
        wait_step_running(user, FLOW, run_id, "work")
        during(run_id)

    def runner_ended():
        stub = runner_job_of(user, DEPLOYMENT, run_id)
        return stub if stub["Status"] == "dead" else None

    runner = wait_for(runner_ended, 240, f"deployed run {run_id} to end", interval=0.5)
    (alloc,) = allocations(user, runner["ID"])  # one runner: never replaced, never resumed
    assert alloc["ClientStatus"] == "complete", alloc
    ended = nomad_time(alloc["TaskStates"]["runner"]["FinishedAt"])
    status = deploy_cli(user, workdir, FILE, "status", run_id)
    assert status.stdout.strip().splitlines()[-1] == "Succeeded", status.output
    return Finished(run_id, ended - began, 0.0, workdir, status.output), runner


def nomad_time(stamp: str) -> float:
    """Nomad's RFC 3339 time with nanoseconds, as a Unix time."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    at = datetime.fromisoformat(whole).replace(tzinfo=timezone.utc).timestamp()
    return at + float(f"0.{fraction or 0}")


def check_deployed_run(cluster, user: Cluster, finished: Finished, runner: dict) -> Finished:
    """The checks of every run, every step being a Nomad task here; returns the run
    with its time from both work tasks running (Nomad's StartedAt) to the runner's end."""
    client = user.admin()
    reader = SimpleNamespace(workdir=finished.workdir, env=user.env(finished.workdir))
    tasks = check_tasks(read_run(reader, f"{FLOW}/{finished.run_id}"))  # type: ignore[arg-type]
    jobs, allocs = check_jobs(client, finished.run_id, tasks, set(STEPS))
    wait_nothing_left(cluster, client, [*jobs, runner], [finished.workdir])
    (runner_alloc,) = allocations(user, runner["ID"])
    ended = nomad_time(runner_alloc["TaskStates"]["runner"]["FinishedAt"])
    started = max(
        nomad_time(a["TaskStates"][TASK_NAME]["StartedAt"])
        for (step, _), a in allocs.items()
        if step == "work"
    )
    finished.after_start = ended - started
    return finished


@pytest.fixture(scope="module")
def deployed_baseline(cluster, deployment) -> Finished:
    user = deploy_via(follower(cluster))
    finished, runner = trigger_and_finish(user, deployment)
    check_deployed_run(cluster, user, finished, runner)
    name = "none (baseline deployed run)"
    FIGURES[name] = Figure("succeeded", finished.seconds, finished.after_start, None)
    return finished


def test_a_deployed_run_without_faults_succeeds_with_each_task_once(deployed_baseline):
    assert deployed_baseline.after_start >= SECONDS


def test_a_deployed_run_whose_leader_is_killed_mid_task_finishes_with_each_task_once(
    cluster, deployment, deployed_baseline
):
    wait_full_cluster(cluster)
    member = follower(cluster)
    user = deploy_via(member)
    killed: list[str] = []

    def kill(run_id: str) -> None:
        assert cluster.leader() != member.name
        killed.append(kill_leader(cluster)[0])

    try:
        finished, runner = trigger_and_finish(user, deployment, during=kill)
    finally:
        for name in killed:
            restart_server(cluster, name)
    check_deployed_run(cluster, user, finished, runner)
    name = "leader SIGKILLed mid-task (deployed)"
    FIGURES[name] = Figure("succeeded", finished.seconds, finished.after_start, deployed_baseline)
    print(f"deployed run {finished.run_id} with its leader killed: {finished.seconds:.1f}s")
