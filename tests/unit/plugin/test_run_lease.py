"""The launcher's side of the run's lease, on the local datastore's real storage."""

import json

import pytest
from metaflow.plugins.datastores.local_storage import LocalStorage

from metaflow_nomad.errors import NomadException
from metaflow_nomad.plugin.run_lease import RunLease, lease_timeout


def test_each_renewal_changes_the_lease(tmp_path):
    storage = LocalStorage(str(tmp_path))
    lease = RunLease(storage, "Flow/7/_nomad_lease", 30.0, clock=lambda: 123.0)
    assert lease.renew() and lease.renew()
    record = json.loads((tmp_path / "Flow" / "7" / "_nomad_lease").read_text())
    assert (record["sequence"], record["renewed_at"], record["timeout_s"]) == (2, 123.0, 30.0)
    assert lease.task_env() == {
        "METAFLOW_NOMAD_LEASE": str(tmp_path / "Flow" / "7" / "_nomad_lease"),
        "METAFLOW_NOMAD_LEASE_TIMEOUT_S": "30.0",
    }


def test_a_failed_renewal_is_said_once_and_retried(tmp_path, capsys):
    blocker = tmp_path / "Flow"
    blocker.write_text("a file where the run's directory should be")
    lease = RunLease(LocalStorage(str(tmp_path)), "Flow/7/_nomad_lease", 30.0)
    assert lease.renew() is False
    assert lease.renew() is False
    assert capsys.readouterr().err.count("could not renew the run's lease") == 1
    blocker.unlink()
    assert lease.renew() is True


@pytest.mark.parametrize("value", ["0", "4", "soon", "-60"])
def test_a_bad_timeout_says_what_is_expected(value):
    with pytest.raises(NomadException, match="METAFLOW_NOMAD_LEASE_TIMEOUT"):
        lease_timeout({"NOMAD_LEASE_TIMEOUT": value})
    assert lease_timeout({}) == 60.0
