"""The task's watch of its run's lease, on a fake clock: it counts from the last
change it saw, so the launcher's and the node's wall clocks need not agree."""

import json

from metaflow_nomad.model import LEASE_ENV, LEASE_TIMEOUT_ENV
from metaflow_nomad.task.lease_watch import LeaseWatch, expired_lease


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watch(leases: list, clock: Clock, expired: list) -> LeaseWatch:
    return LeaseWatch(lambda: leases[-1], 60.0, expired.append, clock=clock)


def test_a_renewed_lease_keeps_the_step_running():
    leases, clock, expired = [b"1"], Clock(), []
    lease_watch = watch(leases, clock, expired)
    for renewal in range(2, 12):
        clock.now += 10
        leases.append(str(renewal).encode())
        assert lease_watch.check() is False
    assert expired == []


def test_a_lease_unchanged_for_the_timeout_stops_the_step_once():
    leases, clock, expired = [b"1"], Clock(), []
    lease_watch = watch(leases, clock, expired)
    assert lease_watch.check() is False  # the first look sees the lease
    clock.now += 59
    assert lease_watch.check() is False
    clock.now += 1
    assert lease_watch.check() is True
    assert expired == [60.0]


def test_a_blip_shorter_than_the_timeout_changes_nothing():
    leases, clock, expired = [b"1"], Clock(), []
    lease_watch = watch(leases, clock, expired)
    leases.append(None)  # the datastore cannot be read for a while
    clock.now += 50
    assert lease_watch.check() is False
    leases.append(b"7")  # the launcher renewed meanwhile
    clock.now += 5
    assert lease_watch.check() is False
    clock.now += 50
    assert lease_watch.check() is False
    assert expired == []


def test_an_unreadable_lease_for_the_whole_timeout_counts_as_gone():
    leases, clock, expired = [b"1"], Clock(), []
    lease_watch = watch(leases, clock, expired)
    lease_watch.check()
    leases.append(None)
    clock.now += 61
    assert lease_watch.check() is True


def test_the_last_look_before_success_compares_the_renewal_time(tmp_path):
    lease = tmp_path / "_nomad_lease"
    lease.write_text(json.dumps({"sequence": 3, "renewed_at": 5000.0}))
    environ = {LEASE_ENV: str(lease), LEASE_TIMEOUT_ENV: "60.0"}
    assert expired_lease(environ, now=lambda: 5059.0) is None
    assert expired_lease(environ, now=lambda: 5075.0) == 75.0
    assert expired_lease({}, now=lambda: 9999.0) is None
