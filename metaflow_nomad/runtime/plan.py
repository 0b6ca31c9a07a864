"""What one task attempt needs on its way to Nomad, decided before its launcher starts.

Metaflow's runtime process already holds the flow, its graph and its datastore,
so it renders and parses the attempt's job there (``plugin.attempt_planning``)
and writes an ``AttemptPlan`` to a file.  The launcher it then starts
(``runtime.attempt``) reads the plan and only talks to Nomad: it never imports
Metaflow or the flow, which is what keeps one launcher per running task cheap.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from metaflow_nomad.model import JobIdentity, TaskLogs

# The launcher that reads a plan: ``python -m metaflow_nomad.runtime.attempt PLAN``.
LAUNCHER_MODULE = "metaflow_nomad.runtime.attempt"


@dataclass(frozen=True)
class Dispatch:
    """In a deployed run: the step job to dispatch, the attempt's meta, and the
    idempotency token that makes a retried dispatch return the same child."""

    parent_job_id: str
    meta: dict[str, str]
    token: str


@dataclass(frozen=True)
class AttemptPlan:
    """One attempt: the job (or dispatch), how to follow it, where its logs land.

    ``error`` is set instead when planning found a user or cluster error (a
    template the cluster rejects, say): the launcher prints it, submits nothing
    and exits so that the runtime does not retry.
    """

    identity: JobIdentity
    namespace: str | None = None
    job: dict[str, Any] | None = None
    hcl: str | None = None
    template_name: str | None = None
    dispatch: Dispatch | None = None
    description: str = ""
    pending_timeout: float | None = None
    memory_mb: int | None = None
    placement: str = ""
    run_time_limit: float = 5 * 24 * 60 * 60
    logs: TaskLogs | None = None
    minutes_between_retries: int = 0
    # With local metadata and a remote datastore: that datastore's root, where the
    # task's metadata is brought home from once it ends.
    metadata_sync_root: str | None = None
    # Where the launcher records its task metadata (runtime.task_metadata): the
    # provider's type, and with local metadata the task's _meta directory, with the
    # metadata service its URL (its headers travel in the launcher's environment).
    metadata_type: str | None = None
    local_metadata_dir: str | None = None
    metadata_service_url: str | None = None
    # Nomad's UI (api.ui_links): the allocation's page is linked when set.
    ui_url: str | None = None
    # Sample the allocation's usage while it runs (runtime.usage), against the request.
    sample_usage: bool = False
    cpu_cores: float | None = None
    # A @parallel step's attempt runs its gang of nodes in the one job: the
    # launcher follows every node's allocation (runtime.gang).
    num_nodes: int = 1
    error: str | None = None

    @property
    def label(self) -> str:
        return self.identity.label

    @property
    def job_id(self) -> str:
        return self.identity.job_id


def write_plan(plan: AttemptPlan, path: str) -> None:
    """Write atomically (the launcher may start the moment the runtime spawns it)."""
    partial = f"{path}.partial"
    with open(partial, "w") as handle:
        json.dump(asdict(plan), handle)
    os.replace(partial, path)


def read_plan(path: str) -> AttemptPlan:
    """Read the plan and remove its file: it is the launcher's alone."""
    with open(path) as handle:
        data = json.load(handle)
    os.unlink(path)
    data["identity"] = JobIdentity(**data["identity"])
    if data.get("dispatch"):
        data["dispatch"] = Dispatch(**data["dispatch"])
    if data.get("logs"):
        data["logs"] = TaskLogs(**data["logs"])
    return AttemptPlan(**data)
