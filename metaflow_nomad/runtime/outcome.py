"""What a task's allocation and evaluations say, in words for the user.

Pure functions of Nomad's JSON: the verdict of an attempt (exit code, signal, OOM,
stopped from outside, lost) and why a task cannot be placed.  No I/O, so every
case is unit-tested with recorded API answers.
"""

from __future__ import annotations

import re
import signal as signals
from dataclasses import dataclass

from metaflow_nomad.model import COMMAND_NOT_FOUND

TERMINAL_CLIENT_STATUS = {"complete", "failed", "lost", "unknown"}
SIGKILL = 9
FATAL_EVENTS = {
    "Driver Failure",
    "Setup Failure",
    "Failed Validation",
    "Failed Artifact Download",
    "Task hook failed",
}


@dataclass
class TaskOutcome:
    # complete | failed | lost | unknown | migrated | stopped
    status: str
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    message: str = ""
    alloc_id: str | None = None
    node_name: str | None = None
    # The task cannot start as it is configured (the node's docker plugin, the image's
    # name or the registry's credentials): another attempt fails the same way, and
    # ``message`` says what to change.
    permanent: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status == "complete" and (self.exit_code or 0) == 0

    @property
    def stopped_from_outside(self) -> bool:
        """Someone stopped the job (``nomad job stop``, another launcher): do not retry."""
        return self.status == "stopped"


def describe_placement_failure(
    evaluations: list[dict], memory_mb: int | None = None, placement: str | None = None
) -> str | None:
    """Plain-words reason from the newest evaluation's FailedTGAllocs metrics.

    ``placement`` names what the job asked for (datacenters, node pool), because
    the metrics of a job that matches no node at all are empty.
    """
    for evaluation in sorted(evaluations, key=lambda e: e.get("CreateIndex", 0), reverse=True):
        failed = evaluation.get("FailedTGAllocs") or {}
        for group, metric in failed.items():
            return _describe_metric(group, metric, memory_mb, placement)
        if evaluation.get("Status") == "failed":
            return (
                f"the scheduler failed to evaluate the job: {evaluation.get('StatusDescription')}"
            )
    return None


def _describe_metric(group: str, metric: dict, memory_mb: int | None, placement: str | None) -> str:
    evaluated = metric.get("NodesEvaluated", 0)
    reasons = []
    if evaluated == 0:
        asked = f" ({placement})" if placement else ""
        reasons.append(
            f"no ready client node is in the requested datacenters and node pool{asked}; "
            "check `datacenters`, `node_pool` and `region`"
        )
    for constraint, count in sorted((metric.get("ConstraintFiltered") or {}).items()):
        if constraint.startswith("missing drivers"):
            reasons.append(f"{count} of {evaluated} node(s) lack a healthy driver for the task")
        elif constraint.startswith("missing devices") or "device" in constraint:
            reasons.append(
                f"{count} of {evaluated} node(s) lack the requested device ({constraint})"
            )
        else:
            reasons.append(
                f"{count} of {evaluated} node(s) were filtered out by constraint `{constraint}`"
            )
    for dimension, count in sorted((metric.get("DimensionExhausted") or {}).items()):
        hint = ""
        if dimension == "memory" and memory_mb:
            hint = f" (requested {memory_mb} MB)"
        reasons.append(f"{count} node(s) do not have enough free {dimension}{hint}")
    if metric.get("NodesExhausted") and not metric.get("DimensionExhausted"):
        reasons.append(f"{metric['NodesExhausted']} node(s) are out of resources")
    for quota in metric.get("QuotaExhausted") or []:
        reasons.append(f"quota exhausted: {quota}")
    if not reasons:
        reasons.append(f"{evaluated} node(s) evaluated, none could run it")
    return f"task group '{group}' cannot be placed: " + "; ".join(reasons) + "."


def _signal_name(number: int) -> str:
    try:
        return f"{signals.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


_PULL_FAILURE_RE = re.compile(r"Failed to pull `([^`]+)`: (.*)", re.DOTALL)
# Docker's words for each kind of pull failure (registry API v2 error codes, and
# the Go network errors the engine passes on).
_DENIED_WORDS = ("unauthorized", "authentication required", "no basic auth credentials", "denied")
_MISSING_WORDS = ("manifest unknown", "not found", "name unknown", "repository does not exist")
_UNREACHABLE_WORDS = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "timeout",
    "deadline exceeded",
    "network is unreachable",
    "connection reset",
    "eof",
)
_TLS_WORDS = ("x509", "certificate", "tls:")


@dataclass(frozen=True)
class PullFailure:
    """Why an image could not be pulled, in words, and whether retrying can help."""

    message: str
    permanent: bool


def registry_of(image: str) -> str:
    """The registry an image reference names (Docker Hub's when it names none)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def describe_pull_failure(text: str, node: str | None) -> PullFailure | None:
    """A docker image pull failure: the image, the registry, the node, Docker's
    reason and the fix for its kind (credentials, a missing tag, an unreachable or
    untrusted registry)."""
    match = _PULL_FAILURE_RE.search(text)
    if not match:
        return None
    image, reason = match.groups()
    reason = reason.strip()
    registry = registry_of(image)
    latest = " (a `latest` or untagged image is pulled every time)" if _is_latest(image) else ""
    words = reason.lower()
    permanent = True
    if any(word in words for word in _MISSING_WORDS):
        fix = (
            f"The registry {registry} has no such image or tag: check the step's `image` "
            "(name and tag, as pushed)"
        )
    elif any(word in words for word in _DENIED_WORDS):
        fix = (
            f"The registry {registry} refused the credentials: set `registry_auth` to the Nomad "
            "Variable whose items `registry_username` and `registry_password` it accepts, or "
            "correct those items (without them the node's own credentials are used); "
            "`python flow.py nomad doctor` checks the Variable (docs/docker.md)"
        )
    elif any(word in words for word in _TLS_WORDS):
        fix = (
            f"The node's Docker engine does not trust the TLS certificate of {registry}: "
            f"install its CA as /etc/docker/certs.d/{registry}/ca.crt on the node"
        )
    elif any(word in words for word in _UNREACHABLE_WORDS):
        permanent = False
        fix = (
            f"Node {node} could not reach the registry {registry}: check that it is up and "
            "reachable from the node"
        )
    else:
        permanent = False
        fix = (
            "Check the image name and tag, that the node can reach the registry, and the "
            "registry credentials (`registry_auth`, docs/docker.md)"
        )
    return PullFailure(
        f"the docker image `{image}` could not be pulled on node {node}{latest}: {reason}. {fix}",
        permanent,
    )


_MOUNT_REFUSAL_RE = re.compile(r"volumes are not enabled; cannot mount host paths: \"([^\"]*)\"")


def describe_mount_refusal(text: str, node: str | None) -> str | None:
    """The docker plugin refused a bind mount: what the node must allow, or what the
    step must stop mounting (``doctor`` finds this before a run)."""
    match = _MOUNT_REFUSAL_RE.search(text)
    if not match:
        return None
    path = match.group(1).split(":")[0]
    return (
        f"the docker plugin on node {node} does not allow bind mounts, and the step mounts "
        f'{path}: set `volumes {{ enabled = true }}` in the node\'s `plugin "docker"` '
        "config, or drop the mount (the step's `volumes`, `package_cache`, a local "
        "datastore). `python flow.py nomad doctor` checks every node for this"
    )


def _fatal_event_message(event: dict, text: str, node: str | None) -> tuple[str, bool]:
    """A fatal task event in words, and whether another attempt would fail the same way."""
    refusal = describe_mount_refusal(text, node)
    if refusal:
        return refusal, True
    pull = describe_pull_failure(text, node)
    if pull:
        return pull.message, pull.permanent
    return f"{event.get('Type')}: {text}", False


def _is_latest(image: str) -> bool:
    name = image.rsplit("/", 1)[-1]
    return "@" not in name and (":" not in name or name.endswith(":latest"))


# bash ("bash: line 1: uv: command not found", "bash: /opt/x: No such file or
# directory") and dash ("sh: 1: uv: not found") name the command this way.
_NOT_FOUND_RE = re.compile(
    r"^\S+: (?:(?:line )?\d+: )?(\S+): (?:command not found|not found|No such file or directory)$"
)
_NOT_FOUND_FIX = (
    "install it on the node (raw_exec, exec) or in the image (docker), or put it on the "
    "task's PATH (the step's `env` setting or @environment); another attempt would fail "
    "the same way"
)


def describe_command_not_found(stderr_lines: list[str], node: str | None) -> str:
    """Why a task exited with ``COMMAND_NOT_FOUND``, from the end of its stderr.

    The step, or the bootstrap before it, ran a command the node does not have: not
    a transient error, so the verdict names the command and where to provide it
    (the shell's line says which, when it is in ``stderr_lines``).
    """
    for line in reversed(stderr_lines):
        match = _NOT_FOUND_RE.match(line.strip())
        if match:
            return (
                f"the task exited with code {COMMAND_NOT_FOUND}: `{match.group(1)}` was not "
                f"found on node {node} ({line.strip()}); {_NOT_FOUND_FIX}"
            )
    return (
        f"the task exited with code {COMMAND_NOT_FOUND}: a command it runs was not found "
        f"on node {node}; {_NOT_FOUND_FIX}"
    )


def outcome_from_allocation(alloc: dict, task_name: str, memory_mb: int | None) -> TaskOutcome:
    """Exit code, signal and OOM state from the task's events, in words for the user."""
    status = alloc.get("ClientStatus", "unknown")
    task_state = (alloc.get("TaskStates") or {}).get(task_name) or {}
    exit_code = signal = None
    oom = False
    permanent = False
    messages = []
    for event in task_state.get("Events") or []:
        details = event.get("Details") or {}
        if event.get("Type") == "Terminated":
            exit_code = int(details.get("exit_code", event.get("ExitCode", 0)) or 0)
            signal = int(details.get("signal", event.get("Signal", 0)) or 0) or None
            oom = details.get("oom_killed") == "true"
        if event.get("Type") in FATAL_EVENTS:
            text = event.get("DisplayMessage") or event.get("DriverError") or event.get("Message")
            if text:
                message, permanent_cause = _fatal_event_message(event, text, alloc.get("NodeName"))
                permanent = permanent or permanent_cause
                messages.append(message)
    desired = alloc.get("DesiredStatus", "run")
    if status not in ("lost", "unknown") and desired in ("stop", "evict"):
        # Nomad stopped the allocation, so its exit code is not the task's verdict.
        reason = alloc.get("DesiredDescription") or "no reason given"
        if "migrat" in reason:
            status = "migrated"
            message = (
                f"Nomad stopped the task to migrate it off node {alloc.get('NodeName')} "
                f"({reason}; the node is draining)"
            )
        elif desired == "evict":
            status = "migrated"
            message = f"Nomad evicted the task from node {alloc.get('NodeName')} ({reason})"
        else:
            status = "stopped"
            message = f"the Nomad job was stopped from outside ({reason})"
    elif oom:
        message = (
            f"the task was killed for running out of memory (limit {memory_mb} MB); "
            "raise `memory` in @nomad or @resources"
        )
    elif status in ("lost", "unknown"):
        message = (
            f"the allocation is {status} (its node {alloc.get('NodeName')} went away or "
            "stopped heartbeating); the job was stopped so that no duplicate attempt can run"
        )
    elif signal == SIGKILL or (signal is None and exit_code == 128 + SIGKILL):
        message = (
            f"the task was killed by {_signal_name(SIGKILL)}. Nomad did not report an OOM "
            "kill, but SIGKILL is how the kernel ends a task that goes over its memory "
            f"limit ({memory_mb} MB); if the step needs more, raise `memory`"
        )
    elif signal:
        message = f"the task was killed by {_signal_name(signal)}"
    elif exit_code:
        message = f"the task exited with code {exit_code}"
    else:
        message = ""
    # A missing command: the launcher's verdict names it (describe_command_not_found).
    permanent = permanent or exit_code == COMMAND_NOT_FOUND
    if messages and status != "complete":
        message = "; ".join(filter(None, [message, *messages]))
    return TaskOutcome(
        status=status,
        exit_code=exit_code,
        signal=signal,
        oom_killed=oom,
        message=message,
        alloc_id=alloc.get("ID"),
        node_name=alloc.get("NodeName"),
        permanent=permanent,
    )
