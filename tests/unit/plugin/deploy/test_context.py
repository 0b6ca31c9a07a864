"""The runner's settings: a bad --runner-* value is named as the option, built from
the problem's data, and every bad one is reported at once."""

import os

import pytest

from metaflow_nomad.errors import NomadException
from metaflow_nomad.plugin.deploy.context import runner_settings


@pytest.fixture(autouse=True)
def no_configuration(monkeypatch, tmp_path):
    for name in [n for n in os.environ if n.startswith("METAFLOW_NOMAD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr("sys.argv", [str(tmp_path / "flow.py")])


def test_one_bad_runner_option_is_named_as_the_option():
    with pytest.raises(NomadException) as info:
        runner_settings(cpu="lots")
    assert str(info.value).startswith("--runner-cpu = 'lots' is not valid. Expected a positive")


def test_every_bad_runner_option_is_reported_at_once():
    with pytest.raises(NomadException) as info:
        runner_settings(cpu="lots", memory=1)
    lines = str(info.value).splitlines()
    assert any(line.startswith("--runner-cpu = 'lots' is not valid.") for line in lines)
    assert any(line.startswith("--runner-memory = 1 is not valid.") for line in lines)
