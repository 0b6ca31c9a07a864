"""Issue 5 items 1-3: real ACL and mutual-TLS agents, CLI-like authentication,
clear errors that name the setting to fix (with nothing submitted), the mtls
template proven end to end, and no secret in anything we write or print.

One agent with ACLs *and* ``verify_https_client`` serves the whole module: every
credential problem below is met by the real Nomad, not a mock.  Assertions about
secrets never put the secret in the assertion message.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from secrets import token_urlsafe

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.config import connection_config
from metaflow_nomad.errors import NomadClientError
from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent
from metaflow_nomad.testing.pki import make_test_pki
from tests.support.flows import agent_flow_env, agent_path_env, run_flow
from tests.support.leaks import decoded_payloads
from tests.support.nomad_checks import probe_hcl

pytestmark = pytest.mark.integration

NAMESPACE = "team-a"
HCL = probe_hcl("sec-probe")
UNKNOWN_TOKEN = "8f1c2d7e-5b1a-4c39-9a11-2f0e5d6c7b8a"
# The metadata service's API key, set where the run and render are launched: Metaflow
# turns it into METAFLOW_SERVICE_HEADERS, which must reach no jobspec either.
SERVICE_KEY = "mf-service-key-" + token_urlsafe(24)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    """A second CA the cluster does not trust."""
    return make_test_pki(tmp_path_factory.mktemp("other-pki"))


@pytest.fixture(scope="module")
def secure_agent(pki):
    agent = LocalAgent(options=AgentOptions(acl=True, tls=pki, env=agent_path_env()))
    agent.start()
    agent.narrow_token = agent.create_namespace_token(NAMESPACE)
    yield agent
    agent.stop()


def _settings(agent: LocalAgent, **overrides) -> ConnectionSettings:
    return dataclasses.replace(agent.connection_settings(), **overrides)


def _all_job_ids(agent: LocalAgent) -> set[str]:
    return {j["ID"] for j in agent.api("GET", "/v1/jobs?namespace=*")}


def _secret_locations(secrets: dict[str, str], places: dict[str, str]) -> list[str]:
    """Which secret shows up where, without ever showing the secret itself."""
    return [f"{s} in {p}" for s, v in secrets.items() for p, text in places.items() if v in text]


# -- the harness itself ---------------------------------------------------------


def test_secure_agent_enforces_acl_and_client_certificates(secure_agent, pki):
    settings = _settings(secure_agent)
    assert secure_agent.address.startswith("https://")
    assert NomadClient(settings).leader()
    anonymous = NomadClient(_settings(secure_agent, token=None))
    with pytest.raises(NomadClientError) as denied:
        anonymous.list_jobs()
    assert denied.value.status == 403
    self_info = secure_agent.api("GET", "/v1/acl/token/self", token=secure_agent.narrow_token)
    assert self_info["Type"] == "client" and self_info["Policies"] == [f"{NAMESPACE}-write"]
    namespaces = {n["Name"] for n in secure_agent.api("GET", "/v1/namespaces")}
    assert NAMESPACE in namespaces


# -- authentication like the official CLI ---------------------------------------


def test_settings_come_from_metaflow_names_then_standard_nomad_names(secure_agent, tmp_path):
    pki = secure_agent.options.tls
    standard = {
        "NOMAD_ADDR": secure_agent.address,
        "NOMAD_TOKEN": secure_agent.management_token,
        "NOMAD_CACERT": str(pki.ca_file),
        "NOMAD_CLIENT_CERT": str(pki.client_cert),
        "NOMAD_CLIENT_KEY": str(pki.client_key),
        "NOMAD_TLS_SERVER_NAME": "server.global.nomad",
        "METAFLOW_HOME": str(tmp_path),
    }
    settings = ConnectionSettings.from_config(connection_config(standard))
    assert settings.tls_server_name == "server.global.nomad"
    assert NomadClient(settings).list_jobs() is not None
    # METAFLOW_NOMAD_* wins over NOMAD_*: a wrong METAFLOW token must be the one used.
    both = dict(standard, METAFLOW_NOMAD_TOKEN=UNKNOWN_TOKEN)
    with pytest.raises(NomadClientError) as exc:
        NomadClient(ConnectionSettings.from_config(connection_config(both))).list_jobs()
    assert "does not know the ACL token" in str(exc.value)


def test_tls_verification_is_on_by_default_and_skip_verify_turns_it_off(secure_agent, other_pki):
    with pytest.raises(NomadClientError) as exc:
        NomadClient(_settings(secure_agent, ca_cert=None)).list_jobs()
    assert "METAFLOW_NOMAD_CACERT" in str(exc.value)
    skipping = _settings(secure_agent, ca_cert=str(other_pki.ca_file), skip_verify=True)
    assert NomadClient(skipping).list_jobs() is not None


def test_tls_server_name_is_used_for_verification(secure_agent):
    assert NomadClient(_settings(secure_agent, tls_server_name="server.global.nomad")).leader()
    with pytest.raises(NomadClientError) as exc:
        NomadClient(_settings(secure_agent, tls_server_name="nomad.invalid")).leader()
    assert "METAFLOW_NOMAD_TLS_SERVER_NAME" in str(exc.value)
    assert "'nomad.invalid'" in str(exc.value)


def test_narrow_token_can_submit_in_its_own_namespace(secure_agent):
    client = NomadClient(
        _settings(secure_agent, token=secure_agent.narrow_token, namespace=NAMESPACE)
    )
    job = client.parse(HCL.replace("sec-probe", "sec-narrow-ok"))
    job["Namespace"] = NAMESPACE
    client.register(job)
    assert client.job("sec-narrow-ok", namespace=NAMESPACE)["Namespace"] == NAMESPACE
    client.deregister("sec-narrow-ok", purge=True, namespace=NAMESPACE)


def _expired_client(pki):
    cert, key = pki.issue_client("expired-client", expired=True)
    return {"client_cert": str(cert), "client_key": str(key)}


# (case id, settings overrides (callable of agent, pki, other pki), words the error must contain)
CREDENTIAL_CASES = [
    (
        "missing-token",
        lambda a, p, o: {"token": None},
        ["No ACL token is set", "METAFLOW_NOMAD_TOKEN", "namespace 'default'"],
    ),
    (
        "wrong-token",
        lambda a, p, o: {"token": UNKNOWN_TOKEN},
        ["does not know the ACL token", "METAFLOW_NOMAD_TOKEN"],
    ),
    (
        "token-without-permission-in-namespace",
        lambda a, p, o: {"token": a.narrow_token},
        [
            "not allowed to do this in namespace 'default'",
            f"policies: {NAMESPACE}-write",
            "METAFLOW_NOMAD_NAMESPACE",
        ],
    ),
    (
        "wrong-ca",
        lambda a, p, o: {"ca_cert": str(o.ca_file)},
        ["not signed by the CA in METAFLOW_NOMAD_CACERT", "other-pki"],
    ),
    (
        "missing-client-certificate",
        lambda a, p, o: {"client_cert": None, "client_key": None},
        [
            "requires a client certificate",
            "METAFLOW_NOMAD_CLIENT_CERT",
            "METAFLOW_NOMAD_CLIENT_KEY",
        ],
    ),
    (
        "expired-client-certificate",
        lambda a, p, o: _expired_client(p),
        ["has expired", "METAFLOW_NOMAD_CLIENT_CERT", "expired-client.pem"],
    ),
    (
        "client-certificate-from-another-ca",
        lambda a, p, o: {"client_cert": str(o.client_cert), "client_key": str(o.client_key)},
        ["not signed by the cluster's CA", "METAFLOW_NOMAD_CLIENT_CERT"],
    ),
    (
        "http-address-for-https-cluster",
        lambda a, p, o: {"address": a.address.replace("https://", "http://")},
        ["serves HTTPS", "METAFLOW_NOMAD_ADDRESS"],
    ),
    (
        "client-key-missing",
        lambda a, p, o: {"client_key": None},
        ["needs both a certificate and its key", "METAFLOW_NOMAD_CLIENT_KEY"],
    ),
    (
        "ca-file-missing",
        lambda a, p, o: {"ca_cert": "/nonexistent/ca.pem"},
        ["METAFLOW_NOMAD_CACERT", "'/nonexistent/ca.pem', which is not a file"],
    ),
]


@pytest.mark.parametrize(
    "overrides, expected", [c[1:] for c in CREDENTIAL_CASES], ids=[c[0] for c in CREDENTIAL_CASES]
)
@pytest.mark.parametrize("operation", ["parse", "register"])
def test_credential_problems_name_the_setting_and_submit_nothing(
    secure_agent, pki, other_pki, overrides, expected, operation
):
    good = NomadClient(_settings(secure_agent))
    job_id = f"sec-probe-{operation}"
    job = good.parse(HCL.replace("sec-probe", job_id))
    before = _all_job_ids(secure_agent)
    client = NomadClient(_settings(secure_agent, **overrides(secure_agent, pki, other_pki)))
    with pytest.raises(NomadClientError) as exc:
        if operation == "parse":
            client.parse(HCL.replace("sec-probe", job_id))
        else:
            client.register(job)
    message = str(exc.value)
    for words in expected:
        assert words in message
    # Permanent: not retried (one request, plus at most one token lookup).
    assert client.request_count <= 2
    assert _all_job_ids(secure_agent) == before and job_id not in before
    secrets = {"management token": secure_agent.management_token}
    secrets["narrow token"] = secure_agent.narrow_token
    secrets["unknown token"] = UNKNOWN_TOKEN
    assert not _secret_locations(secrets, {"exception message": message})


def test_flow_with_wrong_token_fails_clearly_and_submits_nothing(secure_agent, tmp_path):
    before = _all_job_ids(secure_agent)
    flow = run_flow(
        "with_flow.py",
        tmp_path / "wrong-token",
        agent_flow_env(secure_agent, tmp_path / "wrong-token", token=UNKNOWN_TOKEN),
        "--with",
        "nomad",
        timeout=180,
    )
    output = flow.output
    assert flow.proc.returncode != 0
    assert "does not know the ACL token in METAFLOW_NOMAD_TOKEN" in output
    assert _all_job_ids(secure_agent) == before
    assert not _secret_locations({"the wrong token": UNKNOWN_TOKEN}, {"flow output": output})


def test_flow_with_expired_client_certificate_fails_clearly(secure_agent, pki, tmp_path):
    cert, key = pki.issue_client("flow-expired", expired=True)
    before = _all_job_ids(secure_agent)
    flow = run_flow(
        "with_flow.py",
        tmp_path / "expired",
        agent_flow_env(
            secure_agent,
            tmp_path / "expired",
            extra={"METAFLOW_NOMAD_CLIENT_CERT": str(cert), "METAFLOW_NOMAD_CLIENT_KEY": str(key)},
        ),
        "--with",
        "nomad",
        timeout=180,
    )
    output = flow.output
    assert flow.proc.returncode != 0
    assert "METAFLOW_NOMAD_CLIENT_CERT" in output and "has expired" in output
    assert _all_job_ids(secure_agent) == before


# -- mTLS end to end, and no secret leaks ---------------------------------------


@pytest.fixture(scope="module")
def mtls_run(secure_agent, pki, tmp_path_factory):
    """MtlsFlow with the narrow token in its namespace and task TLS material configured."""
    workdir = tmp_path_factory.mktemp("mtls-run")
    flow = run_flow(
        "mtls_flow.py",
        workdir,
        agent_flow_env(
            secure_agent,
            workdir,
            token=secure_agent.narrow_token,
            extra={
                "METAFLOW_NOMAD_NAMESPACE": NAMESPACE,
                "METAFLOW_NOMAD_TASK_TLS_DIR": str(pki.directory),
                "METAFLOW_SERVICE_AUTH_KEY": SERVICE_KEY,
            },
        ),
        timeout=240,
    )
    return flow


def _run_jobs(agent: LocalAgent, run_id: str) -> list[dict]:
    stubs = agent.api("GET", f"/v1/jobs?namespace={NAMESPACE}&prefix=mf-mtlsflow-")
    jobs = [
        agent.api("GET", f"/v1/job/{s['ID']}?namespace={NAMESPACE}")
        for s in stubs
        if s["ID"].startswith(f"mf-mtlsflow-{run_id}-")
    ]
    assert jobs, "the run submitted no job"
    return jobs


def test_step_calls_the_mtls_cluster_with_the_material_the_template_delivered(
    secure_agent, pki, mtls_run
):
    output = mtls_run.output
    assert mtls_run.proc.returncode == 0, "flow failed; see its log at " + str(mtls_run.log_path)
    leader = secure_agent.api("GET", "/v1/status/leader")
    assert f"leader seen from the task: {leader}" in output
    assert f"task saw leader {leader}" in output
    (job,) = _run_jobs(secure_agent, mtls_run.run_id)
    assert job["Namespace"] == NAMESPACE
    assert job["Meta"]["metaflow.template"] == "v1/base.nomad.hcl.j2"
    env = job["TaskGroups"][0]["Tasks"][0]["Env"]
    assert env["NOMAD_ADDR"] == secure_agent.address
    assert env["NOMAD_CACERT"] == f"{pki.directory}/ca.pem"
    assert env["NOMAD_CLIENT_CERT"] == f"{pki.directory}/client.pem"
    assert env["NOMAD_CLIENT_KEY"] == f"{pki.directory}/client-key.pem"
    assert "NOMAD_TOKEN" not in env


def _key_body(path: Path) -> str:
    """The base64 body of a PEM private key, the part that must never leak."""
    lines = path.read_text().strip().splitlines()
    return "".join(lines[1:-1])


def _metaflow_files(workdir: Path) -> dict[str, str]:
    files = {}
    for root in (workdir / ".metaflow", workdir / "mfhome"):
        for path in root.rglob("*") if root.exists() else []:
            if path.is_file():
                files[str(path.relative_to(workdir))] = path.read_bytes().decode("latin-1")
    return files


def test_no_token_or_key_in_jobspec_meta_metadata_logs_or_render(
    secure_agent, pki, mtls_run, tmp_path
):
    assert mtls_run.proc.returncode == 0, "flow failed; see " + str(mtls_run.log_path)
    found = {
        "narrow token": secure_agent.narrow_token,
        "management token": secure_agent.management_token,
        "client key": _key_body(pki.client_key),
        "CA key": _key_body(pki.ca_key_file),
        "metadata service key": SERVICE_KEY,
    }
    assert all(len(v) > 30 for v in found.values())
    places: dict[str, str] = {"flow output (every log line)": mtls_run.output}
    for job in _run_jobs(secure_agent, mtls_run.run_id):
        places[f"job JSON {job['ID']}"] = json.dumps(job)
        places[f"job Meta {job['ID']}"] = json.dumps(job["Meta"])
        versions = secure_agent.api("GET", f"/v1/job/{job['ID']}/versions?namespace={NAMESPACE}")
        places[f"job versions {job['ID']}"] = json.dumps(versions)
        allocs = secure_agent.api("GET", f"/v1/job/{job['ID']}/allocations?namespace={NAMESPACE}")
        for alloc in allocs:
            for stream in ("stdout", "stderr"):
                places[f"task {stream} {alloc['ID'][:8]}"] = secure_agent.api_text(
                    f"/v1/client/fs/logs/{alloc['ID']}?task=metaflow&type={stream}"
                    f"&plain=true&namespace={NAMESPACE}"
                )
    metaflow_files = _metaflow_files(mtls_run.workdir)
    assert any("metadata" in name or "_meta" in name for name in metaflow_files)
    places.update({f"metaflow file {n}": t for n, t in metaflow_files.items()})
    for job in _run_jobs(secure_agent, mtls_run.run_id):
        places.update({f"{job['ID']} {k}": v for k, v in decoded_payloads(job).items()})
    places["render output"] = _render(secure_agent, pki, mtls_run.workdir, tmp_path)
    assert "mf-mtlsflow-render-preview-call-cluster-1-0" in places["render output"]
    assert not _secret_locations(found, places)


def _render(agent: LocalAgent, pki, flow_dir: Path, tmp_path: Path) -> str:
    """``metaflow-nomad render`` with the same secret-bearing environment as the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "METAFLOW_NOMAD_"))}
    env.update(agent.connection_env(agent.narrow_token))
    env.update(
        {
            "METAFLOW_NOMAD_NAMESPACE": NAMESPACE,
            "METAFLOW_NOMAD_TASK_TLS_DIR": str(pki.directory),
            "METAFLOW_NOMAD_DRIVER": "raw_exec",
            "METAFLOW_NOMAD_SHARED_FILESYSTEM": "1",
            "METAFLOW_HOME": str(tmp_path / "mfhome"),
            "USER": "tester",
            "METAFLOW_SERVICE_AUTH_KEY": SERVICE_KEY,
        }
    )
    outputs = []
    for fmt in ("hcl", "json"):
        proc = subprocess.run(
            [
                os.path.join(os.path.dirname(sys.executable), "metaflow-nomad"),
                "render",
                "mtls_flow.py",
                "--step",
                "call_cluster",
                "--format",
                fmt,
            ],
            cwd=flow_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, "render failed (output withheld: it may hold secrets)"
        outputs.append(proc.stdout)
    return "\n".join(outputs)


def test_key_material_travels_as_paths_only(secure_agent, pki, mtls_run):
    (job,) = _run_jobs(secure_agent, mtls_run.run_id)
    task = job["TaskGroups"][0]["Tasks"][0]
    blob = json.dumps(task)
    assert "BEGIN" not in blob
    script = base64.b64decode(task["Env"]["METAFLOW_NOMAD_COMMAND_B64"]).decode()
    assert not _secret_locations(
        {"client key": _key_body(pki.client_key), "token": secure_agent.narrow_token},
        {"task bootstrap script": script},
    )
