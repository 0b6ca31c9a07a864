"""The run's render inputs: tasks get TLS material only when the launcher itself
reaches the cluster over mutual TLS and a task TLS directory is configured, and
read the metadata service's headers from a Nomad Variable only when the launcher
sends some."""

import pytest

from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.errors import NomadException
from metaflow_nomad.plugin.render_inputs import render_inputs

MTLS = ConnectionSettings(address="https://nomad.example:4646", client_cert="/c.pem")


@pytest.fixture
def task_tls_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("METAFLOW_NOMAD_TASK_TLS_DIR", "/etc/nomad.d/tls")
    monkeypatch.setattr("sys.argv", [str(tmp_path / "flow.py")])


@pytest.mark.parametrize(
    ("connection", "mtls"),
    [
        (MTLS, True),
        (ConnectionSettings(address="https://nomad.example:4646"), False),  # TLS, no client cert
        (ConnectionSettings(address="http://127.0.0.1:4646", client_cert="/c.pem"), False),
    ],
)
def test_tls_material_only_over_mutual_tls(task_tls_dir, connection, mtls):
    tls = render_inputs(connection).tls_for("docker")
    assert (tls is not None) == mtls
    if mtls:
        assert (tls.address, tls.source_dir) == ("https://nomad.example:4646", "/etc/nomad.d/tls")


def test_values_replace_the_project_files(task_tls_dir, tmp_path):
    (tmp_path / "metaflow_nomad.yaml").write_text("values:\n  team: vision\n")
    assert render_inputs(MTLS).values == {"team": "vision"}
    assert render_inputs(MTLS, {"team": "nlp"}).values == {"team": "nlp"}


@pytest.fixture
def service_headers(monkeypatch):
    from metaflow import metaflow_config as mc

    monkeypatch.setattr(mc, "SERVICE_HEADERS", {"x-api-key": "k"})


def test_jobs_read_the_service_headers_only_when_the_launcher_sends_some(task_tls_dir, monkeypatch):
    from metaflow import metaflow_config as mc

    monkeypatch.setattr(mc, "SERVICE_HEADERS", {})
    assert render_inputs(MTLS).service_auth_variable is None
    monkeypatch.setattr(mc, "SERVICE_HEADERS", {"x-api-key": "k"})
    assert render_inputs(MTLS).service_auth_variable == "nomad/jobs"
    monkeypatch.setenv("METAFLOW_NOMAD_SERVICE_AUTH_VARIABLE", "team-a/metaflow")
    assert render_inputs(MTLS).service_auth_variable == "team-a/metaflow"


def test_a_variable_path_nomad_would_refuse_names_the_setting(
    task_tls_dir, service_headers, monkeypatch
):
    monkeypatch.setenv("METAFLOW_NOMAD_SERVICE_AUTH_VARIABLE", 'nomad/jobs"x')
    with pytest.raises(NomadException) as error:
        render_inputs(MTLS)
    assert str(error.value) == (
        "METAFLOW_NOMAD_SERVICE_AUTH_VARIABLE is set to 'nomad/jobs\"x': a Nomad Variable "
        "path: 1 to 128 letters, digits, '-', '_', '~' or '/'."
    )
