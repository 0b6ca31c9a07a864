"""The domain model every stage shares: a task attempt's ids, its job ID and Meta,
what the task runs, and where it finds TLS material.

Plain data with no Metaflow or Nomad imports, so that any stage can use it
without importing a later one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

TASK_NAME = "metaflow"

# Job Meta keys.  Nomad gives them to the task as NOMAD_META_<KEY>, upper-cased,
# dots kept (``task_meta_env``).
META_FLOW_NAME = "metaflow.flow_name"
META_RUN_ID = "metaflow.run_id"
META_STEP_NAME = "metaflow.step_name"
META_TASK_ID = "metaflow.task_id"
META_ATTEMPT = "metaflow.attempt"
META_USER = "metaflow.user"
META_TEMPLATE = "metaflow.template"
META_TEMPLATE_VERSION = "metaflow.template_version"
META_TEMPLATE_SHA256 = "metaflow.template_sha256"
# A deployed flow's jobs (step jobs and runner jobs) name their deployment.
META_DEPLOYMENT = "metaflow.deployment"
# The events that started a deployed run (JSON), in the environment of its runner and
# of every task: each task builds current.trigger from it.
TRIGGERS_ENV = "METAFLOW_NOMAD_TRIGGERS"

_ID_UNSAFE = re.compile(r"[^a-z0-9-]+")


def task_meta_env(meta_key: str) -> str:
    """The variable under which a task sees a job Meta key."""
    return "NOMAD_META_" + meta_key.upper()


@dataclass(frozen=True)
class JobIdentity:
    """The Metaflow ids of one task attempt; a job's Meta records them."""

    flow_name: str
    run_id: str
    step_name: str
    task_id: str
    attempt: int
    user: str

    def to_meta(self) -> dict[str, str]:
        return {
            META_FLOW_NAME: self.flow_name,
            META_RUN_ID: self.run_id,
            META_STEP_NAME: self.step_name,
            META_TASK_ID: self.task_id,
            META_ATTEMPT: str(self.attempt),
            META_USER: self.user,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, str] | None) -> JobIdentity | None:
        """The identity a job's Meta records, or None for a job that is not a task's."""
        meta = meta or {}
        try:
            return cls(
                flow_name=meta[META_FLOW_NAME],
                run_id=meta[META_RUN_ID],
                step_name=meta[META_STEP_NAME],
                task_id=meta[META_TASK_ID],
                attempt=int(meta.get(META_ATTEMPT) or 0),
                user=meta.get(META_USER, ""),
            )
        except (KeyError, ValueError):
            return None

    def same_task(self, other: JobIdentity | None) -> bool:
        """The same task of the same run, whatever the attempt."""
        return other is not None and (
            self.flow_name,
            self.run_id,
            self.step_name,
            self.task_id,
        ) == (other.flow_name, other.run_id, other.step_name, other.task_id)

    @property
    def label(self) -> str:
        return f"{self.run_id}/{self.step_name}/{self.task_id}"

    @property
    def job_id(self) -> str:
        """A predictable, unique-per-attempt job ID: run prefix + step + task + attempt."""
        return (
            run_job_prefix(self.flow_name, self.run_id)
            + f"{_id_part(self.step_name, 40)}-{_id_part(self.task_id, 40)}-{self.attempt}"
        )


def _id_part(value: str, limit: int) -> str:
    return _ID_UNSAFE.sub("-", value.lower()).strip("-")[:limit] or "x"


def flow_job_prefix(flow_name: str) -> str:
    """Every job of a flow starts with this: its tasks' jobs, and the step jobs a
    deployment registers (whose dispatched children are named after them)."""
    return f"mf-{_id_part(flow_name, 40)}-"


def deployed_step_job_id(flow_name: str, generation: str, step_name: str) -> str:
    """The parameterized job a deployment registers for a step (one per version of
    the deployment's step jobs); its runs dispatch it once per task attempt."""
    return f"{flow_job_prefix(flow_name)}d{generation}-{_id_part(step_name, 40)}"


def run_job_prefix(flow_name: str, run_id: str) -> str:
    """Every job a run registers starts with this (a deployed run's tasks are
    dispatched children of its deployment's step jobs, and found by their Meta)."""
    return f"{flow_job_prefix(flow_name)}{_id_part(run_id, 40)}-"


def parallel_node_task_id(control_task_id: str, node_index: int) -> str:
    """The Metaflow task id of node ``node_index`` of a ``@parallel`` gang.

    Node 0 is the control task the runtime created; node ``i`` is worker ``i - 1``,
    named as ``@kubernetes`` names its workers, so that the client API and the
    ``logs`` command find every node under the same ids on either backend.
    """
    return control_task_id if node_index == 0 else f"{control_task_id}-worker-{node_index - 1}"


def gang_node_index(alloc_name: str) -> int | None:
    """A ``@parallel`` node's index from its allocation's name (``job.group[2]``):
    Nomad's ``NOMAD_ALLOC_INDEX``, which picks the node's step command."""
    match = _ALLOC_INDEX.search(alloc_name or "")
    return int(match.group(1)) if match else None


_ALLOC_INDEX = re.compile(r"\[(\d+)\]$")


# The task's node name, filled in by Nomad's runtime interpolation: Nomad 1.6 sets
# no NOMAD_* variable with it, and the task registers it as Metaflow metadata.
NODE_NAME_ENV = "METAFLOW_NOMAD_NODE_NAME"

# Set in a task whose mflog files are the datastore's own log files (the local
# datastore on a shared filesystem): the capture process then uploads nothing.
LOGS_IN_PLACE_ENV = "METAFLOW_NOMAD_LOGS_IN_PLACE"
# Where the capture process records the step's exit status once every line is
# written: the launcher learns of the end before Nomad's servers do.
EXIT_FILE_ENV = "METAFLOW_NOMAD_EXIT_FILE"


# The run's lease (``plugin.run_lease``): where the task reads it, and after how
# many seconds without a renewal the task stops its step (``task.lease_watch``).
LEASE_ENV = "METAFLOW_NOMAD_LEASE"
LEASE_TIMEOUT_ENV = "METAFLOW_NOMAD_LEASE_TIMEOUT_S"
LEASE_FILE = "_nomad_lease"

# The exit status of a task whose attempt another allocation holds (``task.attempt_claim``).
CLAIMED_ELSEWHERE = 3
# The shell's exit status for a command it could not find; a task's environment
# check exits with it too when the node lacks what the environment needs.
COMMAND_NOT_FOUND = 127


def claim_refusal(attempt_file: str, holder: str) -> str:
    """What a replacement allocation says before it exits without running the step."""
    return (
        f"metaflow-nomad: this attempt already ran in allocation {holder} ({attempt_file}); "
        "Nomad placed this allocation in its place (its node was lost or stopped "
        "heartbeating). Exiting without running the step, so that the attempt's results "
        "are never written twice; @retry runs a new attempt."
    )


@dataclass(frozen=True)
class TaskLogs:
    """Where the task's output lands in the datastore, in mflog's format: the
    capture process writes (or uploads) there and the launcher tails it."""

    stdout_url: str
    stderr_url: str
    datastore_type: str
    # Local datastore: the file the task writes its step's exit status to.
    exit_file: str | None = None
    # Next to the attempt's files: the first allocation of the attempt claims it here.
    claim_url: str | None = None


@dataclass(frozen=True)
class TaskLaunch:
    """What the task runs: a bash script and its environment (values are literal)."""

    script: str
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TlsMaterial:
    """Where tasks find the cluster's CA and a client certificate (on the client node)."""

    address: str
    source_dir: str
    task_dir: str
    ca_file: str = "ca.pem"
    cert_file: str = "client.pem"
    key_file: str = "client-key.pem"
