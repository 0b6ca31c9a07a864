"""Issue 4 item 8: steps on the S3 datastore (moto), credentials kept out of the jobspec.

The launcher has the AWS credentials in its environment; the task gets them from
a Nomad Variable through a ``template`` block (tests/s3_templates), so the job
that Nomad stores names the variable but never holds the secret.
"""

import json

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.lookup import find_jobs
from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent, interpreter_path
from tests.support.flows import flow_source
from tests.support.s3 import BUCKET, S3_TEMPLATES

pytestmark = pytest.mark.integration

USER_GUIDE_RESULT = "Computation result: 332833500"


def _agent_environ(nomad_agent) -> bytes:
    with open(f"/proc/{nomad_agent.process.pid}/environ", "rb") as f:
        return f.read()


def test_user_guide_flow_runs_on_s3_without_secrets_in_the_jobspec(
    run_flow,
    nomad_client,
    nomad_agent,
    s3_server,
    credentials_in_nomad_variables,
):
    # raw_exec tasks inherit the agent's environment: it must not be the way in.
    assert s3_server.secret_key.encode() not in _agent_environ(nomad_agent)
    env = {
        **s3_server.metaflow_env("guide"),
        "METAFLOW_DEFAULT_DATASTORE": "local",  # so that only the flag selects S3
        "METAFLOW_NOMAD_TEMPLATES_DIR": str(S3_TEMPLATES),
    }
    result = run_flow("nomad_flow.py", env=env, top_args=("--datastore=s3",))
    assert result.returncode == 0, result.output
    run_id = result.run_id
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
    s3_server,
):
    """Without the Variables template the task has no credentials: none leak from the launcher."""
    # A code package of its own: the node caches packages by content, and a cached
    # one would let the task start and fail only later, in Metaflow's S3 retries.
    (run_flow.workdir / "nomad_flow.py").write_text(
        flow_source("nomad_flow.py").read_text() + f"# {run_flow.workdir}\n"
    )
    result = run_flow("nomad_flow.py", env=s3_server.metaflow_env("leak"), copy=False)
    assert result.returncode != 0
    assert "the task has no AWS credentials" in result.output
    [stub] = find_jobs(nomad_client, "NomadFlow", result.run_id, include_dead=True)
    assert s3_server.secret_key not in json.dumps(nomad_client.job(stub["ID"]))


@pytest.fixture()
def agent_with_node_credentials(s3_server, tmp_path_factory):
    """An agent on a node that holds an AWS credentials file, like an operator would set up.

    Its environment names the file only: Nomad's default client ``env.denylist``
    strips AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN from what
    raw_exec tasks inherit, so the keys themselves could not come that way.
    """
    node_dir = tmp_path_factory.mktemp("node")
    credentials = node_dir / "credentials"
    credentials.write_text(
        "[default]\n"
        f"aws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n"
    )
    credentials.chmod(0o600)
    path = interpreter_path()
    node_env = {
        "PATH": path,
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_DEFAULT_REGION": s3_server.region,
    }
    agent = LocalAgent(options=AgentOptions(env=node_env))
    agent.start()
    yield agent
    agent.stop()


def test_raw_exec_tasks_can_use_a_credentials_file_on_the_node(
    run_flow,
    s3_server,
    agent_with_node_credentials,
):
    """Node-level delivery (docs/s3.md, 3): the task reads the node's credentials file."""
    agent = agent_with_node_credentials
    env = {**s3_server.metaflow_env("node"), "METAFLOW_NOMAD_ADDRESS": agent.address}
    result = run_flow("nomad_flow.py", env=env)
    assert result.returncode == 0, result.output
    assert USER_GUIDE_RESULT in result.output
    client = NomadClient(agent.connection_settings())
    [stub] = find_jobs(client, "NomadFlow", result.run_id, include_dead=True)
    stored = json.dumps(client.job(stub["ID"]))
    print(
        f"node credentials file: job {stub['ID']} read back, secret occurrences: "
        f"{stored.count(s3_server.secret_key)}"
    )
    assert s3_server.secret_key not in stored
