"""First contact: a cheap check of the cluster before anything is sent to it.

A run checks once, before its first ``@nomad`` task, that the cluster answers,
that TLS and the token are right and that the token may submit and read jobs in
the step's namespace (and node pool, which must exist).  Commands that talk to
Nomad once (``nomad list``, ``nomad kill``, ``render``) check that it answers.
Either way an unreachable address fails in well under two seconds, with the
address, where it came from and what to set: the client's retry budget (about
25 s) is for a cluster that answered before and then blips, not for one that was
never there.
"""

from __future__ import annotations

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.doctor import (
    Check,
    check_capabilities,
    check_connection,
    check_token,
    check_version,
)
from metaflow_nomad.api.task_api import is_unix_address
from metaflow_nomad.errors import NomadClientError, NomadPreflightError, sentence

# Loopback and LAN connects take milliseconds; a silent address must not cost more.
CONNECT_TIMEOUT_S = 1.5
# Once connected, an answer may take longer (a busy leader): that is not "unreachable".
READ_TIMEOUT_S = 10.0
# What a run needs in its namespace, besides parse (which submit-job implies).
RUN_CAPABILITIES = ("submit jobs", "read jobs")

_passed: set[tuple] = set()


def fast_client(settings: ConnectionSettings) -> NomadClient:
    """A client that tries once and gives up on a connect after CONNECT_TIMEOUT_S."""
    return NomadClient(
        settings, timeout=READ_TIMEOUT_S, max_attempts=1, connect_timeout=CONNECT_TIMEOUT_S
    )


def check_cluster_for_run(
    settings: ConnectionSettings,
    namespace: str | None,
    region: str | None,
    doctor_command: str,
    node_pool: str | None = None,
) -> None:
    """Raise ``NomadPreflightError`` unless the cluster can take this run's jobs.

    Checked once per process and (settings, namespace, region, node pool): the
    runtime calls this for every ``@nomad`` step.  Nothing is checked through a
    task's Task API socket (a deployed run's runner): a workload identity cannot
    look itself up (Nomad 1.6 answers "UUID must be 36 characters"), and
    ``nomad-workflows create`` checked the cluster with the user's token.
    """
    if is_unix_address(settings.address):
        return
    key = (settings, namespace or settings.namespace, region, node_pool)
    if key in _passed:
        return
    client = fast_client(settings)
    failure = _first_failure(check_connection(client))
    if failure is None and settings.token:
        failure = _first_failure([check_token(client)])
    if failure is None:
        failure = _first_failure([check_version(client)])
    if failure is None:
        failure = _first_failure(
            check_capabilities(
                client, namespace or settings.namespace, region, RUN_CAPABILITIES, node_pool
            )
        )
    if failure is not None:
        raise NomadPreflightError(
            f"{_sentence(failure)}\nFor a full check of the cluster and this flow's settings, "
            f"run `{doctor_command}`."
        )
    _passed.add(key)


def check_reachable(settings: ConnectionSettings) -> None:
    """Raise at once, with what to set, when nothing (or no TLS peer) answers."""
    try:
        fast_client(settings).leader()
    except NomadClientError as exc:
        raise exc.without_request() from None


def _first_failure(checks: list[Check]) -> Check | None:
    return next((c for c in checks if c.failed), None)


def _sentence(check: Check) -> str:
    if check.name == "address":
        return sentence(check.detail)
    if check.name in ("TLS", "token"):
        return f"{check.name}: {check.detail}"
    if check.name == "Nomad version":
        return sentence(check.detail)
    return f"Cannot {check.name}: {check.detail}"
