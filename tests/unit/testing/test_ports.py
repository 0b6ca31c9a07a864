import socket
from pathlib import Path

from metaflow_nomad.testing.ports import PORT_BAND, WHOLE_BAND, free_port, worker_band


def _ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def test_ports_come_from_outside_the_range_outgoing_connections_take_theirs_from():
    ephemeral = _ephemeral_range()
    assert PORT_BAND.stop <= ephemeral.start
    assert PORT_BAND.stop <= 20000, "Nomad hands out dynamic task ports from 20000"
    ports = [free_port() for _ in range(20)]
    assert all(port in PORT_BAND for port in ports)


def test_each_call_gives_a_different_port_that_can_be_bound():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_port_something_listens_on_is_never_given():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert taken not in {free_port() for _ in range(200)}


def test_xdist_workers_take_disjoint_slices_of_the_band():
    slices = [worker_band(f"gw{i}", "2") for i in range(2)]
    assert not set(slices[0]) & set(slices[1])
    assert all(len(s) == len(WHOLE_BAND) // 2 for s in slices)
    assert all(s.start >= WHOLE_BAND.start and s.stop <= WHOLE_BAND.stop for s in slices)
    assert worker_band(None, None) == WHOLE_BAND
