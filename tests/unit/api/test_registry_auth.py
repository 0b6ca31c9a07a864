"""doctor's registry credentials line: the Variable a docker step's tasks pull with,
read through a stub of the one client call; no line ever shows a credential."""

from __future__ import annotations

import pytest

from metaflow_nomad.api.registry_auth import check_registry_auth
from metaflow_nomad.errors import NomadForbidden, NomadNotFound
from tests.support.variables import Variables

IMAGE = "registry.example:5000/team/train:1.2"
PASSWORD = "pa55-word-never-shown"


def _check(answer):
    client = Variables(answer)
    check = check_registry_auth(client, "nomad/jobs", "team-a", IMAGE)
    assert client.asked == [("var/nomad/jobs", {"namespace": "team-a"})]
    assert PASSWORD not in check.line() and "ci-bot" not in check.line()
    return check


def test_both_items_in_the_variable_pass():
    check = _check({"Items": {"registry_username": "ci-bot", "registry_password": PASSWORD}})
    assert check.line() == (
        f"  ok    registry credentials: tasks pull {IMAGE} with registry_username and "
        "registry_password from the Nomad Variable nomad/jobs in namespace 'team-a'"
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            NomadNotFound("variable not found", "GET /v1/var/nomad/jobs", 404),
            "there is no Nomad Variable nomad/jobs in namespace 'team-a': tasks would pull",
        ),
        ({"Items": {"registry_username": "ci-bot"}}, "has no registry_password: tasks would"),
        ({"Items": {"AWS_ACCESS_KEY_ID": "x"}}, "has no registry_username or registry_password"),
    ],
)
def test_a_missing_variable_or_item_fails_with_the_command_to_store_it(answer, expected):
    check = _check(answer)
    assert check.failed and expected in check.detail
    assert (
        "nomad var put -namespace team-a nomad/jobs registry_username=<user> "
        "registry_password=<password>" in check.detail
    )


def test_a_token_that_may_not_read_it_is_a_warning_pointing_at_the_probe():
    denied = NomadForbidden("Permission denied", "GET /v1/var/nomad/jobs", 403, explanation="")
    check = _check(denied)
    assert check.status == "warn" and "doctor --probe pulls the image" in check.detail
