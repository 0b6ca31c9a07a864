"""What the test cluster's agents are told, without starting any of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from metaflow_nomad.testing.cluster import DYNAMIC_PORTS, ClusterOptions, ProductionCluster
from metaflow_nomad.testing.registry import RegistryCredentials, htpasswd_line


@pytest.fixture()
def cluster() -> Iterator[ProductionCluster]:
    unstarted = ProductionCluster(ClusterOptions(), binary="nomad")
    yield unstarted
    unstarted.stop()
    assert not unstarted.dir.exists()


def test_servers_expect_each_other_and_join_on_their_serf_ports(cluster):
    serf = [f'"127.0.0.1:{s.ports["serf"]}"' for s in cluster.servers.values()]
    for server in cluster.servers.values():
        config = server._config()
        assert "bootstrap_expect       = 3" in config
        assert f"retry_join     = [{', '.join(serf)}]" in config
        assert 'heartbeat_grace        = "5s"' in config
        assert 'min_heartbeat_ttl      = "5s"' in config
        assert "client {" not in config
        assert f'cert_file              = "{cluster.pki.directory}/server-global.pem"' in config


def test_clients_know_every_server_and_have_ports_of_their_own(cluster):
    rpc = ", ".join(f'"127.0.0.1:{s.ports["rpc"]}"' for s in cluster.servers.values())
    ranges = []
    for name, client in cluster.clients.items():
        config = client._config()
        assert f"servers          = [{rpc}]" in config
        assert f'name       = "{name}"' in config
        assert f'datacenter = "{cluster.options.clients[name]}"' in config
        assert "server {" not in config
        assert f'cert_file              = "{cluster.pki.directory}/client-global.pem"' in config
        ranges.append(range(*cluster.dynamic_ports(name)))
    assert all(r.start in DYNAMIC_PORTS and r.stop in DYNAMIC_PORTS for r in ranges)
    assert all(a.stop < b.start for a, b in zip(ranges, ranges[1:]))
    data_dirs = {c.data_dir for c in cluster.members}
    assert len(data_dirs) == 6
    assert all(d.parent == cluster.dir for d in data_dirs)


def test_the_htpasswd_line_is_a_bcrypt_hash_of_the_password():
    import bcrypt

    user, hashed = htpasswd_line(RegistryCredentials("someone", "s3cret")).split(":", 1)
    assert user == "someone"
    assert hashed.startswith("$2")
    assert bcrypt.checkpw(b"s3cret", hashed.encode())
    assert not bcrypt.checkpw(b"guess", hashed.encode())
