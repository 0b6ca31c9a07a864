"""Runs and ``doctor`` with Metaflow's metadata service (metaflow-local-service here).

The launcher reaches the service at its public URL, the tasks at its internal one
(``METAFLOW_SERVICE_INTERNAL_URL``), each through a gate that refuses a request
without the API key: a run that succeeds shows the tasks had the key, which they
can only have read from the Nomad Variable, since no jobspec carries it.
Outcomes are read from outside: the Metaflow client (against the service itself,
past the gates), the gates' records, the Nomad API and the files the run left.
"""

from __future__ import annotations

import json
import re

import pytest

from metaflow_nomad.api.lookup import find_jobs
from tests.support.flows import flow_env, run_flow
from tests.support.leaks import file_places, job_places, secret_locations
from tests.support.metadata_service import (
    API_KEY_HEADER,
    FLOW,
    FLOW_NAME,
    SECRETS_FILE,
    VARIABLE,
    ServiceGate,
    card_shows,
    delete_headers_variable,
    put_headers_variable,
    read_back,
    service_env,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def headers_variable(nomad_agent, service_gates):
    public, _ = service_gates
    put_headers_variable(nomad_agent, public.api_key)
    yield
    delete_headers_variable(nomad_agent)


@pytest.fixture(scope="module")
def service_run(nomad_agent, service_gates, headers_variable, tmp_path_factory):
    """ServiceFlow run on Nomad with --metadata=service, the API key and an internal URL."""
    public, internal = service_gates
    workdir = tmp_path_factory.mktemp("service-run")
    env = flow_env(nomad_agent.address, workdir, service_env(public, internal))
    run = run_flow(FLOW, workdir, env, timeout=240)
    assert run.returncode == 0, run.output
    return run


def test_steps_record_their_tasks_tags_and_cards_in_the_service(service_run, metadata_service):
    run_id = service_run.run_id
    assert run_id.isdigit()  # the service assigned it
    run = read_back(service_run.workdir, metadata_service.url, f"{FLOW_NAME}/{run_id}")
    assert run["successful"]
    assert "from-nomad" in run["tags"]
    assert run["namespace_seen"] == run["start_namespace"] == "user:tester"
    assert run["own_alloc"] and run["own_alloc"] == run["start_alloc"]
    assert "Written on Nomad" in card_shows(run["card"])
    # The service's own files, not a local metadata directory, hold the run.
    assert (metadata_service.root / ".metaflow" / FLOW_NAME / run_id / "_meta").is_dir()
    assert not (service_run.workdir / ".metaflow" / FLOW_NAME / run_id / "_meta").exists()


def test_tasks_reach_the_service_at_its_internal_url(service_run, service_gates):
    public, internal = service_gates

    def task_writes(gate: ServiceGate) -> set[str]:
        """Steps whose artifacts were registered through ``gate``: only a task does that."""
        found = set()
        for seen in gate.requests_for(FLOW_NAME, service_run.run_id):
            match = re.search(r"/steps/([^/]+)/tasks/[^/]+/artifact$", seen.path)
            if seen.method == "POST" and match:
                found.add(match.group(1))
        return found

    assert task_writes(internal) == {"start", "end"}
    assert task_writes(public) == {"_parameters"}  # the run's parameters: in the launcher
    # The launcher itself keeps the public URL.
    assert public.requests_for(FLOW_NAME, service_run.run_id)


def test_the_api_key_reaches_tasks_from_the_variable_and_is_written_nowhere(
    nomad_agent, nomad_client, service_run, service_gates
):
    public, _ = service_gates
    # Every request carried the key: the gates refused none.
    assert [s for gate in service_gates for s in gate.seen if not s.authorized] == []
    jobs = find_jobs(nomad_client, FLOW_NAME, service_run.run_id, include_dead=True)
    assert {j["Meta"]["metaflow.step_name"] for j in jobs} == {"start", "end"}
    places = {"flow output": service_run.output}
    for stub in jobs:
        places.update(job_places(nomad_agent, stub["ID"], "metaflow"))
        task = nomad_client.job(stub["ID"])["TaskGroups"][0]["Tasks"][0]
        in_env = {"METAFLOW_SERVICE_HEADERS", "METAFLOW_SERVICE_AUTH_KEY"} & set(task["Env"])
        assert in_env == set()  # (compared as names: the values stay out of the message)
        [template] = task["Templates"]
        assert "nomadVar" in template["EmbeddedTmpl"]
        assert f'"{VARIABLE}"' in template["EmbeddedTmpl"]
        assert template["Envvars"] and template["ChangeMode"] == "noop"
        for alloc in nomad_agent.api("GET", f"/v1/job/{stub['ID']}/allocations"):
            # The file the template rendered: Nomad's file API refuses a task's secrets/.
            rendered = f"/v1/client/fs/cat/{alloc['ID']}?path=metaflow/{SECRETS_FILE}"
            places[f"alloc file {rendered}"] = nomad_agent.api_text(rendered)
            assert "Reading secret file prohibited" in places[f"alloc file {rendered}"]
    workdir = service_run.workdir
    places.update(file_places(workdir / ".metaflow", workdir / "mfhome"))
    key = public.api_key
    secrets = {"the API key": key, "the headers": json.dumps({API_KEY_HEADER: key})}
    assert secret_locations(secrets, places) == []


# -- doctor -----------------------------------------------------------------------------


def _doctor(workdir, env, *options):
    return run_flow(FLOW, workdir, env, "doctor", *options, command="nomad")


def _lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines()]


def test_doctor_checks_the_service_the_variable_and_the_tasks_path_to_it(
    nomad_agent, service_gates, headers_variable, tmp_path
):
    public, internal = service_gates
    env = flow_env(nomad_agent.address, tmp_path, service_env(public, internal))
    result = _doctor(tmp_path, env, "--probe")
    assert result.returncode == 0, result.output
    lines = _lines(result.output)
    assert f"ok    metadata service: {public.url} answered /ping (service 2.5.0)" in lines
    assert f"info  tasks' service URL: {internal.url} (from METAFLOW_SERVICE_INTERNAL_URL)" in lines
    assert (
        f"ok    service auth: tasks get METAFLOW_SERVICE_HEADERS ({API_KEY_HEADER}) from the "
        f"Nomad Variable {VARIABLE} in namespace 'default', the same as this launcher's"
    ) in lines
    assert (
        f"ok    metadata service from the task: {internal.url} answered /ping with the "
        f"task's headers ({API_KEY_HEADER})"
    ) in lines
    assert public.api_key not in result.output
    assert [s for s in internal.seen if s.path == "/ping"]  # the probe task's ping


def test_doctor_says_what_to_set_when_the_key_is_wrong_and_the_variable_missing(
    nomad_agent, service_gates, tmp_path
):
    public, _ = service_gates
    missing = "nomad/jobs/missing"
    settings = {
        **service_env(public),
        "METAFLOW_SERVICE_AUTH_KEY": "not-the-key",
        "METAFLOW_NOMAD_SERVICE_AUTH_VARIABLE": missing,
    }
    env = flow_env(nomad_agent.address, tmp_path, settings)
    result = _doctor(tmp_path, env)
    assert result.returncode == 1
    lines = _lines(result.output)
    assert (
        f"FAIL  metadata service: {public.url} refused /ping (HTTP 403): set "
        "METAFLOW_SERVICE_AUTH_KEY (or METAFLOW_SERVICE_HEADERS) to what the service accepts"
    ) in lines
    assert (
        f"FAIL  service auth: no Nomad Variable {missing} in namespace 'default', so tasks "
        "would send no METAFLOW_SERVICE_HEADERS: store it (docs/metadata-service.md): nomad "
        f"var put -namespace default {missing} METAFLOW_SERVICE_HEADERS=<the headers as JSON>"
    ) in lines
    assert "not-the-key" not in result.output
