"""A ``@parallel`` step's gang: N nodes of one step, submitted as one Nomad job.

Shape: one task group with ``count = N`` (template feature ``parallel``).  Nomad
numbers the allocations 0..N-1 (``NOMAD_ALLOC_INDEX``), and every allocation runs
the same task; node 0 is the control task the runtime created, node ``i`` is
worker ``i - 1`` (``model.parallel_node_task_id``).  One group rather than N:
the nodes are identical in resources and placement, one group keeps the base
template's single group (overrides and features apply to every node unchanged),
and Nomad places and stops it as one unit.

What differs per node (task id, split index, UBF context, log files, attempt
claim) is in each node's own step script, built in Python exactly as a lone
task's is (``pipeline.build_step_launch``) and carried base64-encoded in
``METAFLOW_NOMAD_NODE_COMMAND_B64_<i>``; the job's step script is the short
dispatcher below, which picks the script of ``NOMAD_ALLOC_INDEX``.  The env then
grows with N (a few KB per node): fine for the tens of nodes a gang has.

Discovery goes through Nomad alone (no shared filesystem): each allocation
registers a ``provider = "nomad"`` service on its dynamic port ``mf_parallel``,
tagged with its index; a ``template`` block with ``nomadService`` renders the
control's (index 0) address into the task directory, and a worker waits for it
before its step starts.  The port is dynamic, so several gangs on one host (or
one loopback test cluster) never collide; it reaches the step as
``MF_PARALLEL_MAIN_PORT``.  Docker nodes must share the host's network to reach
each other on that port: ``network_mode = "host"`` (set when unset).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from dataclasses import dataclass

from metaflow_nomad.errors import NomadException
from metaflow_nomad.model import parallel_node_task_id
from metaflow_nomad.settings import StepSettings

PORT_LABEL = "mf_parallel"
NODE_TAG_PREFIX = "mf-node-"
# In the task's local/ directory: "<address>:<port>" of the control, once registered.
MAIN_ADDRESS_FILE = "mf-parallel-main"
NODE_COMMAND_ENV = "METAFLOW_NOMAD_NODE_COMMAND_B64_"
# How long a worker waits for the control's registration before it fails the gang.
DISCOVERY_TIMEOUT_S = 600
UBF_CONTROL = "ubf_control"
UBF_TASK = "ubf_task"


@dataclass(frozen=True)
class ParallelGang:
    """The gang of one attempt of a ``@parallel`` step."""

    num_nodes: int
    control_task_id: str
    service: str
    discovery_timeout_s: int = DISCOVERY_TIMEOUT_S

    @property
    def task_ids(self) -> list[str]:
        return [parallel_node_task_id(self.control_task_id, i) for i in range(self.num_nodes)]

    def as_template_vars(self) -> dict:
        """The template's ``parallel`` variable."""
        return {
            "num_nodes": self.num_nodes,
            "service": self.service,
            "port_label": PORT_LABEL,
            "node_tag_prefix": NODE_TAG_PREFIX,
            "address_file": MAIN_ADDRESS_FILE,
        }


def gang_for(job_id: str, control_task_id: str, num_nodes: int) -> ParallelGang:
    """The gang of the attempt whose job is ``job_id``."""
    if num_nodes < 1:
        raise NomadException(f"A @parallel step needs num_parallel >= 1, not {num_nodes}.")
    return ParallelGang(num_nodes, control_task_id, service_name(job_id))


def service_name(job_id: str) -> str:
    """The gang's Nomad service: unique per attempt (a retry's gang never finds the
    previous one's control), and a valid service name (a DNS label, at most 63
    characters) whatever the flow, run and step are called."""
    return "mf-parallel-" + hashlib.sha256(job_id.encode()).hexdigest()[:24]


def node_step_options(step_options: dict, gang: ParallelGang, node_index: int) -> dict:
    """The ``step`` options of node ``node_index``: its task id, split index and UBF
    context (the control's own options otherwise, inputs and retry count included)."""
    return {
        **step_options,
        "task_id": gang.task_ids[node_index],
        "split_index": str(node_index),
        "ubf_context": UBF_CONTROL if node_index == 0 else UBF_TASK,
        "num_parallel": str(gang.num_nodes),
    }


def gang_env(gang: ParallelGang, node_scripts: list[str]) -> dict[str, str]:
    """What every node's environment holds besides a lone task's."""
    env = {
        "MF_PARALLEL_NUM_NODES": str(gang.num_nodes),
        "MF_PARALLEL_CONTROL_TASK_ID": gang.control_task_id,
    }
    for index, script in enumerate(node_scripts):
        env[f"{NODE_COMMAND_ENV}{index}"] = base64.b64encode(script.encode()).decode()
    return env


def dispatch_script(gang: ParallelGang) -> str:
    """The job's step script: find the control, then run this node's own script.

    The control's address is its own port's; a worker reads the control's from
    the file the template renders, and fails (failing the gang) if the control has
    not registered within the discovery timeout.
    """
    wait = gang.discovery_timeout_s
    address_file = f'"$NOMAD_TASK_DIR/{MAIN_ADDRESS_FILE}"'
    return (
        'export MF_PARALLEL_NODE_INDEX="$NOMAD_ALLOC_INDEX"\n'
        'if [ "$NOMAD_ALLOC_INDEX" = 0 ]; then\n'
        f'  main="$NOMAD_IP_{PORT_LABEL}:$NOMAD_PORT_{PORT_LABEL}"\n'
        "else\n"
        "  waited=0\n"
        f'  until main="$(cat {address_file} 2>/dev/null)" && [ -n "$main" ]; do\n'
        f'    if [ "$waited" -ge {wait} ]; then\n'
        '      echo "metaflow-nomad: node $NOMAD_ALLOC_INDEX found no control (node 0) '
        f'registered as Nomad service {gang.service} after {wait} s." >&2\n'
        "      exit 1\n"
        "    fi\n"
        "    sleep 1; waited=$((waited + 1))\n"
        "  done\n"
        "fi\n"
        'export MF_PARALLEL_MAIN_IP="${main%:*}" MF_PARALLEL_MAIN_PORT="${main##*:}"\n'
        f'node="{NODE_COMMAND_ENV}$NOMAD_ALLOC_INDEX"\n'
        'eval "$(printf %s "${!node}" | base64 -d)"\n'
    )


def gang_settings(settings: StepSettings, step_name: str) -> StepSettings:
    """A docker gang shares the host's network, where the nodes' ports are."""
    docker = settings.docker
    if docker is None or docker.network_mode == "host":
        return settings
    if docker.network_mode is not None:
        raise NomadException(
            f"Step '{step_name}': a @parallel step on docker needs network_mode 'host' (its "
            f"nodes reach each other on the host's ports), not {docker.network_mode!r}. "
            "Remove network_mode, or set it to 'host'."
        )
    return dataclasses.replace(settings, docker=dataclasses.replace(docker, network_mode="host"))
