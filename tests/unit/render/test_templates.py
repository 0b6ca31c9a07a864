"""Template lookup, versioning, strictness and error locations (no cluster needed)."""

import textwrap

import pytest

from metaflow_nomad.errors import NomadTemplateError
from metaflow_nomad.model import JobIdentity, TaskLaunch
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.jobspec import step_request
from metaflow_nomad.render.templates import Features
from metaflow_nomad.settings import resolve_step_settings
from tests.support.render import render_step

IDENTITY = JobIdentity("Flow", "7", "train", "3", 0, "me")
TLS_DIR = "/etc/nomad.d/tls"


def settings(**attributes):
    attributes.setdefault("driver", "raw_exec")
    return resolve_step_settings("train", attributes, python_version=(3, 11))


def render(tmp_path, **attributes):
    return render_step(settings(**attributes), IDENTITY, TaskLaunch("echo hi"), tmp_path)


def write(tmp_path, name, body):
    directory = tmp_path / "nomad_templates"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(textwrap.dedent(body).lstrip())


@pytest.mark.parametrize(
    ("gpu", "tls_dir", "features"),
    [
        (0, None, Features()),
        (1, None, Features(gpu=True)),
        (0, TLS_DIR, Features(mtls=True)),
        (2, TLS_DIR, Features(gpu=True, mtls=True)),
    ],
)
def test_features_follow_settings_and_tls(gpu, tls_dir, features):
    inputs = RenderInputs(task_tls_dir=tls_dir, mtls_address="https://127.0.0.1:4646")
    request = step_request(settings(gpu=gpu), IDENTITY, TaskLaunch("x"))
    assert request.features(inputs) == features


def test_no_tls_material_without_an_mtls_address():
    inputs = RenderInputs(task_tls_dir=TLS_DIR, mtls_address=None)
    assert inputs.tls_for("raw_exec") is None


def test_docker_tasks_see_the_tls_directory_at_a_fixed_path():
    inputs = RenderInputs(task_tls_dir=TLS_DIR, mtls_address="https://127.0.0.1:4646")
    assert inputs.tls_for("docker").task_dir == "/etc/metaflow-nomad/tls"
    assert inputs.tls_for("raw_exec").task_dir == TLS_DIR


def test_gpu_step_requests_devices(tmp_path):
    rendered = render(tmp_path, gpu=2, gpu_vendor="amd")
    assert rendered.template.name == "v1/base.nomad.hcl.j2"
    assert rendered.context.features == {
        "gpu": True,
        "mtls": False,
        "service_auth": False,
        "registry_auth": False,
        "task_api": False,
        "parallel": False,
    }
    assert 'device "amd/gpu" {' in rendered.hcl
    assert "count = 2" in rendered.hcl


def test_plain_step_has_no_feature_blocks(tmp_path):
    rendered = render(tmp_path)
    assert "device " not in rendered.hcl
    assert "mount {" not in rendered.hcl
    assert "identity {" not in rendered.hcl


def test_task_api_step_gets_its_workload_identity_and_no_token(tmp_path):
    rendered = render(tmp_path, task_api=True)
    assert rendered.context.features["task_api"] is True
    assert "identity {\n        env = true\n      }" in rendered.hcl
    assert "NOMAD_TOKEN" not in rendered.hcl


def test_mtls_step_sets_nomad_env_for_the_step(tmp_path):
    rendered = render_step(settings(gpu=1), IDENTITY, TaskLaunch("x"), tmp_path, tls_dir=TLS_DIR)
    assert rendered.template.name == "v1/base.nomad.hcl.j2"
    env = rendered.context.env
    assert env["NOMAD_ADDR"] == "https://127.0.0.1:4646"
    assert env["NOMAD_CACERT"] == "/etc/nomad.d/tls/ca.pem"
    assert env["NOMAD_CLIENT_CERT"] == "/etc/nomad.d/tls/client.pem"
    assert env["NOMAD_CLIENT_KEY"] == "/etc/nomad.d/tls/client-key.pem"
    assert 'device "nvidia/gpu"' in rendered.hcl


def test_meta_records_template_name_version_hash_and_ids(tmp_path):
    meta = render(tmp_path).context.meta
    assert meta["metaflow.template"] == "v1/base.nomad.hcl.j2"
    assert meta["metaflow.template_version"] == "v1"
    assert len(meta["metaflow.template_sha256"]) == 64
    assert {
        meta[f"metaflow.{k}"]
        for k in ("flow_name", "run_id", "step_name", "task_id", "attempt", "user")
    } == {"Flow", "7", "train", "3", "0", "me"}


def test_project_override_replaces_one_block(tmp_path):
    write(
        tmp_path,
        "base.nomad.hcl.j2",
        """
        {# metaflow-nomad-template-api: v1 #}
        {% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
        {% block task_extra %}
              meta = { "team" = {{ values.team }} }
        {% endblock %}
        """,
    )
    rendered = render_step(
        settings(), IDENTITY, TaskLaunch("x"), tmp_path, values={"team": "vision"}
    )
    assert rendered.template.name == "base.nomad.hcl.j2"
    assert 'meta = { "team" = "vision" }' in rendered.hcl
    assert "restart {" in rendered.hcl  # the rest of the skeleton is inherited


def test_named_template_beats_the_project_override(tmp_path):
    write(
        tmp_path,
        "base.nomad.hcl.j2",
        """
        {# metaflow-nomad-template-api: v1 #}
        {% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
        """,
    )
    write(
        tmp_path,
        "special.nomad.hcl.j2",
        """
        {# metaflow-nomad-template-api: v1 #}
        {% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
        {% block group_extra %}
            # special
        {% endblock %}
        """,
    )
    assert render(tmp_path, template="special").template.name == "special.nomad.hcl.j2"
    assert "# special" in render(tmp_path, template="special").hcl


def test_content_hash_covers_the_parent_template(tmp_path):
    body = """
        {# metaflow-nomad-template-api: v1 #}
        {% extends "base2.nomad.hcl.j2" %}
        """
    write(tmp_path, "child.nomad.hcl.j2", body)
    write(
        tmp_path,
        "base2.nomad.hcl.j2",
        """
        {# metaflow-nomad-template-api: v1 #}
        {% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
        """,
    )
    first = render(tmp_path, template="child").template.sha256
    other = tmp_path / "other"
    other.mkdir()
    write(other, "child.nomad.hcl.j2", body)
    write(
        other,
        "base2.nomad.hcl.j2",
        """
        {# metaflow-nomad-template-api: v1 #}
        {% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
        {% block group_extra %}# changed{% endblock %}
        """,
    )
    assert render(other, template="child").template.sha256 != first


def test_api_version_mismatch_is_a_clear_error(tmp_path):
    write(
        tmp_path,
        "old.nomad.hcl.j2",
        """
        {# metaflow-nomad-template-api: v0 #}
        job {{ job_id }} {}
        """,
    )
    with pytest.raises(NomadTemplateError) as info:
        render(tmp_path, template="old")
    assert "old.nomad.hcl.j2:1: the template targets template API 'v0'" in str(info.value)
    assert "provides 'v1'" in str(info.value)


def test_missing_api_declaration_is_an_error(tmp_path):
    write(tmp_path, "bare.nomad.hcl.j2", "job {{ job_id }} {}\n")
    with pytest.raises(NomadTemplateError, match="does not declare the template API version"):
        render(tmp_path, template="bare")


def test_missing_variable_names_template_file_and_line(tmp_path):
    write(
        tmp_path,
        "typo.nomad.hcl.j2",
        """
        {# metaflow-nomad-template-api: v1 #}
        {% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
        {% block task_extra %}

              leader = {{ is_leader }}
        {% endblock %}
        """,
    )
    with pytest.raises(NomadTemplateError) as info:
        render(tmp_path, template="typo")
    assert "typo.nomad.hcl.j2:5: 'is_leader' is undefined" in str(info.value)


def test_jinja_syntax_error_names_file_and_line(tmp_path):
    write(
        tmp_path,
        "bad.nomad.hcl.j2",
        """
        {# metaflow-nomad-template-api: v1 #}
        {% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
        {% block task_extra %}
        {% if %}
        {% endblock %}
        """,
    )
    with pytest.raises(NomadTemplateError, match=r"bad.nomad.hcl.j2:4: template syntax error"):
        render(tmp_path, template="bad")


def test_unknown_block_in_override_is_an_error(tmp_path):
    write(
        tmp_path,
        "unknown.nomad.hcl.j2",
        """
        {# metaflow-nomad-template-api: v1 #}
        {% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
        {% block no_such_block %}x = 1{% endblock %}
        """,
    )
    with pytest.raises(NomadTemplateError, match="no_such_block"):
        render(tmp_path, template="unknown")


def test_unknown_template_lists_where_it_looked(tmp_path):
    with pytest.raises(NomadTemplateError, match="'nope' was not found"):
        render(tmp_path, template="nope")


def test_a_templates_dir_that_does_not_exist_is_an_error_not_ignored(tmp_path):
    from metaflow_nomad.render.templates import template_dirs

    missing = str(tmp_path / "no-such-dir")
    with pytest.raises(NomadTemplateError) as info:
        template_dirs(str(tmp_path), missing)
    assert str(info.value) == (
        f"METAFLOW_NOMAD_TEMPLATES_DIR is set to {missing!r}, which is not a directory. "
        "Point it at your project's template directory, or unset it."
    )


@pytest.fixture
def fresh_deprecations(monkeypatch):
    """Each deprecation line is printed once per process: start from none shown."""
    from metaflow_nomad.render import templates

    monkeypatch.setattr(templates, "_deprecations_shown", set())


@pytest.mark.parametrize("variant", ["plain", "gpu", "mtls", "gpu_mtls"])
def test_an_old_variant_name_is_the_step_template_with_one_deprecation_line(
    tmp_path, capsys, fresh_deprecations, variant
):
    first = render(tmp_path, template=variant, gpu=1)
    render(tmp_path, template=variant, gpu=1)
    assert first.template.name == "v1/base.nomad.hcl.j2"
    assert 'device "nvidia/gpu"' in first.hcl  # the step's features are kept
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("metaflow-nomad: deprecated: the template ")
    assert f"v1/{variant}.nomad.hcl.j2" in lines[0]


def test_an_override_extending_an_old_variant_still_renders(tmp_path, capsys, fresh_deprecations):
    write(
        tmp_path,
        "mine.nomad.hcl.j2",
        """
        {# metaflow-nomad-template-api: v1 #}
        {% extends "metaflow_nomad/v1/gpu.nomad.hcl.j2" %}
        {% block group_extra %}
            # mine
        {% endblock %}
        """,
    )
    rendered = render(tmp_path, template="mine", gpu=1)
    assert "# mine" in rendered.hcl
    assert 'device "nvidia/gpu"' in rendered.hcl
    assert "deprecated: the template 'v1/gpu.nomad.hcl.j2'" in capsys.readouterr().err


def test_a_project_override_named_like_the_old_variant_applies_to_its_steps(
    tmp_path, capsys, fresh_deprecations
):
    write(
        tmp_path,
        "gpu.nomad.hcl.j2",
        """
        {# metaflow-nomad-template-api: v1 #}
        {% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
        {% block group_extra %}
            # gpu steps
        {% endblock %}
        """,
    )
    assert "# gpu steps" in render(tmp_path, gpu=1).hcl
    assert "# gpu steps" not in render(tmp_path).hcl
    assert "rename it base.nomad.hcl.j2" in capsys.readouterr().err


def test_a_base_override_wins_over_an_old_variant_override(tmp_path, capsys, fresh_deprecations):
    for name in ("gpu", "base"):
        write(
            tmp_path,
            f"{name}.nomad.hcl.j2",
            f"""
            {{# metaflow-nomad-template-api: v1 #}}
            {{% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}}
            {{% block group_extra %}}
                # {name}
            {{% endblock %}}
            """,
        )
    rendered = render(tmp_path, gpu=1)
    assert "# base" in rendered.hcl
    assert "# gpu" not in rendered.hcl
    assert capsys.readouterr().err == ""
