"""The metadata service's settings in every job: the internal URL, a deployed run's
production token, and the API key, which only travels as a Nomad Variable's path
(template feature ``service_auth``), in a run's step job, a deployed step job, its
dispatch meta and the runner job."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from metaflow_nomad.deploy.runner_job import RunnerJob, render_runner_job
from metaflow_nomad.deploy.step_jobs import COMMAND_META, dispatch_meta, render_step_jobs
from metaflow_nomad.model import JobIdentity, TaskLaunch
from metaflow_nomad.render.bootstrap import forwarded_metaflow_config
from metaflow_nomad.render.context import RunnerTrigger
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.jobspec import check_offline, render_job, step_request
from metaflow_nomad.render.templates import PACKAGED_ROOT, Features
from metaflow_nomad.settings import resolve_step_settings

KEY = "mf-key-0123456789abcdef"
VARIABLE = "nomad/jobs"
IDENTITY = JobIdentity("Flow", "7", "train", "3", 0, "me")
README = Path(__file__).resolve().parents[3] / "nomad_templates" / "README.md"


@pytest.fixture
def launcher(monkeypatch):
    """A launcher whose Metaflow configuration has the service's key and internal URL."""
    from metaflow import metaflow_config as mc

    monkeypatch.setattr(mc, "SERVICE_URL", "https://metaflow.example.com")
    monkeypatch.setattr(mc, "SERVICE_INTERNAL_URL", "http://metaflow.service.consul:8080")
    monkeypatch.setattr(mc, "SERVICE_HEADERS", {"x-api-key": KEY})
    monkeypatch.setattr(mc, "DEFAULT_METADATA", "service")
    return {"METAFLOW_SERVICE_AUTH_KEY": KEY, "METAFLOW_PRODUCTION_TOKEN": "flow-0-abcd"}


def settings(**attributes):
    attributes.setdefault("driver", "raw_exec")
    return resolve_step_settings("train", attributes, python_version=(3, 11))


def test_tasks_get_the_internal_url_and_the_production_token_never_the_headers(launcher):
    env = forwarded_metaflow_config(launcher)
    assert env["METAFLOW_SERVICE_URL"] == "http://metaflow.service.consul:8080"
    assert env["METAFLOW_PRODUCTION_TOKEN"] == "flow-0-abcd"
    assert env["METAFLOW_DEFAULT_METADATA"] == "service"
    assert not {"METAFLOW_SERVICE_HEADERS", "METAFLOW_SERVICE_AUTH_KEY"} & set(env)
    assert KEY not in json.dumps(env)


def test_without_an_internal_url_tasks_get_the_launchers(monkeypatch):
    from metaflow import metaflow_config as mc

    monkeypatch.setattr(mc, "SERVICE_URL", "https://metaflow.example.com")
    monkeypatch.setattr(mc, "SERVICE_INTERNAL_URL", "https://metaflow.example.com")
    env = forwarded_metaflow_config({})
    assert env["METAFLOW_SERVICE_URL"] == "https://metaflow.example.com"
    assert "METAFLOW_PRODUCTION_TOKEN" not in env


def _template_data(hcl: str) -> str:
    [data] = re.findall(r"data\s+= <<EOT\n(.*?)\nEOT", hcl, flags=re.DOTALL)
    return data


def test_a_step_job_reads_the_headers_from_the_variable_and_holds_no_key(launcher):
    launch = TaskLaunch("echo hi", forwarded_metaflow_config(launcher))
    inputs = RenderInputs(service_auth_variable=VARIABLE)
    rendered = render_job(step_request(settings(), IDENTITY, launch), inputs)
    assert rendered.context.features == {
        "gpu": False,
        "mtls": False,
        "service_auth": True,
        "registry_auth": False,
        "task_api": False,
        "parallel": False,
    }
    assert rendered.context.service_auth == {"variable": VARIABLE}
    check_offline(rendered.hcl)
    assert 'change_mode = "noop"' in rendered.hcl and "env         = true" in rendered.hcl
    data = _template_data(rendered.hcl)
    assert data.startswith(f'{{{{ $path := "{VARIABLE}" }}}}{{{{ if nomadVarExists $path }}}}')
    assert 'METAFLOW_SERVICE_HEADERS="{{ .Value | replaceAll' in data
    assert KEY not in rendered.hcl


def test_without_headers_there_is_no_template_block():
    rendered = render_job(step_request(settings(), IDENTITY, TaskLaunch("x")), RenderInputs())
    assert rendered.context.service_auth is None
    assert "template {" not in rendered.hcl and "nomadVar" not in rendered.hcl


def test_a_project_override_of_task_extra_keeps_the_feature(tmp_path):
    directory = tmp_path / "nomad_templates"
    directory.mkdir()
    (directory / "base.nomad.hcl.j2").write_text(
        "{# metaflow-nomad-template-api: v1 #}\n"
        '{% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}\n'
        '{% block task_extra %}      meta { x = "y" }\n{% endblock %}\n'
    )
    inputs = RenderInputs(flow_dir=str(tmp_path), service_auth_variable="team/metaflow")
    rendered = render_job(step_request(settings(), IDENTITY, TaskLaunch("x")), inputs)
    assert '$path := "team/metaflow"' in rendered.hcl and 'x = "y"' in rendered.hcl


def test_deployed_step_jobs_and_their_dispatch_meta_hold_no_key(launcher):
    inputs = RenderInputs(service_auth_variable=VARIABLE)
    _, jobs = render_step_jobs("Flow", "flow", {"train": settings()}, inputs)
    [job] = jobs
    assert "nomadVar $path" in job.hcl and KEY not in job.hcl
    launch = TaskLaunch("echo hi", forwarded_metaflow_config(launcher))
    meta = dispatch_meta(IDENTITY, launch)
    script = base64.b64decode(meta[COMMAND_META]).decode()
    assert "export METAFLOW_PRODUCTION_TOKEN=flow-0-abcd" in script
    assert KEY not in json.dumps(meta) and KEY not in script


def test_the_runner_job_reads_the_headers_from_the_variable_too(launcher):
    runner = RunnerJob(
        job_id="flow",
        trigger=RunnerTrigger("dispatch"),
        settings=settings(),
        launch=TaskLaunch("echo runner", forwarded_metaflow_config(launcher)),
        meta={"metaflow.flow_name": "Flow"},
        deployment={"name": "flow"},
    )
    rendered = render_runner_job(runner, RenderInputs(service_auth_variable=VARIABLE))
    assert rendered.context.features["service_auth"] is True
    check_offline(rendered.hcl)
    assert f'$path := "{VARIABLE}"' in _template_data(rendered.hcl)
    assert KEY not in rendered.hcl
    assert '"METAFLOW_SERVICE_URL" = "http://metaflow.service.consul:8080"' in rendered.hcl


def test_every_feature_file_is_a_feature_in_the_readme():
    files = sorted(p.stem for p in (PACKAGED_ROOT / "v1" / "features").glob("*.j2"))
    assert files == sorted(Features().as_dict())
    table = README.read_text().split("| feature | on when | what it adds |", 1)[1]
    table = table.split("\n\n", 1)[0]
    assert re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE) == list(
        Features().as_dict()
    )


def test_service_auth_is_not_part_of_the_old_variant_names():
    assert Features(gpu=True, service_auth=True).legacy_variant() == "gpu"
    assert Features(service_auth=True).legacy_variant() == "plain"
