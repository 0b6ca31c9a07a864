"""What tests read back from Nomad: a run's running task, and how long its jobs
and allocations took to go away after an interruption."""

from __future__ import annotations

import time
from dataclasses import dataclass

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.lookup import find_jobs
from metaflow_nomad.model import TASK_NAME
from tests.support.flows import FlowRun

# The smallest job a cluster runs: for tests of the API and the client, not of flows.
PROBE_HCL = """
job "{name}" {{
  type = "batch"
  datacenters = ["dc1"]
  group "g" {{
    task "t" {{
      driver = "raw_exec"
      config {{
        command = "/bin/true"
      }}
    }}
  }}
}}
"""


def probe_hcl(name: str = "probe") -> str:
    return PROBE_HCL.format(name=name)


def running_allocations(client: NomadClient, job_ids: list[str]) -> list[dict]:
    allocs = []
    for job_id in job_ids:
        found, _ = client.job_allocations(job_id)
        allocs.extend(a for a in found if a["ClientStatus"] in ("pending", "running"))
    return allocs


def wait_task_running(
    client: NomadClient, run: FlowRun, flow_name: str, run_id: str, timeout: float = 90
) -> dict:
    """The run's first job once its task is really executing on the client."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in find_jobs(client, flow_name, run_id):
            allocs, _ = client.job_allocations(job["ID"])
            states = [a.get("TaskStates") or {} for a in allocs]
            if any(s.get(TASK_NAME, {}).get("State") == "running" for s in states):
                return job
        assert run.proc.poll() is None, run.output
        time.sleep(0.3)
    raise AssertionError(f"no running task after {timeout}s:\n{run.output}")


@dataclass
class Cleanup:
    """How long after an interruption the run's jobs and allocations were gone."""

    jobs_left: int
    allocs_left: int
    jobs_gone_after: float | None
    allocs_gone_after: float | None


def wait_no_active_jobs(
    client: NomadClient, flow_name: str, run_id: str, job_ids: list[str], timeout: float
) -> Cleanup:
    """Poll the API until the run has no active job and no running allocation."""
    started = time.monotonic()
    jobs_gone = allocs_gone = None
    while True:
        jobs = find_jobs(client, flow_name, run_id)
        allocs = running_allocations(client, job_ids)
        elapsed = time.monotonic() - started
        if not jobs and jobs_gone is None:
            jobs_gone = elapsed
        if not allocs and allocs_gone is None:
            allocs_gone = elapsed
        if (not jobs and not allocs) or elapsed > timeout:
            return Cleanup(len(jobs), len(allocs), jobs_gone, allocs_gone)
        time.sleep(0.25)


TERMINAL = ("complete", "failed", "lost")


def settled_allocations(fetch, timeout: float = 15) -> list[dict]:
    """A job's allocations once none is still running.

    A successful step's launcher exits as soon as the task records its exit
    status; Nomad's client reports the allocation complete to the servers a
    moment later (in batches of about 200 ms), so a check right after a run
    waits for that as a user watching `nomad job status` would.
    """
    deadline = time.monotonic() + timeout
    while True:
        allocs = fetch()
        if all(a["ClientStatus"] in TERMINAL for a in allocs) or time.monotonic() > deadline:
            return allocs
        time.sleep(0.1)
