"""A ``@parallel`` gang's allocations, judged as one unit (pure; ``tracking`` calls it).

The gang is one job whose allocations are its nodes, by index
(``render.parallel``).  The launcher follows the control's allocation (node 0)
like any task's, and every other node through these functions: one node
ending without success fails the attempt, and the launcher then stops every
node; the attempt succeeds only once every node has ended successfully, since
the join reads each worker's artifacts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from metaflow_nomad.model import gang_node_index, parallel_node_task_id
from metaflow_nomad.runtime.outcome import (
    TERMINAL_CLIENT_STATUS,
    TaskOutcome,
    outcome_from_allocation,
)


@dataclass(frozen=True)
class GangSpec:
    """What the launcher knows of its attempt's gang."""

    num_nodes: int
    control_task_id: str

    def task_id(self, node_index: int) -> str:
        return parallel_node_task_id(self.control_task_id, node_index)


def node_allocations(allocs: list[dict], num_nodes: int) -> dict[int, dict]:
    """Each node's own allocation: the first placed for its index.

    Nomad replaces a lost allocation inside the same job, under the same index;
    the replacement does not run the step (the node's attempt is claimed by the
    first), so the first is the node's.
    """
    nodes: dict[int, dict] = {}
    for alloc in sorted(allocs, key=lambda a: a.get("CreateIndex", 0)):
        index = gang_node_index(alloc.get("Name", ""))
        if index is not None and index < num_nodes:
            nodes.setdefault(index, alloc)
    return nodes


def failed_node(
    allocs: list[dict], gang: GangSpec, task_name: str, memory_mb: int | None
) -> TaskOutcome | None:
    """The first worker node (index >= 1) that ended without success, as the
    attempt's outcome naming the node and its task; None while none has."""
    nodes = node_allocations(allocs, gang.num_nodes)
    for index in sorted(nodes):
        alloc = nodes[index]
        if index == 0 or alloc.get("ClientStatus") not in TERMINAL_CLIENT_STATUS:
            continue
        outcome = outcome_from_allocation(alloc, task_name, memory_mb)
        if not outcome.succeeded:
            said = outcome.message or outcome.status
            return dataclasses.replace(
                outcome,
                message=f"node {index} of {gang.num_nodes} (task {gang.task_id(index)}): {said}",
            )
    return None


def all_ended(allocs: list[dict], num_nodes: int) -> bool:
    """Every node's allocation has ended (whatever its outcome)."""
    nodes = node_allocations(allocs, num_nodes)
    return len(nodes) == num_nodes and all(
        alloc.get("ClientStatus") in TERMINAL_CLIENT_STATUS for alloc in nodes.values()
    )
