"""The production-shaped cluster (metaflow_nomad/testing/cluster.py) as a fixture,
and the few steps its tests share: run a small batch job and read its output.

``production_cluster`` is module-scoped, so that a module of fault tests starts it
once; a test that breaks it for good (kills what it does not bring back) should use a
cluster of its own.  Its docker clients use the session's ``docker_engine`` and a
private registry holding the task image (``cluster.task_image``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.testing.cluster import ClusterOptions, ProductionCluster

TERMINAL = ("complete", "failed", "lost")


def started_cluster(options: ClusterOptions) -> ProductionCluster:
    """A started cluster, with how long its start took printed (``pytest -s``)."""
    began = time.monotonic()
    cluster = ProductionCluster(options).start()
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in cluster.timings.items())
    print(f"\nproduction cluster started in {time.monotonic() - began:.1f}s ({timings})")
    return cluster


@pytest.fixture(scope="module")
def production_cluster(docker_engine) -> Iterator[ProductionCluster]:
    cluster = started_cluster(ClusterOptions(docker=True, engine=docker_engine))
    try:
        yield cluster
    finally:
        cluster.stop()


# The cluster of the fault tests: raw_exec clients only, no registry (quicker to start).
RAW_EXEC = ClusterOptions(docker=False, registry=False)


def run_batch_job(client: NomadClient, hcl: str, timeout: float = 120) -> dict:
    """Register a one-task batch job and return its allocation once it ended."""
    job = client.parse(hcl)
    client.register(job, source=hcl)
    deadline = time.monotonic() + timeout
    allocs: list[dict] = []
    while time.monotonic() < deadline:
        allocs, _ = client.job_allocations(job["ID"], wait_s=2)
        if allocs and allocs[0]["ClientStatus"] in TERMINAL:
            return client.allocation(allocs[0]["ID"])
        time.sleep(0.2)
    raise AssertionError(f"job {job['ID']} did not end within {timeout}s: {allocs}")


def task_output(client: NomadClient, alloc: dict, task: str = "t", wait_s: float = 10) -> str:
    """The task's stdout, or a line of its events when it wrote none.

    A docker task's log file is filled by Nomad's docker logger, which may copy the
    last lines a moment after the allocation is reported complete, so an empty
    stdout is read again for up to ``wait_s``.
    """
    events = alloc.get("TaskStates", {}).get(task, {}).get("Events", [])
    deadline = time.monotonic() + wait_s
    output = client.alloc_logs(alloc["ID"], task, "stdout", 4096)
    while not output and time.monotonic() < deadline:
        time.sleep(0.5)
        output = client.alloc_logs(alloc["ID"], task, "stdout", 4096)
    return output or " / ".join(e.get("DisplayMessage", "") for e in events)
