"""The bad-input catalogue: every case gets its exact user-facing message.

Settings are validated by one pure function before anything is rendered, so
none of these can reach Nomad; the integration module test_bad_input_cluster.py
shows that for whole runs and covers the cases only a cluster can detect.
The same table is in docs/bad-input.md.
"""

import textwrap

import pytest
from metaflow.decorators import Decorator
from metaflow.exception import InvalidDecoratorAttribute

from metaflow_nomad.errors import NomadSettingsError, NomadTemplateError
from metaflow_nomad.model import JobIdentity, TaskLaunch
from metaflow_nomad.plugin.decorator import NomadDecorator
from metaflow_nomad.settings import project_defaults_for_step, resolve_step_settings
from tests.support.render import render_step

CPU = (
    "a positive number: below 100 it counts vCPUs (e.g. cpu=2), 100 or more is MHz (e.g. cpu=4000)"
)
MEMORY = "a whole number of MB >= 10"
DISK = "a whole number of MB > 0"
GPU = "a whole number of GPUs >= 0"
DRIVER = "one of: docker, exec, raw_exec"
IMAGE = "a non-empty image name without spaces, e.g. python:3.11"
NAME = "a Nomad name: letters, digits, '.', '_' or '-'"
NODE_PATH = "an absolute path on the client nodes without ':'"
DCS = "a non-empty list of names, e.g. ['dc1', 'east-2a']"
CONSTRAINTS = (
    "a list of dicts with keys 'attribute', 'operator' and 'value', e.g. "
    '[{"attribute": "${attr.kernel.name}", "operator": "=", "value": "linux"}]'
)
OPERATORS = (
    "an operator among: =, ==, is, !=, not, >, >=, <, <=, regexp, version, semver, "
    "set_contains, set_contains_all, set_contains_any, is_set, is_not_set, distinct_hosts, "
    "distinct_property"
)
PRIORITY = "a whole number between 1 and 100"
ENV = "a dict of string keys to string values (keys must be valid environment variable names)"
META = "a dict of string keys to string values"
NETWORK_MODE = "one of bridge, host, none, or container:<name>"
DURATION = "a duration such as 90s, 10m or 1h30m"
VOLUMES = (
    "a list of bind mounts '/host/path:/container/path' with an optional ':ro' or ':rw', "
    "e.g. ['/data/shared:/data:ro']"
)

DECORATOR_CASES = [
    ("memory", -5, MEMORY),
    ("memory", 0, MEMORY),
    ("memory", "lots", MEMORY),
    ("memory", 1.5, MEMORY),
    ("memory", True, MEMORY),
    ("cpu", 0, CPU),
    ("cpu", -1, CPU),
    ("cpu", "fast", CPU),
    ("disk", 0, DISK),
    ("disk", -10, DISK),
    ("gpu", -1, GPU),
    ("gpu", 1.5, GPU),
    ("gpu", "two", GPU),
    ("driver", "podman", DRIVER),
    ("driver", "", DRIVER),
    ("image", "", IMAGE),
    ("image", "has space", IMAGE),
    ("image", 5, IMAGE),
    ("region", "", NAME),
    ("region", "bad region", NAME),
    ("datacenters", [], DCS),
    ("datacenters", "", DCS),
    ("datacenters", ["dc 1"], DCS),
    ("datacenters", 5, DCS),
    ("constraints", "linux", CONSTRAINTS),
    ("priority", 0, PRIORITY),
    ("priority", 101, PRIORITY),
    ("priority", "high", PRIORITY),
    ("env", "A=1", ENV),
    ("env", {"1BAD": "x"}, ENV),
    ("env", {"A": None}, ENV),
    ("env", {"A": [1]}, ENV),
    ("meta", ["a"], META),
    ("nomad_namespace", "bad ns", NAME),
    ("node_pool", "a/b", NAME),
    ("gpu_vendor", "NVIDIA!", "a device vendor such as 'nvidia' or 'amd'"),
    ("pending_timeout", -1, "seconds >= 0 (0 = no limit)"),
    ("template", "a b", "a template name or path"),
    ("package_cache", "relative/dir", NODE_PATH),
    ("package_cache", "/cache:/elsewhere", NODE_PATH),
    ("package_cache", ["/cache"], NODE_PATH),
    ("network_mode", "weird", NETWORK_MODE),
    ("network_mode", "container:", NETWORK_MODE),
    ("force_pull", "maybe", "true or false"),
    ("image_pull_timeout", "5 minutes", DURATION),
    ("image_pull_timeout", 300, DURATION),
    ("docker_runtime", "nvidia runtime", NAME),
    ("volumes", ["/data"], VOLUMES),
    ("volumes", ["/data:relative"], VOLUMES),
    ("volumes", ["/data:/data:rx"], VOLUMES),
    ("volumes", "/a:/b:ro:x", VOLUMES),
    ("volumes", {"a": "b"}, VOLUMES),
]


def message(setting, value, accepted, source="@nomad"):
    return (
        f"Step 'train': setting '{setting}' = {value!r} (from {source}) is not valid. "
        f"Expected {accepted}."
    )


def resolve(**layers):
    return resolve_step_settings("train", python_version=(3, 11), **layers)


@pytest.mark.parametrize(("setting", "value", "accepted"), DECORATOR_CASES)
def test_bad_decorator_value(setting, value, accepted):
    with pytest.raises(NomadSettingsError) as info:
        resolve(nomad_attributes={setting: value})
    assert str(info.value) == message(setting, value, accepted)


@pytest.mark.parametrize("setting", ["network_mode", "volumes", "force_pull"])
def test_docker_setting_on_a_raw_exec_step_is_refused(setting):
    value = {"network_mode": "host", "volumes": ["/d:/d"], "force_pull": True}[setting]
    with pytest.raises(NomadSettingsError) as info:
        resolve(nomad_attributes={"driver": "raw_exec", setting: value})
    assert str(info.value) == message(
        setting, value, "a setting of the docker driver; this step uses raw_exec"
    )


def test_docker_setting_from_config_does_not_apply_to_a_raw_exec_step():
    settings = resolve(
        nomad_attributes={"driver": "raw_exec"}, config={"NOMAD_NETWORK_MODE": "host"}
    )
    assert settings.docker is None


def test_docker_settings_resolve_from_every_layer():
    settings = resolve(
        nomad_attributes={"volumes": ["/data:/data:ro"]},
        config={"NOMAD_NETWORK_MODE": "host", "NOMAD_FORCE_PULL": "true"},
        project_defaults={"image_pull_timeout": "10m", "docker_runtime": "nvidia"},
    )
    assert settings.docker.network_mode == "host"
    assert settings.docker.force_pull is True
    assert settings.docker.image_pull_timeout == "10m"
    assert settings.docker.runtime == "nvidia"
    assert settings.docker.volumes == ("/data:/data:ro",)
    assert settings.sources["network_mode"] == "METAFLOW_NOMAD_NETWORK_MODE"


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        ({"attr": "x"}, CONSTRAINTS + " (unknown key 'attr')"),
        ({"attribute": "x", "operator": "~="}, OPERATORS),
        ({"operator": "="}, CONSTRAINTS + " ('attribute' is required)"),
        (5, CONSTRAINTS),
    ],
)
def test_malformed_constraint_names_the_constraint(constraint, expected):
    with pytest.raises(NomadSettingsError) as info:
        resolve(nomad_attributes={"constraints": [constraint]})
    assert str(info.value) == message("constraints", constraint, expected)


@pytest.mark.parametrize(
    ("config", "setting", "value", "accepted"),
    [
        ({"NOMAD_MEMORY": "abc"}, "memory", "abc", MEMORY),
        ({"NOMAD_CPU": "-2"}, "cpu", "-2", CPU),
        ({"NOMAD_DRIVER": "podman"}, "driver", "podman", DRIVER),
        ({"NOMAD_PRIORITY": "x"}, "priority", "x", PRIORITY),
        ({"NOMAD_DEFAULT_DATACENTERS": "dc1,,dc2"}, "datacenters", "dc1,,dc2", DCS),
    ],
)
def test_bad_config_value_names_the_variable(config, setting, value, accepted):
    with pytest.raises(NomadSettingsError) as info:
        resolve(nomad_attributes={}, config=config)
    name = "METAFLOW_" + next(iter(config))
    assert str(info.value) == message(setting, value, accepted, source=name)


def test_bad_mhz_per_vcpu():
    with pytest.raises(NomadSettingsError) as info:
        resolve(nomad_attributes={}, config={"NOMAD_MHZ_PER_VCPU": "0"})
    assert str(info.value) == message(
        "METAFLOW_NOMAD_MHZ_PER_VCPU",
        "0",
        "a positive number of MHz per vCPU, e.g. 1000",
        source="config",
    )


@pytest.mark.parametrize(
    ("spec", "setting", "value", "accepted"),
    [
        ("memory=abc", "memory", "abc", MEMORY),
        ("cpu=0", "cpu", 0, CPU),
        (
            'constraints=[{"attribute": "x", "operator": "~="}]',
            "constraints",
            {"attribute": "x", "operator": "~="},
            OPERATORS,
        ),
        ("datacenters=[]", "datacenters", [], DCS),
    ],
)
def test_bad_with_string(spec, setting, value, accepted):
    _, kwargs = Decorator.extract_args_kwargs_from_decorator_spec(spec)
    with pytest.raises(NomadSettingsError) as info:
        resolve(nomad_attributes=kwargs)
    assert str(info.value) == message(setting, value, accepted)


@pytest.mark.parametrize("key", ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "NOMAD_TOKEN"])
def test_credentials_in_env_are_refused_without_showing_them(key):
    with pytest.raises(NomadSettingsError) as info:
        resolve(nomad_attributes={"env": {key: "s3cr3t-value"}})
    assert str(info.value) == message(
        "env",
        {key: "<hidden>"},
        f"no credentials: {key} would be stored in the jobspec in plain text; deliver it "
        "with a Nomad Variable or Vault template block (see docs/s3.md)",
    )
    assert "s3cr3t-value" not in str(info.value)


def test_unknown_decorator_attribute_is_refused_by_metaflow():
    with pytest.raises(InvalidDecoratorAttribute) as info:
        NomadDecorator(attributes={"cpus": 2})
    assert "cpus" in str(info.value)


def test_unknown_project_file_setting():
    with pytest.raises(NomadSettingsError) as info:
        resolve(nomad_attributes={}, project_defaults={"memroy": 100})
    assert str(info.value).startswith(
        "Step 'train': setting 'memroy' = 100 (from metaflow_nomad.yaml) is not valid. "
        "Expected one of: image, driver,"
    )


def test_unknown_project_file_section():
    with pytest.raises(NomadSettingsError) as info:
        project_defaults_for_step({"default": {}}, "train")
    assert str(info.value) == message(
        "metaflow_nomad.yaml",
        ["default"],
        "a mapping with only the keys 'defaults', 'steps' and 'values'",
        source="metaflow_nomad.yaml",
    )


TEMPLATE_CASES = [
    (
        "syntax.nomad.hcl.j2",
        "{# metaflow-nomad-template-api: v1 #}\n{% if %}\n",
        "{dir}/syntax.nomad.hcl.j2:2: template syntax error: Expected an expression, got "
        "'end of statement block'. Fix the template at that line.",
    ),
    (
        "block.nomad.hcl.j2",
        "{# metaflow-nomad-template-api: v1 #}\n"
        '{% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}\n'
        "{% block taskextra %}{% endblock %}\n",
        "{dir}/block.nomad.hcl.j2:3: block 'taskextra' does not exist in "
        "'metaflow_nomad/v1/base.nomad.hcl.j2', so it would be ignored. Blocks you can replace: "
        "constraints, devices, dispatch, docker_options, driver_extra, env, extra_groups, "
        "extra_tasks, group_extra, job_placement, parallel_group, parallel_task, registry_auth, "
        "resources, service_auth, task_api, task_config, task_extra.",
    ),
    (
        "version.nomad.hcl.j2",
        "{# metaflow-nomad-template-api: v2 #}\njob {{ job_id }} {}\n",
        "{dir}/version.nomad.hcl.j2:1: the template targets template API 'v2', but this "
        "metaflow-nomad provides 'v1'. Port the template to v1 (see nomad_templates/README.md) "
        "or pin a matching metaflow-nomad version.",
    ),
    (
        "missing.nomad.hcl.j2",
        "{# metaflow-nomad-template-api: v1 #}\njob {{ job_id }} {\n  priority = {{ prio }}\n}\n",
        "{dir}/missing.nomad.hcl.j2:3: 'prio' is undefined. See nomad_templates/README.md for "
        "the variables a template may use.",
    ),
    (
        "none.nomad.hcl.j2",
        "{# metaflow-nomad-template-api: v1 #}\njob {{ job_id }} {\n  region = {{ region }}\n}\n",
        "{dir}/none.nomad.hcl.j2:3: None cannot be written into HCL; guard it with "
        "{% if ... is not none %}. See nomad_templates/README.md for the variables a template "
        "may use.",
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), TEMPLATE_CASES)
def test_bad_template(tmp_path, name, body, expected):
    directory = tmp_path / "nomad_templates"
    directory.mkdir()
    (directory / name).write_text(textwrap.dedent(body))
    settings = resolve(nomad_attributes={"template": name, "driver": "raw_exec"})
    with pytest.raises(NomadTemplateError) as info:
        render_step(
            settings, JobIdentity("F", "1", "train", "2", 0, "u"), TaskLaunch("x"), tmp_path
        )
    assert str(info.value) == expected.replace("{dir}", str(directory))
