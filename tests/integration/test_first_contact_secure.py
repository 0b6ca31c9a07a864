"""Issue 12 on a real ACL + mutual-TLS agent: a wrong token, a token without submit
rights and a wrong CA stop a run before its first task with one clear message, and
``doctor`` says the same on the line of the check that failed.
"""

from __future__ import annotations

import pytest

from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent
from metaflow_nomad.testing.pki import make_test_pki
from tests.support.flows import agent_flow_env, agent_path_env, run_flow

pytestmark = pytest.mark.integration

READ_ONLY_NAMESPACE = "team-b"
WRITE_NAMESPACE = "team-a"
UNKNOWN_TOKEN = "8f1c2d7e-5b1a-4c39-9a11-2f0e5d6c7b8a"
TOKEN = "METAFLOW_NOMAD_TOKEN (or NOMAD_TOKEN)"
DOCTOR_HINT = (
    "For a full check of the cluster and this flow's settings, run "
    "`python with_flow.py nomad doctor`."
)


@pytest.fixture(scope="module")
def secure_agent(tmp_path_factory):
    pki = make_test_pki(tmp_path_factory.mktemp("pki"))
    agent = LocalAgent(options=AgentOptions(acl=True, tls=pki, env=agent_path_env()))
    agent.start()
    agent.reader_token = agent.create_namespace_token(READ_ONLY_NAMESPACE, policy="read")
    agent.writer_token = agent.create_namespace_token(WRITE_NAMESPACE)
    agent.other_ca = make_test_pki(tmp_path_factory.mktemp("other-pki")).ca_file
    yield agent
    agent.stop()


def _jobs(agent) -> set[str]:
    return {j["ID"] for j in agent.api("GET", "/v1/jobs?namespace=*")}


def _env(agent, workdir, token=None, **extra):
    return agent_flow_env(agent, workdir, token=token, extra=extra)


def _lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines()]


def _run(agent, workdir, env):
    before = _jobs(agent)
    run = run_flow("with_flow.py", workdir, env, "--with", "nomad", timeout=180)
    assert _jobs(agent) == before, "a job was submitted"
    assert run.returncode == 1
    for noise in ("Traceback", "Internal error", "Workflow starting"):
        assert noise not in run.output
    return _lines(run.output)


def _doctor(workdir, env):
    return run_flow(
        "with_flow.py", workdir, env, "doctor", command="nomad", top_args=("--with", "nomad")
    )


WRONG_TOKEN = (
    f"Nomad does not know the ACL token in {TOKEN}: it is wrong, expired or was deleted. "
    "Set it to the Secret ID of a valid token."
)


def test_wrong_token(secure_agent, tmp_path):
    env = _env(secure_agent, tmp_path / "run", token=UNKNOWN_TOKEN)
    lines = _run(secure_agent, tmp_path / "run", env)
    assert f"token: {WRONG_TOKEN}" in lines
    assert DOCTOR_HINT in lines

    doctor = _doctor(tmp_path / "doctor", _env(secure_agent, tmp_path / "doctor", UNKNOWN_TOKEN))
    assert doctor.returncode == 1
    lines = _lines(doctor.output)
    assert f"FAIL  token: {WRONG_TOKEN}" in lines
    assert lines[-1] == "Verdict: 1 of 4 checks FAILED (token). Each FAIL line says what to change."
    assert UNKNOWN_TOKEN not in doctor.output
    assert "METAFLOW_NOMAD_TOKEN (or NOMAD_TOKEN): set (from METAFLOW_NOMAD_TOKEN)" in lines


def test_missing_token(secure_agent, tmp_path):
    env = _env(secure_agent, tmp_path)
    del env["METAFLOW_NOMAD_TOKEN"]  # the harness gives the management token by default
    lines = _run(secure_agent, tmp_path, env)
    assert (
        "Cannot submit jobs in namespace 'default': denied: no ACL token is set and this "
        f"cluster enforces ACLs: set {TOKEN} to the Secret ID of a token allowed to submit "
        "jobs in namespace 'default'."
    ) in lines


def _denied(capability: str) -> str:
    return (
        f"denied: the token needs the `{capability}` capability here. The ACL token in {TOKEN} "
        f"(name '{READ_ONLY_NAMESPACE}-read', policies: {READ_ONLY_NAMESPACE}-read) is not "
        f"allowed to do this in namespace '{READ_ONLY_NAMESPACE}'. Use a token whose policy "
        "covers that namespace, or choose a namespace it covers with METAFLOW_NOMAD_NAMESPACE "
        "(or NOMAD_NAMESPACE) or @nomad(nomad_namespace=...)."
    )


def test_token_without_submit_rights(secure_agent, tmp_path):
    ns = READ_ONLY_NAMESPACE
    extra = {"METAFLOW_NOMAD_NAMESPACE": ns}
    env = _env(secure_agent, tmp_path / "run", secure_agent.reader_token, **extra)
    lines = _run(secure_agent, tmp_path / "run", env)
    assert f"Cannot submit jobs in namespace '{ns}': {_denied('submit-job')}" in lines

    doctor_env = _env(secure_agent, tmp_path / "doctor", secure_agent.reader_token, **extra)
    doctor = _doctor(tmp_path / "doctor", doctor_env)
    assert doctor.returncode == 1
    lines = _lines(doctor.output)
    i = lines.index(f"Namespace '{ns}':")
    assert lines[i + 1 : i + 6] == [
        f"ok    parse jobs in namespace '{ns}': allowed (`parse-job`)",
        f"FAIL  submit jobs in namespace '{ns}': {_denied('submit-job')}",
        f"ok    read jobs in namespace '{ns}': allowed (`read-job`)",
        f"ok    list jobs in namespace '{ns}': allowed (`list-jobs`)",
        f"FAIL  stop jobs in namespace '{ns}': {_denied('submit-job')}",
    ]
    assert "skip  placement: not planned: the token may not submit jobs here" in lines
    # A token without agent:read cannot see Nomad's version: said, not refused.
    assert (
        "skip  Nomad version: not checked: the token may not read the agent (agent:read); "
        "1.6.0 or newer is needed"
    ) in lines
    assert lines[-1] == (
        f"Verdict: 2 of 12 checks FAILED (submit jobs in namespace '{ns}', stop jobs in "
        f"namespace '{ns}') (1 warning(s)). Each FAIL line says what to change."
    )
    assert secure_agent.reader_token not in doctor.output


def test_wrong_ca(secure_agent, tmp_path):
    ca = str(secure_agent.other_ca)
    wrong_ca = (
        "the server's certificate is not signed by the CA in METAFLOW_NOMAD_CACERT (or "
        f"NOMAD_CACERT) ({ca}): point it at the cluster's CA."
    )
    env = _env(secure_agent, tmp_path / "run", METAFLOW_NOMAD_CACERT=ca)
    lines = _run(secure_agent, tmp_path / "run", env)
    assert f"TLS: {wrong_ca}" in lines

    doctor = _doctor(
        tmp_path / "doctor", _env(secure_agent, tmp_path / "doctor", METAFLOW_NOMAD_CACERT=ca)
    )
    assert doctor.returncode == 1
    lines = _lines(doctor.output)
    i = lines.index("Cluster:")
    assert lines[i + 1 : i + 3] == [
        f"ok    address: {secure_agent.address} (from METAFLOW_NOMAD_ADDRESS) answers",
        f"FAIL  TLS: {wrong_ca}",
    ]
    assert f"METAFLOW_NOMAD_CACERT (or NOMAD_CACERT): {ca} (from METAFLOW_NOMAD_CACERT)" in lines


def test_unknown_datacenter_judged_by_the_scheduler_when_nodes_cannot_be_listed(
    secure_agent, tmp_path
):
    """A namespace-scoped token may not list nodes; the plan still finds the problem."""
    env = _env(
        secure_agent,
        tmp_path,
        secure_agent.writer_token,
        METAFLOW_NOMAD_NAMESPACE=WRITE_NAMESPACE,
        METAFLOW_NOMAD_DEFAULT_DATACENTERS="nope",
    )
    doctor = _doctor(tmp_path, env)
    assert doctor.returncode == 1
    lines = _lines(doctor.output)
    header = next(n for n, line in enumerate(lines) if line.startswith("Steps 'start', 'end'"))
    assert "datacenters=['nope'] (METAFLOW_NOMAD_DEFAULT_DATACENTERS)" in lines[header]
    assert lines[header + 1 : header + 4] == [
        "ok    region: not set: the agent's own (known: global)",
        "ok    node pool: not set: Nomad's default",
        "FAIL  placement: the scheduler would not place it now: task group 'step' cannot be "
        "placed: no ready client node is in the requested datacenters and node pool "
        "(datacenters=['nope']); check `datacenters`, `node_pool` and `region`.",
    ]
    assert "warn  nodes: this token may not list nodes" in doctor.output
