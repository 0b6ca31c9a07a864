"""Deployed flows in tests: the clusters they run on, and the commands a user types.

A ``Cluster`` is a real agent plus how a user reaches it: the plain session
agent, or an agent with ACLs and mutual TLS, where the user holds a token that
may only write in one namespace and an administrator binds the runner's policy
with the ``nomad`` CLI, as docs/deploy.md tells them to.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.testing.local_agent import LocalAgent
from tests.support import flows
from tests.support.flows import agent_flow_env, wait_for

# Small enough for many tasks on one test node; the runner forwards them to its steps.
SMALL_STEPS = {
    "METAFLOW_NOMAD_CPU": "100",
    "METAFLOW_NOMAD_MEMORY": "256",
    "METAFLOW_NOMAD_DISK": "256",
}


@dataclass
class Cluster:
    name: str
    agent: LocalAgent
    namespace: str | None = None
    user_token: str | None = None

    @property
    def secure(self) -> bool:
        return self.agent.options.acl

    def env(self, workdir: Path, extra: dict | None = None) -> dict:
        """A user's environment: their token (if any), their namespace, small steps."""
        settings = dict(SMALL_STEPS)
        if self.namespace:
            settings["METAFLOW_NOMAD_NAMESPACE"] = self.namespace
        settings.update(extra or {})
        return agent_flow_env(self.agent, workdir, token=self.user_token, extra=settings)

    def admin(self) -> NomadClient:
        """What the tests check with: the management token, in the cluster's namespace."""
        settings = self.agent.connection_settings()
        if self.namespace:
            import dataclasses

            settings = dataclasses.replace(settings, namespace=self.namespace)
        return NomadClient(settings)

    def api(self, method: str, path: str, body: dict | None = None):
        separator = "&" if "?" in path else "?"
        return self.agent.api(
            method, f"{path}{separator}namespace={self.namespace or 'default'}", body
        )

    def bind_runner_policy(
        self, workdir: Path, flow_file: str, *jobs: str, top_args: tuple = (), name=None
    ) -> None:
        """What an administrator runs: the commands `nomad-workflows policy` prints (one
        per runner job, which must be ``jobs``), on the policy it prints."""
        if not self.secure:
            return
        group = [f"--name={name}"] if name else []
        policy = deploy_cli(
            self, workdir, flow_file, *group, "policy", quiet=True, top_args=top_args
        )
        assert policy.returncode == 0, policy.output
        path = workdir / "runner-policy.hcl"
        path.write_text(policy.stdout)
        commands = [
            shlex.split(line[2:].replace("runner-policy.hcl", str(path)))
            for line in policy.stderr.splitlines()
            if line.startswith("# nomad acl policy apply")
        ]
        assert [c[c.index("-job") + 1] for c in commands] == list(jobs), policy.stderr
        admin_env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        config = self.agent.connection_config()
        admin_env.update(
            {
                "NOMAD_ADDR": config["NOMAD_ADDRESS"],
                "NOMAD_TOKEN": config["NOMAD_TOKEN"],
                "NOMAD_CACERT": config["NOMAD_CACERT"],
                "NOMAD_CLIENT_CERT": config["NOMAD_CLIENT_CERT"],
                "NOMAD_CLIENT_KEY": config["NOMAD_CLIENT_KEY"],
            }
        )
        for command in commands:
            done = subprocess.run(
                [self.agent.binary, *command[1:]], env=admin_env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Cli:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def copy_flow(flow_file: str, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    flows.copy_flow(flow_file, workdir)


def deploy_cli(
    cluster: Cluster,
    workdir: Path,
    flow_file: str,
    *args: str,
    quiet: bool = False,
    top_args: tuple = (),
    env: dict | None = None,
    timeout: float = 240,
) -> Cli:
    """``python flow.py [top args] nomad-workflows ARGS`` as the user."""
    if not (workdir / flow_file).exists():
        copy_flow(flow_file, workdir)
    command = [sys.executable, flow_file, "--no-pylint", *(["--quiet"] if quiet else [])]
    proc = subprocess.run(
        [*command, *top_args, "nomad-workflows", *args],
        cwd=workdir,
        env=cluster.env(workdir, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(
        f"$ nomad-workflows {' '.join(args)} (exit {proc.returncode})\n{proc.stderr}{proc.stdout}"
    )
    return Cli(proc.returncode, proc.stdout, proc.stderr)


def triggered_run_id(trigger: Cli) -> str:
    assert trigger.returncode == 0, trigger.output
    for line in trigger.output.splitlines():
        if line.startswith("Run ") and " triggered on Nomad" in line:
            return line.split()[1]
    raise AssertionError(f"no run id in:\n{trigger.output}")


def runner_jobs_of(cluster: Cluster, deployment: str) -> list[dict]:
    """The runner child jobs (one per run) of a deployment, oldest first."""
    stubs = cluster.api("GET", f"/v1/jobs?prefix={urllib.parse.quote(deployment)}")
    parents = {deployment, f"{deployment}-schedule"}
    children = [s for s in stubs if s.get("ParentID") in parents]
    return sorted(children, key=lambda s: s["SubmitTime"])


def runner_job_of(cluster: Cluster, deployment: str, run_id: str) -> dict:
    from metaflow_nomad.deploy.naming import base_run_id, run_id_for_runner_job

    for stub in runner_jobs_of(cluster, deployment):
        if run_id_for_runner_job(stub["ID"]) == base_run_id(run_id):
            return stub
    raise AssertionError(f"no runner job for {run_id}")


def allocations(cluster: Cluster, job_id: str) -> list[dict]:
    allocs = cluster.api("GET", f"/v1/job/{urllib.parse.quote(job_id, safe='')}/allocations")
    return sorted(allocs, key=lambda a: a["CreateIndex"])


def wait_runner_done(cluster: Cluster, deployment: str, run_id: str, timeout: float = 240) -> dict:
    """The run's runner job once it is dead (the run ended, one way or another)."""

    def dead():
        stub = runner_job_of(cluster, deployment, run_id)
        return stub if stub["Status"] == "dead" else None

    return wait_for(dead, timeout, f"run {run_id} to end", interval=1)


def wait_step_running(cluster: Cluster, flow_name: str, run_id: str, step: str, timeout=120):
    """The run's dispatched job for ``step``, once its task is running."""
    from metaflow_nomad.api.lookup import find_jobs

    client = cluster.admin()

    def running():
        for job in find_jobs(client, flow_name, run_id):
            if (job.get("Meta") or {}).get("metaflow.step_name") != step:
                continue
            states = [a.get("TaskStates") or {} for a in allocations(cluster, job["ID"])]
            if any(s.get("metaflow", {}).get("State") == "running" for s in states):
                return job
        return None

    return wait_for(running, timeout, f"step {step} of {run_id} to run", interval=0.5)


def active_jobs_of_run(cluster: Cluster, flow_name: str, run_id: str) -> list[dict]:
    """The run's step jobs still pending or running, and not being stopped."""
    from metaflow_nomad.api.lookup import find_jobs

    return [j for j in find_jobs(cluster.admin(), flow_name, run_id) if not j.get("Stop")]


def running_allocations(cluster: Cluster, job_ids: list[str]) -> list[dict]:
    return [
        a
        for job_id in job_ids
        for a in allocations(cluster, job_id)
        if a["ClientStatus"] in ("pending", "running")
    ]


def runner_log(cluster: Cluster, alloc_id: str, stream: str = "stderr") -> str:
    path = f"/v1/client/fs/logs/{alloc_id}?task=runner&type={stream}&plain=true"
    path += f"&namespace={cluster.namespace or 'default'}"
    return cluster.agent.api_text(path)


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.1f}s"


NAMESPACE = "team-a"


def _cluster(request, tmp_path_factory):
    """The plain session agent, then an agent with ACLs and mutual TLS."""
    if request.param == "plain":
        yield Cluster("plain", request.getfixturevalue("nomad_agent"))
        return
    yield from secure_cluster(tmp_path_factory)


def secure_cluster(tmp_path_factory):
    """An agent with ACLs and mutual TLS, and a user whose token writes in one namespace."""
    from metaflow_nomad.testing.local_agent import AgentOptions
    from metaflow_nomad.testing.pki import make_test_pki
    from tests.support.flows import agent_path_env

    pki = make_test_pki(tmp_path_factory.mktemp("deploy-pki"))
    agent = LocalAgent(options=AgentOptions(acl=True, tls=pki, env=agent_path_env()))
    agent.start()
    try:
        yield Cluster("acl", agent, NAMESPACE, agent.create_namespace_token(NAMESPACE))
    finally:
        agent.stop()


# Registered in tests/conftest.py; each test module that uses it gets both clusters.
deploy_cluster = pytest.fixture(scope="module", params=["plain", "acl"])(_cluster)
