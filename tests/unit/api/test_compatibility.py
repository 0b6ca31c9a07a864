"""Nomad's version at first contact: an agent older than 1.6 is refused, naming both
versions.  The old agent is a stdlib HTTP server answering as Nomad 1.5.6 does
(no Nomad older than 1.6.1 can be built here); the real 1.6.1 agents of the
integration tests pass (tests/integration/test_doctor.py)."""

from __future__ import annotations

import pytest

from metaflow_nomad.api import preflight
from metaflow_nomad.api.compatibility import parse_version, too_old_message
from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.errors import NomadPreflightError
from tests.support.http_stub import http_stub

ANSWERS = {
    "/v1/status/leader": "127.0.0.1:4647",
    "/v1/agent/self": {"config": {"Version": {"Version": "1.5.6", "VersionPrerelease": ""}}},
}


def _as_nomad_1_5(request):
    path = request.path.split("?")[0]
    return (200, ANSWERS[path]) if path in ANSWERS else (404, {})


@pytest.fixture()
def old_nomad():
    with http_stub(_as_nomad_1_5) as stub:
        yield stub.url


@pytest.mark.parametrize(
    ("text", "version"),
    [("1.6.1", (1, 6, 1)), ("1.5.6+ent", (1, 5, 6)), ("v1.7.0-beta.1", (1, 7, 0)), ("dev", None)],
)
def test_versions_read_as_nomad_writes_them(text, version):
    assert parse_version(text) == version


def test_only_versions_before_1_6_are_refused():
    assert too_old_message("1.6.0", "http://a") is None
    assert too_old_message("1.10.2", "http://a") is None
    assert too_old_message("unknown", "http://a") is None
    assert too_old_message("1.5.6", "http://a") == (
        "the Nomad agent at http://a is version 1.5.6, older than 1.6.0, the oldest "
        "metaflow-nomad supports (node pools and the Task API came in Nomad 1.6): upgrade "
        "the cluster to Nomad 1.6.0 or newer"
    )


def test_a_run_refuses_an_old_agent_at_first_contact(old_nomad):
    with pytest.raises(NomadPreflightError) as refused:
        preflight.check_cluster_for_run(
            ConnectionSettings(address=old_nomad), None, None, "python flow.py nomad doctor"
        )
    assert str(refused.value).startswith(
        f"The Nomad agent at {old_nomad} is version 1.5.6, older than 1.6.0, the oldest "
        "metaflow-nomad supports"
    )
