"""Events racing on a real agent: two publishers deliver the last two events of a
deployment at the same moment, and exactly one run starts.

The deployment is a parameterized job with a runner's Meta (what `create` registers,
minus the flow): nothing in this test needs a flow to run, only Nomad's Variables
and dispatch.
"""

from __future__ import annotations

import json

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.deploy.event_dispatch import deliver, pending_path
from metaflow_nomad.deploy.runner_job import DISPATCH, META_RUNNER_KIND
from metaflow_nomad.deploy.triggers import TRIGGERS_META, Trigger, triggers_meta
from metaflow_nomad.model import META_DEPLOYMENT

pytestmark = pytest.mark.integration

DEPLOYMENT = "race-two-events"


def _deployment_job() -> dict:
    meta = {
        META_RUNNER_KIND: DISPATCH,
        META_DEPLOYMENT: DEPLOYMENT,
        **triggers_meta([Trigger("left"), Trigger("right")]),
    }
    return {
        "ID": DEPLOYMENT,
        "Name": DEPLOYMENT,
        "Type": "batch",
        "Datacenters": ["dc1"],
        "Meta": meta,
        "ParameterizedJob": {"Payload": "forbidden", "MetaOptional": [TRIGGERS_META]},
        "TaskGroups": [
            {
                "Name": "runner",
                "Count": 1,
                "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                "Tasks": [
                    {
                        "Name": "runner",
                        "Driver": "raw_exec",
                        "Config": {"command": "/bin/true"},
                        "Resources": {"CPU": 20, "MemoryMB": 16},
                    }
                ],
            }
        ],
    }


def _event(name: str) -> dict:
    return {"name": name, "id": f"{name}-1", "timestamp": 1_900_000_000, "type": "event"}


class PublisherOvertaken(NomadClient):
    """A real client whose first Variable write waits until another publisher has
    delivered its whole event: the interleaving where a blind write would lose it."""

    def __init__(self, settings, overtake):
        super().__init__(settings)
        self._overtake = overtake

    def put_variable(self, *args, **kwargs):
        if self._overtake is not None:
            overtake, self._overtake = self._overtake, None
            overtake()
        return super().put_variable(*args, **kwargs)


@pytest.fixture()
def deployment(nomad_agent):
    client = NomadClient(nomad_agent.connection_settings())
    client.register(_deployment_job())
    yield client
    client.deregister(DEPLOYMENT, purge=True)
    for child in client.list_jobs(prefix=f"{DEPLOYMENT}/"):
        client.deregister(child["ID"], purge=True)
    client.delete_variable(pending_path(DEPLOYMENT), None)


def test_two_publishers_racing_on_the_last_events_start_exactly_one_run(deployment):
    results = {}

    def right_first():
        results["right"] = deliver(deployment, _event("right"), None, clock=lambda: 1_900_000_001)

    left = PublisherOvertaken(deployment.settings, right_first)
    results["left"] = deliver(left, _event("left"), None, clock=lambda: 1_900_000_002)

    [right], [left_delivery] = results["right"], results["left"]
    assert right.run_id is None and right.missing == ("left",)
    assert left_delivery.run_id is not None, "the overtaken publisher lost the other event"
    children = [job for job in deployment.list_jobs(prefix=f"{DEPLOYMENT}/") if job.get("ParentID")]
    assert len(children) == 1
    assert deployment.variable(pending_path(DEPLOYMENT), None) is None
    started = deployment.job(children[0]["ID"])
    assert sorted(e["name"] for e in _events_of(started)) == ["left", "right"]


def _events_of(job: dict) -> list[dict]:
    return json.loads(job["Meta"][TRIGGERS_META])
