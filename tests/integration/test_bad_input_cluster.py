"""Bad input in whole runs: the exact message reaches the user and nothing reaches
Nomad (checked through the API), plus the cluster states only a cluster knows."""

import re

import pytest

pytestmark = pytest.mark.integration
PREFIX = "mf-badinputflow-"


def jobs_of_flow(nomad_client):
    return nomad_client.list_jobs(prefix=PREFIX, namespace="*")


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["--with", "nomad:memory=-5"],
            {},
            "setting 'memory' = -5 (from @nomad) is not valid. "
            "Expected a whole number of MB >= 10.",
        ),
        (
            ["--with", "nomad"],
            {"METAFLOW_NOMAD_DRIVER": "podman"},
            "setting 'driver' = 'podman' (from METAFLOW_NOMAD_DRIVER) is not "
            "valid. Expected one of: docker, exec, raw_exec.",
        ),
        (
            ["--with", "nomad:template=no_such_template"],
            {},
            "Template 'no_such_template' was not found.",
        ),
    ],
)
def test_bad_input_fails_the_run_before_anything_is_submitted(
    run_flow, nomad_client, args, env, expected
):
    before = {j["ID"] for j in jobs_of_flow(nomad_client)}
    result = run_flow("bad_input_flow.py", *args, env=env)
    assert result.returncode != 0
    output = " ".join(result.output.split())
    assert expected in output
    if expected.startswith("setting"):
        # Either @nomad step may be checked first; the message names the one it checked.
        assert re.search(r"Step '(start|end)': " + re.escape(expected), output)
    assert {j["ID"] for j in jobs_of_flow(nomad_client)} == before


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "nomad:nomad_namespace=nope",
            "Cannot submit jobs in namespace 'nope': the namespace does not exist: create it "
            "(`nomad namespace apply nope`) or choose another with METAFLOW_NOMAD_NAMESPACE "
            "(or NOMAD_NAMESPACE) or @nomad(nomad_namespace=...).",
        ),
        (
            "nomad:node_pool=gpu-pool",
            "Cannot submit jobs in namespace 'default': node pool 'gpu-pool' does not exist: "
            "create it (`nomad node pool apply`) or choose another with "
            "METAFLOW_NOMAD_NODE_POOL or @nomad(node_pool=...).",
        ),
    ],
)
def test_unknown_namespace_or_node_pool_fails_the_run_before_any_task(
    run_flow, nomad_client, spec, expected
):
    before = {j["ID"] for j in jobs_of_flow(nomad_client)}
    result = run_flow("bad_input_flow.py", "--with", spec, "--with", "retry:times=2")
    assert result.returncode == 1
    lines = [line.strip() for line in result.output.splitlines()]
    assert lines[lines.index(expected) - 1] == (
        "Nomad is not ready for this run (nothing was submitted):"
    )
    assert "Task is starting" not in result.output
    assert {j["ID"] for j in jobs_of_flow(nomad_client)} == before


def test_driver_missing_on_every_node_is_explained_and_times_out(run_flow, nomad_client):
    result = run_flow("bad_input_flow.py", "--with", "nomad:driver=docker,pending_timeout=3")
    assert result.returncode != 0
    assert "1 of 1 node(s) lack a healthy driver for the task" in result.output
    assert "pending after 3s (pending_timeout)" in result.output
    jobs = [j for j in jobs_of_flow(nomad_client) if j["Meta"]["metaflow.run_id"] == result.run_id]
    assert [j["Status"] for j in jobs] == ["dead"]
