"""Issue 10 item 3: Metaflow's step decorators with @nomad, each row of
docs/compatibility.md either working or refused before anything is submitted.

Rows proven elsewhere are named in the table (cards and the client API in
test_task_client_api.py, @environment and `--with environment` in
test_byte_parity.py, static @retry/@timeout/@catch in test_retries.py).  Every
flow here is a user flow from tests/flows; outcomes are read from outside.
"""

from __future__ import annotations

import hashlib
import json
import secrets

import pytest

from metaflow_nomad.api.lookup import find_jobs
from tests.support.flows import read_run
from tests.support.nomad_checks import settled_allocations
from tests.support.s3 import S3_TEMPLATES

pytestmark = pytest.mark.integration

WITH_DECORATORS = (
    "--with",
    "nomad:cpu=100",
    "--with",
    "resources:memory=300",
    "--with",
    "retry:times=1,minutes_between_retries=0",
    "--with",
    "catch:var=failure",
    "--with",
    "card",
    "--with",
    'environment:vars={"GREETING": "hello from --with"}',
)


def jobs_by_step(client, flow_name: str, run_id: str | None) -> dict[str, list[dict]]:
    """The run's Nomad jobs (full job documents), by step."""
    found: dict[str, list[dict]] = {}
    for stub in find_jobs(client, flow_name, run_id or "none", include_dead=True):
        job = client.job(stub["ID"])
        found.setdefault(job["Meta"]["metaflow.step_name"], []).append(job)
    for jobs in found.values():
        jobs.sort(key=lambda j: j["ID"])
    return found


def alloc_status(client, job: dict) -> str:
    [alloc] = settled_allocations(lambda: client.job_allocations(job["ID"])[0])
    return alloc["ClientStatus"]


def test_decorators_added_with_with(run_flow, nomad_client):
    """--with nomad, resources, retry, catch, card and environment on a plain flow."""
    result = run_flow("plain_flow.py", top_args=WITH_DECORATORS)
    assert result.returncode == 0, result.output
    assert "greeting 'hello from --with'" in result.output
    assert "division by zero" in result.output  # @catch stored it; the run went on
    jobs = jobs_by_step(nomad_client, "PlainFlow", result.run_id)
    # @retry: the flaky start and the failing step each ran twice on Nomad.
    assert [alloc_status(nomad_client, j) for j in jobs["start"]] == ["failed", "complete"]
    assert [j["ID"][-2:] for j in jobs["fragile"]] == ["-0", "-1"]
    # @catch caught the last attempt inside the task, so that attempt completed.
    assert [alloc_status(nomad_client, j) for j in jobs["fragile"]] == ["failed", "complete"]
    # @resources and @nomad together size every job.
    for job in [j for step in jobs.values() for j in step]:
        resources = job["TaskGroups"][0]["Tasks"][0]["Resources"]
        assert (resources["CPU"], resources["MemoryMB"]) == (100, 300)
    run = read_run(result, f"PlainFlow/{result.run_id}")
    [fragile] = run["steps"]["fragile"]
    assert "division by zero" in fragile["data"]["failure"]
    # @card: every task on Nomad rendered its default card.
    [end] = run["steps"]["end"]
    listed = run_flow(
        "plain_flow.py",
        "list",
        end["pathspec"].split("/", 1)[1],
        "--as-json",
        command="card",
        top_args=WITH_DECORATORS,
    )
    assert listed.returncode == 0, listed.output
    assert json.loads(listed.output[listed.output.index("{") :])["cards"][0]["type"] == "default"


def test_timeout_added_with_with_is_enforced_on_nomad(run_flow, nomad_client):
    result = run_flow("sleep_flow.py", top_args=("--with", "timeout:seconds=2"))
    assert result.returncode != 0
    assert "Step nap timed out after 0 hours, 0 minutes, 2 seconds" in result.output
    [job] = jobs_by_step(nomad_client, "SleepFlow", result.run_id)["nap"]
    assert nomad_client.job(job["ID"])["Status"] == "dead"


def test_project_on_nomad(run_flow):
    result = run_flow("project_flow.py", top_args=("--branch", "feature_x"))
    assert result.returncode == 0, result.output
    [start] = read_run(result, f"ProjectFlow/{result.run_id}")["steps"]["start"]
    assert start["metadata"]["nomad-job-id"]
    assert start["data"]["project_seen"] == {
        "project_name": "nomad_parity",
        "branch_name": "test.feature_x",
        "project_flow_name": "nomad_parity.test.feature_x.ProjectFlow",
        "is_production": False,
    }


@pytest.fixture()
def db_secret(s3_server) -> str:
    """A secret in (moto's) AWS Secrets Manager, as an operator would store it."""
    import boto3

    value = secrets.token_urlsafe(24)
    boto3.client(
        "secretsmanager",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
    ).create_secret(Name="mf-nomad/db", SecretString=json.dumps({"DB_PASSWORD": value}))
    return value


def test_secrets_static_and_with(
    run_flow, nomad_client, s3_server, credentials_in_nomad_variables, db_secret
):
    """@secrets and --with secrets: the task fetches the secret; no job holds it."""
    # The endpoint is cluster configuration: the project file gives it to every step.
    (run_flow.workdir / "metaflow_nomad.yaml").write_text(
        "defaults:\n  env:\n    AWS_ENDPOINT_URL_SECRETS_MANAGER: " + s3_server.endpoint + "\n"
    )
    env = {
        "METAFLOW_DEFAULT_SECRETS_BACKEND_TYPE": "aws-secrets-manager",
        "METAFLOW_NOMAD_TEMPLATES_DIR": str(S3_TEMPLATES),
    }
    result = run_flow(
        "secrets_flow.py", env=env, top_args=("--with", 'secrets:sources=["mf-nomad/db"]')
    )
    assert result.returncode == 0, result.output
    run = read_run(result, f"SecretsFlow/{result.run_id}")
    expected = hashlib.sha256(db_secret.encode()).hexdigest()
    assert run["steps"]["start"][0]["data"]["static_digest"] == expected
    assert run["steps"]["end"][0]["data"]["with_digest"] == expected
    jobs = jobs_by_step(nomad_client, "SecretsFlow", result.run_id)
    assert sorted(jobs) == ["end", "start"]
    assert db_secret not in json.dumps(jobs)


def test_unbounded_foreach_is_refused_before_its_step_is_submitted(run_flow, nomad_client):
    result = run_flow("unbounded_foreach_flow.py", top_args=("--with", "nomad:cpu=100,memory=256"))
    assert result.returncode != 0
    assert "Step 'inner': this step is an unbounded foreach" in result.output
    assert "split_index" not in result.output  # not Metaflow's internal error
    assert sorted(jobs_by_step(nomad_client, "UnboundedForeachFlow", result.run_id)) == ["start"]


def test_resume_reusing_an_unbounded_foreach_runs_the_rest_on_nomad(run_flow, nomad_client):
    broken = run_flow("unbounded_foreach_flow.py", "--tag", "break-join")
    assert broken.returncode != 0
    origin_id = broken.run_id
    resumed = run_flow(
        "unbounded_foreach_flow.py",
        command="resume",
        top_args=("--with", "nomad:cpu=100,memory=256"),
    )
    assert resumed.returncode == 0, resumed.output
    assert "total 60" in resumed.output
    assert resumed.run_id != origin_id
    jobs = jobs_by_step(nomad_client, "UnboundedForeachFlow", resumed.run_id)
    assert sorted(jobs) == ["end", "join"]


def test_pypi_on_s3_stops_before_submitting_when_micromamba_is_unreachable(
    run_flow, nomad_client, s3_server
):
    """@pypi with --datastore=s3 is what @nomad supports; this machine cannot fetch
    micromamba or conda-forge, so only the failure path can be shown: Metaflow's
    environment bootstrap stops on the launcher and nothing reaches Nomad."""
    env = {**s3_server.metaflow_env("pypi"), "METAFLOW_DEFAULT_ENVIRONMENT": "pypi"}
    result = run_flow("pypi_flow.py", env=env)
    assert result.returncode != 0
    assert "Micromamba" in result.output
    assert "needs a remote datastore" not in result.output  # S3 is accepted
    assert jobs_by_step(nomad_client, "PypiFlow", result.run_id) == {}
