"""Deliver an event: start every deployment that waits on it, through Nomad alone.

Nomad has no event bus and needs none here.  The deployments waiting on an event
are the runner jobs whose Meta names it (``triggers.waiting_on_filter``); starting
one is a dispatch, whose meta carries the mapped parameters and the events
themselves.  The event's id is the dispatch's idempotency token, so a publish
retried after a lost answer does not start a second run.

A deployment that waits on several events keeps those that arrived in a Nomad
Variable of its own (``pending_path``), updated with check-and-set so that two
publishers racing on the last two events start exactly one run.  An event waits
there for at most ``PENDING_EVENT_TTL_S``; the newest event of a name replaces an
older one.  The run starts when every event has arrived, and the Variable is
emptied in the same check-and-set.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.deploy.naming import run_id_for_runner_job
from metaflow_nomad.deploy.policy import publisher_policy
from metaflow_nomad.deploy.runner_job import DISPATCH, META_RUNNER_KIND
from metaflow_nomad.deploy.triggers import (
    PENDING_PREFIX,
    TRIGGERS_META,
    Trigger,
    parameter_values,
    read_triggers,
    waiting_on_filter,
)
from metaflow_nomad.errors import NomadException, NomadForbidden
from metaflow_nomad.model import META_DEPLOYMENT

PENDING_EVENT_TTL_S = 24 * 3600
_CAS_ATTEMPTS = 20
_UNSAFE_PATH = re.compile(r"[^A-Za-z0-9_~-]")


@dataclass(frozen=True)
class Delivery:
    """What an event did to one deployment: started ``run_id``, or is kept while
    the deployment still waits for ``missing``."""

    deployment: str
    run_id: str | None
    missing: tuple[str, ...] = ()


def pending_path(deployment: str) -> str:
    """The Variable holding a deployment's arrived events (Variable paths allow
    letters, digits, '-', '_', '~' and '/')."""
    return PENDING_PREFIX + _UNSAFE_PATH.sub("_", deployment)


def deliver(
    client: NomadClient,
    event: Mapping,
    namespace: str | None,
    clock: Callable[[], float] = time.time,
) -> list[Delivery]:
    """Start (or bring closer to starting) every deployment waiting on ``event``:
    a dict with ``name``, ``id``, ``timestamp``, ``type`` and ``payload``."""
    deliveries = []
    for job in client.list_jobs(filter_expr=waiting_on_filter(event["name"]), namespace=namespace):
        meta = job.get("Meta") or {}
        if job.get("ParentID") or job.get("Stop") or meta.get(META_RUNNER_KIND) != DISPATCH:
            continue
        deployment = meta.get(META_DEPLOYMENT) or job["ID"]
        job_namespace = job.get("Namespace") or namespace
        triggers = read_triggers(meta)
        if len(triggers) == 1:
            events = [dict(event)]
        else:
            events, missing = _gather(client, deployment, job_namespace, event, triggers, clock)
            if events is None:
                deliveries.append(Delivery(deployment, None, missing))
                continue
        run_id = _start(client, job["ID"], job_namespace, triggers, events)
        deliveries.append(Delivery(deployment, run_id))
    return deliveries


def _start(
    client: NomadClient,
    job_id: str,
    namespace: str | None,
    triggers: Sequence[Trigger],
    events: Sequence[Mapping],
) -> str:
    meta = parameter_values(triggers, events)
    meta[TRIGGERS_META] = json.dumps([_recorded(e) for e in events], sort_keys=True)
    token = hashlib.sha256(",".join(str(e["id"]) for e in events).encode()).hexdigest()[:32]
    return run_id_for_runner_job(client.dispatch(job_id, meta, namespace, idempotency_token=token))


def _recorded(event: Mapping) -> dict:
    """What a run keeps of an event (``current.trigger``): not its payload."""
    return {k: event.get(k) for k in ("name", "id", "timestamp", "type")}


def _gather(
    client: NomadClient,
    deployment: str,
    namespace: str | None,
    event: Mapping,
    triggers: Sequence[Trigger],
    clock: Callable[[], float],
) -> tuple[list[dict] | None, tuple[str, ...]]:
    """Add ``event`` to the deployment's pending events: all of them (emptied from
    the Variable) once every trigger has one, else None and the names missing."""
    path = pending_path(deployment)
    wanted = [t.name for t in triggers]
    try:
        return _update_pending(client, path, namespace, event, wanted, clock)
    except NomadForbidden:
        raise _no_pending_rights(deployment, namespace) from None


def _update_pending(
    client: NomadClient,
    path: str,
    namespace: str | None,
    event: Mapping,
    wanted: Sequence[str],
    clock: Callable[[], float],
) -> tuple[list[dict] | None, tuple[str, ...]]:
    for _ in range(_CAS_ATTEMPTS):
        variable = client.variable(path, namespace)
        index = int(variable["ModifyIndex"]) if variable else 0
        pending = _fresh(variable, wanted, clock())
        pending[event["name"]] = dict(event)
        missing = tuple(name for name in wanted if name not in pending)
        if missing:
            items = {f"event{wanted.index(n)}": json.dumps(e) for n, e in pending.items()}
            if client.put_variable(path, items, namespace, cas=index):
                return None, missing
        elif variable is None or client.delete_variable(path, namespace, cas=index):
            return [pending[name] for name in wanted], ()
    raise NomadException(
        f"Could not record event {event['name']}: the Nomad Variable {path} kept changing "
        f"under {_CAS_ATTEMPTS} attempts. Publish it again."
    )


def _fresh(variable: Mapping | None, wanted: Sequence[str], now: float) -> dict[str, dict]:
    """The pending events still waited on and younger than ``PENDING_EVENT_TTL_S``."""
    pending = {}
    for text in ((variable or {}).get("Items") or {}).values():
        event = json.loads(text)
        age = now - (event.get("timestamp") or 0)
        if event.get("name") in wanted and age < PENDING_EVENT_TTL_S:
            pending[event["name"]] = event
    return pending


def forget_pending(client: NomadClient, deployment: str, namespace: str | None) -> None:
    """Drop a deployment's pending events (``delete``: nothing may start it later)."""
    try:
        if client.variable(pending_path(deployment), namespace) is not None:
            client.delete_variable(pending_path(deployment), namespace)
    except NomadForbidden:
        raise _no_pending_rights(deployment, namespace) from None


def _no_pending_rights(deployment: str, namespace: str | None) -> NomadException:
    namespace = namespace or "default"
    return NomadException(
        f"{deployment} waits on several events and keeps those that arrived in the Nomad "
        f"Variable {pending_path(deployment)}, which this token may not use in namespace "
        f"'{namespace}'. A token that publishes events (or deletes such a deployment) "
        f"needs this policy (a Nomad administrator can apply it):\n"
        f"{publisher_policy(namespace)}"
    )
