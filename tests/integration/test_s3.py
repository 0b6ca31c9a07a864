"""Issue 4 item 8: steps on the S3 datastore (moto), credentials kept out of the jobspec.

The launcher has the AWS credentials in its environment; the task gets them from
a Nomad Variable through a ``template`` block (tests/s3_templates), so the job
that Nomad stores names the variable but never holds the secret.
"""

import json
import re
import subprocess

import pytest

from metaflow_nomad.jobs import find_jobs
from metaflow_nomad.local_agent import find_nomad_binary
from tests.s3_fixtures import BUCKET, S3_TEMPLATES, s3_server  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

USER_GUIDE_RESULT = "Computation result: 332833500"


@pytest.fixture()
def credentials_in_nomad_variables(nomad_agent, s3_server):  # noqa: F811
    """`nomad var put nomad/jobs ...`, the way an operator would store them."""
    pairs = [f"{k}={v}" for k, v in s3_server.credentials.items()]
    cli = [find_nomad_binary(), "var"]
    address = ["-address", nomad_agent.address]
    subprocess.run(
        [*cli, "put", *address, "-force", "nomad/jobs", *pairs],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    yield
    subprocess.run([*cli, "purge", *address, "nomad/jobs"], check=True, stdout=subprocess.DEVNULL)


def _agent_environ(nomad_agent) -> bytes:
    with open(f"/proc/{nomad_agent.process.pid}/environ", "rb") as f:
        return f.read()


def test_user_guide_flow_runs_on_s3_without_secrets_in_the_jobspec(
    run_flow,
    nomad_client,
    nomad_agent,
    s3_server,  # noqa: F811
    credentials_in_nomad_variables,
):
    # raw_exec tasks inherit the agent's environment: it must not be the way in.
    assert s3_server.secret_key.encode() not in _agent_environ(nomad_agent)
    env = {
        **s3_server.metaflow_env("guide"),
        "METAFLOW_DEFAULT_DATASTORE": "local",  # so that only the flag selects S3
        "METAFLOW_NOMAD_TEMPLATES_DIR": str(S3_TEMPLATES),
    }
    result = run_flow("nomad_flow.py", "run", env=env, command="--datastore=s3")
    assert result.returncode == 0, result.output
    run_id = re.search(r"Workflow starting \(run-id (\d+)\)", result.output).group(1)
    assert "This step is running on Nomad!" in result.output  # tailed from S3
    assert USER_GUIDE_RESULT in result.output

    [stub] = find_jobs(nomad_client, "NomadFlow", run_id, include_dead=True)
    job = nomad_client.job(stub["ID"])
    stored = json.dumps(job)
    task = job["TaskGroups"][0]["Tasks"][0]
    print(
        f"job {stub['ID']}: {len(stored)} bytes read back; secret key occurrences: "
        f"{stored.count(s3_server.secret_key)}, access key occurrences: "
        f"{stored.count(s3_server.access_key)}; AWS_* env keys: "
        f"{sorted(k for k in task['Env'] if k.startswith('AWS_'))}"
    )
    assert s3_server.secret_key not in stored
    assert s3_server.access_key not in stored
    assert not [k for k in task["Env"] if k.startswith("AWS_")]
    assert task["Env"]["METAFLOW_DEFAULT_DATASTORE"] == "s3"
    assert 'nomadVar "nomad/jobs"' in task["Templates"][0]["EmbeddedTmpl"]

    keys = [
        o["Key"]
        for o in s3_server.client()
        .list_objects_v2(Bucket=BUCKET, Prefix=f"guide/NomadFlow/{run_id}/")
        .get("Contents", [])
    ]
    nomad_logs = [k for k in keys if "/compute_on_nomad/" in k and "task_stdout" in k]
    print(f"objects of run {run_id} in s3://{BUCKET}/guide: {len(keys)}; {nomad_logs}")
    assert nomad_logs


def test_launcher_credentials_do_not_reach_the_task(
    run_flow,
    nomad_client,
    s3_server,  # noqa: F811
):
    """Without the Variables template the task has no credentials: none leak from the launcher."""
    result = run_flow("nomad_flow.py", env=s3_server.metaflow_env("leak"))
    assert result.returncode != 0
    assert "Unable to locate credentials" in result.output
    [stub] = find_jobs(nomad_client, "NomadFlow", result.run_id, include_dead=True)
    assert s3_server.secret_key not in json.dumps(nomad_client.job(stub["ID"]))
