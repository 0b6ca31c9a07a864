"""Feature ``registry_auth``: a docker step's image is pulled with credentials from a
Nomad Variable; the jobspec names the Variable and two env names, never a credential,
and the step itself never sees them."""

from __future__ import annotations

import re
import subprocess

from metaflow_nomad.deploy.step_jobs import render_step_jobs
from metaflow_nomad.model import JobIdentity, TaskLaunch
from metaflow_nomad.render.context import BOOTSTRAP_ARGS, REGISTRY_AUTH_ENV
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.jobspec import check_offline, render_job, step_request
from metaflow_nomad.settings import resolve_step_settings

IDENTITY = JobIdentity("Flow", "7", "train", "3", 0, "me")
IMAGE = "registry.example:5000/team/train:1.2"


def settings(**attributes):
    attributes.setdefault("image", IMAGE)
    return resolve_step_settings("train", attributes, python_version=(3, 11))


def render(**attributes):
    return render_job(
        step_request(settings(**attributes), IDENTITY, TaskLaunch("x")), RenderInputs()
    )


def _template_data(hcl: str) -> str:
    [data] = re.findall(r"data\s+= <<EOT\n(.*?)\nEOT", hcl, flags=re.DOTALL)
    return data


def test_the_job_pulls_with_the_variables_items_and_holds_only_names():
    rendered = render(registry_auth="team/registry")
    assert rendered.context.features["registry_auth"] is True
    assert rendered.context.docker["registry_auth"] == {"variable": "team/registry"}
    check_offline(rendered.hcl)
    assert (
        "        auth {\n"
        '          username = "${METAFLOW_NOMAD_REGISTRY_USERNAME}"\n'
        '          password = "${METAFLOW_NOMAD_REGISTRY_PASSWORD}"\n'
        "        }\n"
    ) in rendered.hcl
    data = _template_data(rendered.hcl)
    assert data.startswith('{{ $path := "team/registry" }}')
    assert "{{ if nomadVarExists $path }}{{ with nomadVar $path }}" in data
    assert "{{ with .registry_username }}{{ $user = .Value }}{{ end }}" in data
    assert 'METAFLOW_NOMAD_REGISTRY_PASSWORD="{{ $password | replaceAll' in data
    assert 'destination = "secrets/metaflow-registry.env"' in rendered.hcl


def test_without_the_setting_there_is_no_auth_and_no_template():
    rendered = render()
    assert rendered.context.features["registry_auth"] is False
    assert "auth {" not in rendered.hcl and "nomadVar" not in rendered.hcl


def test_a_deployed_step_job_pulls_the_same_way():
    _, jobs = render_step_jobs(
        "Flow", "flow", {"train": settings(registry_auth="nomad/jobs")}, RenderInputs()
    )
    [job] = jobs
    assert '{{ $path := "nomad/jobs" }}' in job.hcl
    assert 'username = "${METAFLOW_NOMAD_REGISTRY_USERNAME}"' in job.hcl


def test_the_bootstrap_unsets_the_credentials_before_the_step_runs():
    env = {"PATH": "/usr/bin:/bin", **dict.fromkeys(REGISTRY_AUTH_ENV, "s3cret")}
    env["METAFLOW_NOMAD_EXACT_ENV_B64"] = ""
    env["METAFLOW_NOMAD_COMMAND_B64"] = "ZW52"  # base64 of "env"
    shown = subprocess.run(
        ["/bin/bash", *BOOTSTRAP_ARGS], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "PATH=/usr/bin:/bin" in shown
    assert "s3cret" not in shown and "REGISTRY" not in shown
