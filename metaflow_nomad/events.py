"""Publish an event that starts the deployed flows waiting on it (``@trigger``).

Shaped like Metaflow's ``ArgoEvent``, and usable from a step, a laptop or CI::

    from metaflow_nomad.events import NomadEvent

    NomadEvent("data_ready").publish({"table": "sales", "rows": 1200})

The event goes to the deployments in one Nomad namespace: ``namespace=``, else
the one the connection settings name (``METAFLOW_NOMAD_NAMESPACE``,
``NOMAD_NAMESPACE``), as for every other command.  On a cluster with ACLs the
publisher's token needs, in that namespace, ``list-jobs`` and ``read-job`` (to
find the deployments), ``dispatch-job`` (to start them) and, for deployments
waiting on several events, read and write on the Variables under
``metaflow/triggers/`` (see docs/deploy.md).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

from metaflow_nomad.deploy.event_dispatch import Delivery, deliver
from metaflow_nomad.deploy.triggers import EVENT
from metaflow_nomad.errors import NomadException


class NomadEvent:
    """A named event with a payload, delivered to Nomad deployments by ``publish``."""

    def __init__(self, name: str, payload: Mapping[str, Any] | None = None):
        self.name = name
        self._payload = dict(payload or {})

    def add_to_payload(self, key: str, value: Any) -> NomadEvent:
        self._payload[key] = value
        return self

    def publish(
        self,
        payload: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        client=None,
        kind: str = EVENT,
    ) -> list[Delivery]:
        """Start every deployment waiting on this event now (or record the event for
        one that waits on several); returns what happened to each deployment."""
        from metaflow_nomad.api.client import default_client

        event = self.as_event({**self._payload, **(payload or {})}, kind)
        client = client or default_client()
        return deliver(client, event, namespace or client.settings.namespace)

    def safe_publish(
        self, payload: Mapping[str, Any] | None = None, ignore_errors: bool = True, **options
    ) -> list[Delivery]:
        """``publish``, reporting a failure on stderr instead of raising it (unless
        ``ignore_errors`` is False), as ``ArgoEvent.safe_publish`` does."""
        try:
            return self.publish(payload, **options)
        except NomadException as failure:
            if not ignore_errors:
                raise
            print(f"Could not publish the event {self.name} to Nomad: {failure}", file=sys.stderr)
            return []

    def as_event(self, payload: Mapping[str, Any], kind: str = EVENT) -> dict:
        """The event as delivered: a fresh id and the time, as Argo's events carry."""
        event_id = str(payload.get("id") or uuid.uuid4())
        timestamp = int(time.time())
        return {
            "name": self.name,
            "id": event_id,
            "timestamp": timestamp,
            "type": kind,
            "payload": {**payload, "id": event_id, "timestamp": timestamp},
        }
