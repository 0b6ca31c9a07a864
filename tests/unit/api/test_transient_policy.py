"""The client's retry classification and budget, and that settings never show a secret.

What Nomad actually answers is covered against real agents in
tests/integration/test_faults.py and test_security.py; these pin the policy table.
"""

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.diagnosis import is_transient
from metaflow_nomad.config import connection_config


@pytest.mark.parametrize(
    "status, text, transient",
    [
        (None, "connection refused", True),
        (500, "No cluster leader", True),
        (502, "bad gateway", True),
        (503, "", True),
        (504, "", True),
        (429, "rate limited", True),
        (500, "1 error occurred:\n\t* Task group g validation failed", False),
        (500, 'job "x" is in nonexistent namespace "nope"', False),
        (500, "No path to region", False),
        (400, "Failed to parse job", False),
        (403, "Permission denied", False),
        (404, "job not found", False),
    ],
)
def test_transient_or_permanent(status, text, transient):
    assert is_transient(status, text) is transient


def test_default_retry_budget_rides_out_a_20s_outage_and_is_bounded():
    client = NomadClient(ConnectionSettings(), max_attempts=6)
    assert client.min_retry_wait() >= 20
    assert client.max_backoff <= 12 and client.min_retry_wait() <= 27


def test_settings_repr_hides_the_token():
    token = "a" * 8 + "-secret-token-value"
    settings = ConnectionSettings(address="https://n:4646", token=token, client_key="/k.pem")
    assert token not in repr(settings) and token not in str(settings)


def test_metaflow_names_win_over_standard_nomad_names(tmp_path):
    env = {
        "METAFLOW_HOME": str(tmp_path),
        "NOMAD_ADDR": "https://standard:4646",
        "NOMAD_TLS_SERVER_NAME": "server.global.nomad",
        "NOMAD_SKIP_VERIFY": "true",
        "METAFLOW_NOMAD_ADDRESS": "https://metaflow:4646",
    }
    settings = ConnectionSettings.from_config(connection_config(env))
    assert settings.address == "https://metaflow:4646"
    assert settings.tls_server_name == "server.global.nomad"
    assert settings.skip_verify is True
    assert ConnectionSettings.from_config(connection_config({})).skip_verify is False
