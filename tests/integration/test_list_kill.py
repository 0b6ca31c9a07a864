"""Issue 4 item 6: ``nomad list`` and ``nomad kill`` with every option of the user guide.

Two real runs of sleep_flow.py (one by "tester", then the latest one by "alice")
are running on the agent, next to jobs registered directly through the API: jobs
that carry the launcher's Meta, and foreign jobs whose IDs share a run's prefix
but whose Meta says they are not ours.
"""

import os
import re
import signal
import subprocess
import sys

import pytest

from metaflow_nomad.api.lookup import find_jobs
from metaflow_nomad.model import run_job_prefix
from tests.support.flows import flow_env, start_flow
from tests.support.nomad_checks import wait_task_running

pytestmark = pytest.mark.integration

FLOW = "SleepFlow"


def _sleep_job(job_id: str, meta: dict) -> dict:
    return {
        "ID": job_id,
        "Name": job_id,
        "Type": "batch",
        "Datacenters": ["dc1"],
        "Meta": meta,
        "TaskGroups": [
            {
                "Name": "g",
                "Count": 1,
                "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                "Tasks": [
                    {
                        "Name": "t",
                        "Driver": "raw_exec",
                        "Config": {"command": "/bin/sleep", "args": ["600"]},
                        "Resources": {"CPU": 20, "MemoryMB": 16},
                    }
                ],
            }
        ],
    }


def _metaflow_meta(run_id: str, user: str, task_id: str = "9") -> dict:
    return {
        "metaflow.flow_name": FLOW,
        "metaflow.run_id": run_id,
        "metaflow.step_name": "nap",
        "metaflow.task_id": task_id,
        "metaflow.attempt": "0",
        "metaflow.user": user,
    }


@pytest.fixture(scope="module")
def world(nomad_agent, tmp_path_factory):
    """Two live runs in one flow directory, plus foreign look-alike jobs."""
    from metaflow_nomad.api.client import NomadClient

    client = NomadClient(nomad_agent.connection_settings())
    workdir = tmp_path_factory.mktemp("listkill")
    runs = {}
    for user in ("tester", "alice"):
        env = flow_env(nomad_agent.address, workdir, {"USER": user})
        run = start_flow("sleep_flow.py", workdir, env, "--seconds", "300")
        run_id = run.wait_run_id()
        (workdir / "run_id").unlink()
        runs[user] = (run, run_id, wait_task_running(client, run, FLOW, run_id)["ID"])
    tester_run_id = runs["tester"][1]
    prefix = run_job_prefix(FLOW, tester_run_id)
    foreign = {
        # Shares the tester run's prefix, but is not a Metaflow job at all.
        "no_meta": (prefix + "foreign-1-0", {"owner": "someone-else"}),
        # Shares the prefix and the flow name, but belongs to another user and run.
        "other_user": (prefix + "foreign-2-0", _metaflow_meta("424242", "mallory")),
        # Shares the prefix, claims the same run id, but is another flow's job.
        "other_flow": (
            prefix + "foreign-3-0",
            {**_metaflow_meta(tester_run_id, "tester"), "metaflow.flow_name": "OtherFlow"},
        ),
    }
    for job_id, meta in foreign.values():
        client.register(_sleep_job(job_id, meta))
    yield {
        "client": client,
        "workdir": workdir,
        "runs": runs,
        "foreign": foreign,
        "agent": nomad_agent,
    }
    for run, _, _ in runs.values():
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGINT)
    for run, _, _ in runs.values():
        run.finish(timeout=30)
    for job_id, _ in foreign.values():
        client.deregister(job_id, purge=True)


def _cli(world, *args, user="tester"):
    env = flow_env(world["agent"].address, world["workdir"], {"USER": user})
    proc = subprocess.run(
        [sys.executable, "sleep_flow.py", "--no-pylint", "nomad", *args],
        cwd=world["workdir"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    print(f"$ nomad {' '.join(args)}  (USER={user}, exit {proc.returncode})\n{proc.stdout}")
    return proc


def _listed(proc) -> set[str]:
    return set(re.findall(r" job \*?(\S+?)\*? status ", proc.stdout))


def _active(world, job_id) -> bool:
    job = world["client"].job(job_id)
    return job is not None and not job.get("Stop") and job["Status"] in ("pending", "running")


def test_list_options(world):
    _, tester_run, tester_job = world["runs"]["tester"]
    alice_job = world["runs"]["alice"][2]
    foreign_ids = {job_id for job_id, _ in world["foreign"].values()}
    # The server-side filter (Meta, via ?meta=true&filter=) is what excludes the
    # foreign jobs: the prefix alone matches them.
    by_prefix = world["client"].list_jobs(prefix=run_job_prefix(FLOW, tester_run))
    assert foreign_ids < {j["ID"] for j in by_prefix}
    # Nomad 1.6 evaluates `filter` on the stubs' Meta (with meta=true), server-side.
    filtered = world["client"].list_jobs(
        prefix=run_job_prefix(FLOW, tester_run), filter_expr='Meta["metaflow.user"] == "mallory"'
    )
    assert [j["ID"] for j in filtered] == [world["foreign"]["other_user"][0]]

    assert _listed(_cli(world, "list")) == {alice_job}  # the latest run
    assert _listed(_cli(world, "list", "--run-id", tester_run)) == {tester_job}
    assert _listed(_cli(world, "list", "--my-runs")) == {tester_job}
    assert _listed(_cli(world, "list", "--my-runs", user="alice")) == {alice_job}
    assert _listed(_cli(world, "list", "--user", "alice")) == {alice_job}
    mallory_job = world["foreign"]["other_user"][0]
    assert _listed(_cli(world, "list", "--user", "mallory")) == {mallory_job}
    assert _listed(_cli(world, "list", "--user", "nobody")) == set()
    assert _listed(_cli(world, "list", "--prefix", run_job_prefix(FLOW, tester_run))) == {
        tester_job
    }
    assert _listed(_cli(world, "list", "--prefix", "mf-sleepflow-", "--user", "alice")) == {
        alice_job
    }
    both = _cli(world, "list", "--user", "alice", "--my-runs")
    assert both.returncode != 0 and "cannot be used together" in both.stdout
    print(f"foreign jobs sharing the prefix: {len(foreign_ids)}, listed: 0")


def test_kill_options(world):
    client = world["client"]
    _, tester_run, tester_job = world["runs"]["tester"]
    _, alice_run, alice_job = world["runs"]["alice"]
    foreign_ids = [job_id for job_id, _ in world["foreign"].values()]

    # --job-id refuses a foreign job even when named exactly.
    refused = _cli(world, "kill", "--job-id", foreign_ids[0], "--job-id", foreign_ids[2])
    assert "Stopped 0 Nomad job(s)." in refused.stdout
    assert all(_active(world, j) for j in foreign_ids)

    # --prefix stops the tester run's job and none of the look-alikes.
    killed = _cli(world, "kill", "--prefix", run_job_prefix(FLOW, tester_run))
    assert "Stopped 1 Nomad job(s)." in killed.stdout
    assert not _active(world, tester_job)
    survivors = [j for j in foreign_ids if _active(world, j)]
    print(f"foreign jobs sharing the prefix: {len(foreign_ids)}, still running: {len(survivors)}")
    assert survivors == foreign_ids

    # Synthetic jobs with the launcher's Meta, for the options that need fresh victims.
    synthetic = {}
    for name, run_id, user in (
        ("a", "777001", "tester"),
        ("b", "777001", "tester"),
        ("c", "777002", "bob"),
        ("d", "777003", "tester"),
    ):
        job_id = run_job_prefix(FLOW, run_id) + f"nap-{name}-0"
        client.register(_sleep_job(job_id, _metaflow_meta(run_id, user, task_id=name)))
        synthetic[name] = job_id
    try:
        # Repeatable --job-id.
        out = _cli(world, "kill", "--job-id", synthetic["a"], "--job-id", synthetic["b"])
        assert "Stopped 2 Nomad job(s)." in out.stdout
        assert not _active(world, synthetic["a"]) and not _active(world, synthetic["b"])
        # --user, and --purge: the job is gone from Nomad, not only stopped.
        out = _cli(world, "kill", "--user", "bob", "--purge")
        assert "Stopped 1 Nomad job(s)." in out.stdout
        assert client.job(synthetic["c"]) is None
        # --my-runs: every unfinished job of mine in this flow (no other user's).
        assert _active(world, alice_job)
        out = _cli(world, "kill", "--my-runs")
        assert "Stopped 1 Nomad job(s)." in out.stdout
        assert not _active(world, synthetic["d"])
        assert _active(world, alice_job)
        # --run-id.
        out = _cli(world, "kill", "--run-id", alice_run)
        assert "Stopped 1 Nomad job(s)." in out.stdout
        assert not _active(world, alice_job)
        assert find_jobs(client, FLOW, alice_run) == []
        assert all(_active(world, j) for j in foreign_ids)
    finally:
        for job_id in synthetic.values():
            client.deregister(job_id, purge=True)


def test_kill_without_options_stops_the_latest_run(nomad_agent, tmp_path):
    from metaflow_nomad.api.client import NomadClient

    client = NomadClient(nomad_agent.connection_settings())
    run = start_flow("sleep_flow.py", tmp_path, flow_env(nomad_agent.address, tmp_path))
    run_id = run.wait_run_id()
    job_id = wait_task_running(client, run, FLOW, run_id)["ID"]
    try:
        world = {"agent": nomad_agent, "workdir": tmp_path}
        out = _cli(world, "kill")
        assert "Stopped 1 Nomad job(s)." in out.stdout
        assert find_jobs(client, FLOW, run_id) == []
        print(f"latest run {run_id}: active jobs after `nomad kill`: 0 (job {job_id} stopped)")
    finally:
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGINT)
        run.finish(timeout=30)
