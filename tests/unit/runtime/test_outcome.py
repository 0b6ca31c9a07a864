"""Pure logic of tracking: placement diagnosis and task outcomes.

The evaluation metrics and task events below were recorded from the Nomad 1.6.1
agent the integration tests use (trimmed to the fields that matter).
"""

import pytest

from metaflow_nomad.model import COMMAND_NOT_FOUND
from metaflow_nomad.runtime.outcome import (
    TaskOutcome,
    describe_command_not_found,
    describe_placement_failure,
    outcome_from_allocation,
    registry_of,
)


def _evaluation(metric: dict, create_index: int = 22, status: str = "complete") -> dict:
    return {"CreateIndex": create_index, "Status": status, "FailedTGAllocs": {"step": metric}}


UNKNOWN_DC = {
    "ConstraintFiltered": None,
    "DimensionExhausted": None,
    "NodesAvailable": {},
    "NodesEvaluated": 0,
    "NodesExhausted": 0,
    "NodesFiltered": 0,
    "NodesInPool": 0,
}
TOO_MUCH_MEMORY = {
    "ConstraintFiltered": None,
    "DimensionExhausted": {"memory": 1},
    "NodesAvailable": {"dc1": 1},
    "NodesEvaluated": 1,
    "NodesExhausted": 1,
    "NodesFiltered": 0,
}
WINDOWS_ONLY = {
    "ConstraintFiltered": {"${attr.kernel.name} = windows": 1},
    "DimensionExhausted": None,
    "NodesAvailable": {"dc1": 1},
    "NodesEvaluated": 1,
    "NodesExhausted": 0,
    "NodesFiltered": 1,
}


def test_unknown_datacenter_names_what_was_asked():
    text = describe_placement_failure([_evaluation(UNKNOWN_DC)], placement="datacenters=['nope']")
    assert "no ready client node is in the requested datacenters" in text
    assert "datacenters=['nope']" in text


def test_memory_exhaustion_names_the_request():
    text = describe_placement_failure([_evaluation(TOO_MUCH_MEMORY)], memory_mb=10_000_000)
    assert text == (
        "task group 'step' cannot be placed: 1 node(s) do not have enough free memory "
        "(requested 10000000 MB)."
    )


def test_constraint_is_quoted():
    text = describe_placement_failure([_evaluation(WINDOWS_ONLY)])
    assert "1 of 1 node(s) were filtered out by constraint `${attr.kernel.name} = windows`" in text


def test_newest_evaluation_wins():
    older = _evaluation(WINDOWS_ONLY, create_index=5)
    newer = _evaluation(TOO_MUCH_MEMORY, create_index=9)
    assert "memory" in describe_placement_failure([older, newer])
    assert "constraint" in describe_placement_failure([newer | {"CreateIndex": 1}, older])


def test_no_failed_placement_means_no_diagnosis():
    assert describe_placement_failure([{"CreateIndex": 3, "Status": "complete"}]) is None
    assert describe_placement_failure([]) is None


def _alloc(events: list[dict], client_status: str = "failed", **extra) -> dict:
    return {
        "ID": "9a610263-aaaa-bbbb-cccc-dddddddddddd",
        "NodeName": "node-a",
        "ClientStatus": client_status,
        "DesiredStatus": "run",
        "TaskStates": {"metaflow": {"State": "dead", "Events": events}},
        **extra,
    }


def _terminated(exit_code: int, signal: int = 0, oom: bool = False) -> dict:
    return {
        "Type": "Terminated",
        "Details": {
            "exit_code": str(exit_code),
            "signal": str(signal),
            "oom_killed": "true" if oom else "false",
        },
    }


NOT_RESTARTING = {
    "Type": "Not Restarting",
    "DisplayMessage": "Policy allows no restarts",
    "Details": {"fails_task": "true", "restart_reason": "Policy allows no restarts"},
}


def test_exit_code_without_restart_noise():
    outcome = outcome_from_allocation(_alloc([_terminated(1), NOT_RESTARTING]), "metaflow", 256)
    assert (outcome.status, outcome.exit_code, outcome.signal) == ("failed", 1, None)
    assert outcome.message == "the task exited with code 1"
    assert not outcome.succeeded


def test_exit_127_is_a_missing_command_not_a_transient_failure():
    outcome = outcome_from_allocation(_alloc([_terminated(127), NOT_RESTARTING]), "metaflow", 256)
    assert outcome.exit_code == COMMAND_NOT_FOUND
    assert outcome.message == "the task exited with code 127"
    assert outcome.permanent


@pytest.mark.parametrize(
    "line, command",
    [
        # What the task printed before this fix, under --environment=uv.
        ("bash: line 1: flush_mflogs: command not found", "flush_mflogs"),
        ("bash: uv: command not found", "uv"),
        ("/bin/sh: 1: uv: not found", "uv"),  # dash
        ("bash: /opt/tools/bin/run: No such file or directory", "/opt/tools/bin/run"),
    ],
)
def test_the_shells_line_names_the_missing_command(line, command):
    stderr = ["Bootstrapping uv project...", line, "[save_logs] upload_success"]
    said = describe_command_not_found(stderr, "node-1")
    assert said.startswith(
        f"the task exited with code 127: `{command}` was not found on node node-1 ({line}); "
        "install it on the node (raw_exec, exec) or in the image (docker), or put it on the "
        "task's PATH"
    )


def test_without_the_shells_line_the_command_is_not_named():
    said = describe_command_not_found(["cp: cannot stat 'x': No such file or directory"], "n")
    assert said.startswith("the task exited with code 127: a command it runs was not found on n")


def test_success():
    outcome = outcome_from_allocation(_alloc([_terminated(0)], "complete"), "metaflow", 256)
    assert outcome.succeeded and outcome.message == ""


def test_oom_names_the_memory_limit():
    outcome = outcome_from_allocation(_alloc([_terminated(137, 9, oom=True)]), "metaflow", 512)
    assert outcome.oom_killed
    assert "out of memory (limit 512 MB)" in outcome.message


def test_sigkill_without_oom_flag_points_at_memory():
    # What Nomad 1.6.1 reported here for an exec task that went over `memory`:
    # the cgroup OOM killer's SIGKILL, with oom_killed "false".
    outcome = outcome_from_allocation(_alloc([_terminated(137, 9)]), "metaflow", 32)
    assert not outcome.oom_killed
    assert "SIGKILL (signal 9)" in outcome.message and "(32 MB)" in outcome.message


def test_other_signal_is_named():
    outcome = outcome_from_allocation(_alloc([_terminated(0, 15)]), "metaflow", 32)
    assert outcome.message == "the task was killed by SIGTERM (signal 15)"


def test_drain_is_a_migration_not_a_success():
    alloc = _alloc(
        [_terminated(0)],
        "complete",
        DesiredStatus="stop",
        DesiredDescription="alloc is being migrated",
    )
    outcome = outcome_from_allocation(alloc, "metaflow", 128)
    assert outcome.status == "migrated"
    assert not outcome.succeeded and not outcome.stopped_from_outside
    assert "node-a" in outcome.message and "draining" in outcome.message


def test_job_stopped_from_outside_is_not_retryable():
    alloc = _alloc(
        [_terminated(130, 2)],
        "complete",
        DesiredStatus="stop",
        DesiredDescription="alloc not needed due to job update",
    )
    outcome = outcome_from_allocation(alloc, "metaflow", 128)
    assert outcome.stopped_from_outside
    assert "stopped from outside" in outcome.message


def test_lost_and_unknown_are_failures():
    for status in ("lost", "unknown"):
        alloc = _alloc([], status, DesiredStatus="stop")
        outcome = outcome_from_allocation(alloc, "metaflow", 128)
        assert outcome.status == status and not outcome.succeeded
        assert "node-a went away" in outcome.message


def test_driver_failure_is_explained():
    event = {
        "Type": "Driver Failure",
        "DisplayMessage": "failed to launch command with executor: no such file",
        "Details": {"fails_task": "true"},
    }
    outcome = outcome_from_allocation(_alloc([event, NOT_RESTARTING]), "metaflow", 128)
    assert outcome.message == (
        "Driver Failure: failed to launch command with executor: no such file"
    )


def test_outcome_defaults():
    assert TaskOutcome(status="complete").succeeded
    assert not TaskOutcome(status="complete", exit_code=2).succeeded


def _pull_failure(image: str, reason: str) -> dict:
    return {
        "ClientStatus": "failed",
        "NodeName": "gpu-7",
        "TaskStates": {
            "metaflow": {
                "Events": [
                    {
                        "Type": "Driver Failure",
                        "DisplayMessage": f"Failed to pull `{image}`: {reason}",
                    }
                ]
            }
        },
    }


@pytest.mark.parametrize(
    ("image", "note"),
    [
        ("registry.example/team/img:1.2", ""),
        ("python:latest", " (a `latest` or untagged image is pulled every time)"),
        ("python", " (a `latest` or untagged image is pulled every time)"),
    ],
)
def test_image_pull_failure_names_image_node_and_dockers_reason(image, note):
    reason = 'API error (500): Get "https://registry-1.docker.io/v2/": no such host'
    outcome = outcome_from_allocation(_pull_failure(image, reason), "metaflow", 512)
    registry = registry_of(image)
    assert outcome.message == (
        f"the docker image `{image}` could not be pulled on node gpu-7{note}: {reason}. "
        f"Node gpu-7 could not reach the registry {registry}: check that it is up and "
        "reachable from the node"
    )
    assert not outcome.permanent


# Docker's reasons as Nomad 1.6.1 reported them, pulling from Debian's docker-registry
# (TLS, htpasswd) on the test cluster (tests/integration/test_registry_pulls.py).
IMAGE = "127.0.0.1:5443/metaflow-nomad/task:py3.11"
PULL_REASONS = {
    "denied": "API error (500): unauthorized: authentication required",
    "missing": (
        "API error (404): manifest for 127.0.0.1:5443/metaflow-nomad/task:py3.11 not found: "
        "manifest unknown: manifest unknown"
    ),
    "down": (
        'API error (500): Get "https://127.0.0.1:5443/v2/": dial tcp 127.0.0.1:5443: '
        "connect: connection refused"
    ),
    "untrusted": (
        'API error (500): Get "https://127.0.0.1:5443/v2/": tls: failed to verify certificate: '
        "x509: certificate signed by unknown authority"
    ),
}


@pytest.mark.parametrize(
    ("kind", "fix", "permanent"),
    [
        (
            "denied",
            "The registry 127.0.0.1:5443 refused the credentials: set `registry_auth`",
            True,
        ),
        ("missing", "The registry 127.0.0.1:5443 has no such image or tag: check", True),
        ("down", "Node gpu-7 could not reach the registry 127.0.0.1:5443: check", False),
        ("untrusted", "install its CA as /etc/docker/certs.d/127.0.0.1:5443/ca.crt", True),
    ],
)
def test_each_kind_of_pull_failure_names_the_registry_and_its_fix(kind, fix, permanent):
    outcome = outcome_from_allocation(_pull_failure(IMAGE, PULL_REASONS[kind]), "metaflow", 512)
    assert outcome.message.startswith(
        f"the docker image `{IMAGE}` could not be pulled on node gpu-7: {PULL_REASONS[kind]}. "
    )
    assert fix in outcome.message
    assert outcome.permanent is permanent


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("python:3.11", "docker.io"),
        ("team/img", "docker.io"),
        ("localhost/img:1", "localhost"),
        ("127.0.0.1:5443/a/b:c", "127.0.0.1:5443"),
        ("ghcr.io/org/img@sha256:ab", "ghcr.io"),
    ],
)
def test_the_registry_of_an_image_reference(image, registry):
    assert registry_of(image) == registry


def test_a_bind_mount_the_docker_plugin_refuses_says_what_to_change_and_is_not_transient():
    # Nomad 1.6.1's event, as recorded from a docker node without `volumes { enabled }`.
    text = (
        'Failed to create container configuration for image "python:3.11" ("sha256:ede4"): '
        'volumes are not enabled; cannot mount host paths: "/srv/cache:/srv/cache"'
    )
    alloc = _alloc([{"Type": "Driver Failure", "DisplayMessage": text}, NOT_RESTARTING])
    alloc["NodeName"] = "edge-3"
    outcome = outcome_from_allocation(alloc, "metaflow", 512)
    assert outcome.permanent
    assert outcome.message.startswith(
        "the docker plugin on node edge-3 does not allow bind mounts, and the step mounts "
        '/srv/cache: set `volumes { enabled = true }` in the node\'s `plugin "docker"` config'
    )
    assert "nomad doctor" in outcome.message
    other = {"Type": "Driver Failure", "DisplayMessage": "no such file"}
    assert not outcome_from_allocation(_alloc([other, NOT_RESTARTING]), "metaflow", 1).permanent
