"""A gang's allocations judged as one unit (runtime.gang)."""

from __future__ import annotations

from metaflow_nomad.model import TASK_NAME, gang_node_index
from metaflow_nomad.runtime.gang import GangSpec, all_ended, failed_node, node_allocations

GANG = GangSpec(3, "5")


def alloc(index: int, status: str, exit_code: int = 0, create: int = 1, alloc_id=None) -> dict:
    events = [{"Type": "Started"}]
    if status in ("complete", "failed"):
        events.append({"Type": "Terminated", "Details": {"exit_code": str(exit_code)}})
    return {
        "ID": alloc_id or f"alloc-{index}-{create}",
        "Name": f"mf-job.step[{index}]",
        "CreateIndex": create,
        "ClientStatus": status,
        "DesiredStatus": "run",
        "TaskStates": {TASK_NAME: {"Events": events}},
    }


def test_the_node_index_is_the_allocation_index():
    assert gang_node_index("mf-a.b-c.step[12]") == 12
    assert gang_node_index("no index") is None


def test_each_node_is_its_first_allocation():
    replacement = alloc(1, "running", create=9)
    nodes = node_allocations([replacement, alloc(0, "running"), alloc(1, "lost")], 3)
    assert sorted(nodes) == [0, 1]
    assert nodes[1]["ClientStatus"] == "lost"


def test_a_failed_worker_fails_the_gang_and_is_named():
    allocs = [alloc(0, "running"), alloc(1, "running"), alloc(2, "failed", exit_code=1)]
    outcome = failed_node(allocs, GANG, TASK_NAME, None)
    assert outcome is not None and not outcome.succeeded
    assert outcome.message.startswith("node 2 of 3 (task 5-worker-1): ")
    assert outcome.alloc_id == "alloc-2-1"


def test_a_lost_worker_fails_the_gang():
    outcome = failed_node([alloc(0, "running"), alloc(1, "lost")], GANG, TASK_NAME, None)
    assert outcome is not None and outcome.status == "lost"


def test_running_or_finished_workers_and_the_control_are_no_gang_failure():
    allocs = [alloc(0, "failed", exit_code=1), alloc(1, "complete"), alloc(2, "running")]
    assert failed_node(allocs, GANG, TASK_NAME, None) is None


def test_the_gang_has_ended_once_every_node_has():
    running = [alloc(0, "complete"), alloc(1, "complete"), alloc(2, "running")]
    assert not all_ended(running, 3)
    assert not all_ended(running[:2], 3)
    assert all_ended([*running[:2], alloc(2, "complete")], 3)
