"""A run reports the problems of all its @nomad steps in one error, before the
cluster check, through the decorator's own hooks (``step_init``, ``runtime_init``)."""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import pytest
from metaflow.plugins.kubernetes.kubernetes_decorator import KubernetesDecorator

from metaflow_nomad.errors import NomadException
from metaflow_nomad.plugin.decorator import NomadDecorator

CPU = (
    "a positive number: below 100 it counts vCPUs (e.g. cpu=2), 100 or more is MHz (e.g. cpu=4000)"
)
LOCAL_DATASTORE = (
    "Step 'prepare': @nomad with the local datastore needs the Nomad tasks to see the "
    "datastore root at the same absolute path. If they do (a local agent, or a shared "
    "filesystem), set METAFLOW_NOMAD_SHARED_FILESYSTEM=1. Otherwise use --datastore=s3 "
    "(S3-compatible endpoints work through METAFLOW_S3_ENDPOINT_URL)."
)


def problem(step: str, setting: str, value: object, accepted: str) -> str:
    return (
        f"Step '{step}': setting '{setting}' = {value!r} (from @nomad) is not valid. "
        f"Expected {accepted}."
    )


@pytest.fixture()
def cluster_checks(monkeypatch, tmp_path):
    """No METAFLOW_NOMAD_* of the developer's, a flow file in ``tmp_path``, and the
    cluster check replaced by a list of the settings it was asked about."""
    for name in [n for n in os.environ if n.startswith("METAFLOW_NOMAD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("METAFLOW_NOMAD_DRIVER", "raw_exec")
    monkeypatch.setenv("METAFLOW_NOMAD_SHARED_FILESYSTEM", "1")
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "flow.py")])
    checked: list = []
    monkeypatch.setattr(NomadDecorator, "_check_cluster", lambda self, s: checked.append(s))
    monkeypatch.setattr(NomadDecorator, "run_lease", None)
    yield checked
    if NomadDecorator.run_lease is not None:
        NomadDecorator.run_lease.stop()


def flow_of(tmp_path, steps: dict[str, list]) -> tuple[SimpleNamespace, SimpleNamespace]:
    """A flow and graph with these steps (in this order) and decorators, each @nomad
    initialised as Metaflow does: every step_init before any runtime_init."""
    flow = SimpleNamespace(
        name="SettingsFlow",
        **{name: SimpleNamespace(decorators=decos) for name, decos in steps.items()},
    )
    graph = SimpleNamespace(sorted_nodes=list(steps))
    datastore = SimpleNamespace(TYPE="local", datastore_root=str(tmp_path))
    for name, decos in steps.items():
        for deco in decos:
            if deco.name == "nomad":
                deco.step_init(flow, graph, name, decos, None, datastore, None)
    return flow, graph


def nomad(**attributes) -> NomadDecorator:
    return NomadDecorator(attributes=attributes)


def run_problems(tmp_path, steps: dict[str, list], first: str) -> list[str]:
    """The lines of the error raised by the runtime_init of step ``first``'s @nomad."""
    flow, graph = flow_of(tmp_path, steps)
    deco = next(d for d in steps[first] if d.name == "nomad")
    with pytest.raises(NomadException) as error:
        deco.runtime_init(flow, graph, None, "1")
    return str(error.value).splitlines()


def test_the_first_step_initialised_reports_every_step_before_the_cluster_check(
    tmp_path, cluster_checks
):
    steps = {
        "start": [],
        "prepare": [nomad(memory="lots", cpu=-1)],
        "train": [nomad(driver="podman")],
        "end": [nomad()],
    }
    # Metaflow's runtime initialises steps in name order: `end` (valid) comes first.
    assert run_problems(tmp_path, steps, first="end") == [
        problem("prepare", "cpu", -1, CPU),
        problem("prepare", "memory", "lots", "a whole number of MB >= 10"),
        problem("train", "driver", "podman", "one of: docker, exec, raw_exec"),
    ]
    assert cluster_checks == []


def test_a_step_reports_its_decorator_problems_and_its_bad_values_together(
    tmp_path, cluster_checks
):
    steps = {"start": [nomad(memory="lots"), KubernetesDecorator()], "end": []}
    assert run_problems(tmp_path, steps, first="start") == [
        "Step 'start': @nomad cannot be combined with @kubernetes. Remove one of them.",
        problem("start", "memory", "lots", "a whole number of MB >= 10"),
    ]
    assert cluster_checks == []


def test_the_datastore_problem_is_reported_once_with_the_bad_values(
    tmp_path, monkeypatch, cluster_checks
):
    monkeypatch.delenv("METAFLOW_NOMAD_SHARED_FILESYSTEM")
    steps = {"prepare": [nomad(memory="lots")], "train": [nomad(disk=0)]}
    assert run_problems(tmp_path, steps, first="train") == [
        problem("prepare", "memory", "lots", "a whole number of MB >= 10"),
        LOCAL_DATASTORE,
        problem("train", "disk", 0, "a whole number of MB > 0"),
    ]
    assert cluster_checks == []


def test_valid_steps_go_on_to_the_cluster_check(tmp_path, cluster_checks):
    steps = {"start": [nomad(memory=512)], "end": [nomad()]}
    flow, graph = flow_of(tmp_path, steps)
    for name in ("end", "start"):
        steps[name][0].runtime_init(flow, graph, None, "1")
    assert [s.memory for s in cluster_checks] == [4096, 512]
    # Then the run holds its one lease, in its datastore.
    lease = json.loads((tmp_path / "SettingsFlow" / "1" / "_nomad_lease").read_text())
    assert lease["sequence"] == 1 and lease["timeout_s"] == 60.0
