"""The run's render inputs: tasks get TLS material only when the launcher itself
reaches the cluster over mutual TLS and a task TLS directory is configured."""

import pytest

from metaflow_nomad.api.connection import ConnectionSettings
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
