"""Templates against the real agent: every combination of features, with and without
a project override and with ``template=``, parses; parse errors point at the
template; escaping survives both HCL parsing and Nomad's runtime interpolation."""

import base64
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaflow_nomad.errors import NomadParseError
from metaflow_nomad.model import JobIdentity, TaskLaunch
from metaflow_nomad.render.context import COMMAND_ENV
from metaflow_nomad.render.jobspec import parse_jobspec
from metaflow_nomad.settings import StepSettings, resolve_step_settings
from tests.support.flows import clean_environ, flow_source
from tests.support.render import render_step

pytestmark = pytest.mark.integration
IDENTITY = JobIdentity("TemplateFlow", "42", "train", "7", 0, "tester")
TLS_DIR = "/etc/nomad-tls"
OVERRIDE = """\
{# metaflow-nomad-template-api: v1 #}
{% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
{% block group_extra %}
    meta = { "override" = {{ values.marker }} }
{% endblock %}
"""


def step_settings(**attributes) -> StepSettings:
    attributes.setdefault("driver", "raw_exec")
    return resolve_step_settings("train", attributes, python_version=(3, 11))


FEATURES = {
    "plain": ({}, None),
    "gpu": ({"gpu": 2}, None),
    "mtls": ({"driver": "docker", "image": "python:3.11"}, TLS_DIR),
    "gpu+mtls": ({"driver": "docker", "image": "python:3.11", "gpu": 1}, TLS_DIR),
}
# How the step finds its template: the packaged one, the project's base override, or a
# template named with template= (which extends the base like any override).
LOOKUPS = {
    "packaged": ("v1/base.nomad.hcl.j2", "base.nomad.hcl.j2", None),
    "project override": ("base.nomad.hcl.j2", "base.nomad.hcl.j2", None),
    "template=": ("named.nomad.hcl.j2", "named.nomad.hcl.j2", "named"),
}


@pytest.mark.parametrize("lookup", list(LOOKUPS))
@pytest.mark.parametrize("feature_set", list(FEATURES))
def test_every_feature_combination_parses_through_the_agent(
    nomad_client, tmp_path, feature_set, lookup
):
    attributes, tls_dir = FEATURES[feature_set]
    expected_name, file_name, requested = LOOKUPS[lookup]
    if lookup != "packaged":
        (tmp_path / "nomad_templates").mkdir()
        (tmp_path / "nomad_templates" / file_name).write_text(OVERRIDE)
    settings = step_settings(**attributes, **({"template": requested} if requested else {}))
    rendered = render_step(
        settings, IDENTITY, TaskLaunch("echo hi"), tmp_path, tls_dir=tls_dir, values={"marker": "m"}
    )
    job = parse_jobspec(rendered, nomad_client)
    assert job["Meta"]["metaflow.template"] == expected_name
    assert job["Meta"]["metaflow.template_version"] == "v1"
    assert job["Meta"]["metaflow.template_sha256"] == rendered.template.sha256
    group = job["TaskGroups"][0]
    assert (group.get("Meta") or {}).get("override") == (None if lookup == "packaged" else "m")
    task = group["Tasks"][0]
    devices = task["Resources"].get("Devices") or []
    if attributes.get("gpu"):
        assert [(d["Name"], d["Count"]) for d in devices] == [("nvidia/gpu", attributes["gpu"])]
    else:
        assert devices == []
    if tls_dir is not None:
        assert task["Env"]["NOMAD_CACERT"] == "/etc/metaflow-nomad/tls/ca.pem"
        mounts = task["Config"]["mount"]
        assert mounts[0]["source"] == TLS_DIR and mounts[0]["readonly"] is True
    else:
        assert "NOMAD_CACERT" not in task["Env"]
        assert "mount" not in task["Config"]


def test_project_override_extending_a_block_parses(nomad_client, tmp_path):
    (tmp_path / "nomad_templates").mkdir()
    (tmp_path / "nomad_templates" / "base.nomad.hcl.j2").write_text(
        textwrap.dedent(
            """\
            {# metaflow-nomad-template-api: v1 #}
            {% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}
            {% block constraints %}
            {{ super() }}
              affinity {
                attribute = "${node.datacenter}"
                value     = {{ values.preferred_dc }}
                weight    = 50
              }
            {% endblock %}
            """
        )
    )
    constraint = {"attribute": "${attr.kernel.name}", "operator": "=", "value": "linux"}
    rendered = render_step(
        step_settings(constraints=[constraint]),
        IDENTITY,
        TaskLaunch("echo hi"),
        tmp_path,
        values={"preferred_dc": "dc1"},
    )
    job = parse_jobspec(rendered, nomad_client)
    assert job["Affinities"][0]["LTarget"] == "${node.datacenter}"
    assert job["Affinities"][0]["RTarget"] == "dc1"
    assert job["Constraints"][0]["LTarget"] == "${attr.kernel.name}"
    assert job["Meta"]["metaflow.template"] == "base.nomad.hcl.j2"


def test_parse_error_points_at_the_template_line(nomad_client, tmp_path):
    (tmp_path / "nomad_templates").mkdir()
    (tmp_path / "nomad_templates" / "broken.nomad.hcl.j2").write_text(
        "{# metaflow-nomad-template-api: v1 #}\n"
        '{% extends "metaflow_nomad/v1/base.nomad.hcl.j2" %}\n'
        "{% block task_extra %}\n"
        "\n"
        "      not_a_nomad_field = {{ memory }}\n"
        "{% endblock %}\n"
    )
    rendered = render_step(step_settings(template="broken"), IDENTITY, TaskLaunch("x"), tmp_path)
    with pytest.raises(NomadParseError) as info:
        parse_jobspec(rendered, nomad_client)
    message = str(info.value)
    assert f"{tmp_path}/nomad_templates/broken.nomad.hcl.j2:5:" in message
    assert "not_a_nomad_field = 4096" in message
    assert 'Unsupported argument; An argument named "not_a_nomad_field"' in message


# --- escaping: hostile strings survive parse-time HCL and runtime interpolation ----

HOSTILE_PARTS = st.sampled_from(
    [
        "${",
        "}",
        "$${",
        "%{",
        "%%{",
        "${NOMAD_ALLOC_ID}",
        "${attr.kernel.name}",
        "\\",
        '"',
        "\n",
        "\r",
        "\t",
        "\x00",
        "\x1b",
        "'",
        "`",
        "$(id)",
        "{{",
        "}}",
        "$",
        "%",
        "#",
        "//",
        "/*",
        "<<EOF",
        "\u2028",
        "é",
        "😀",
    ]
)
HOSTILE = (
    st.lists(
        st.one_of(
            HOSTILE_PARTS, st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
        ),
        max_size=8,
    )
    .map("".join)
    .filter(lambda s: unicodedata.is_normalized("NFC", s))
)
CASES = {"count": 0}


@settings(max_examples=520, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    env_value=HOSTILE,
    meta_key=HOSTILE.filter(bool),
    meta_value=HOSTILE,
    image=HOSTILE,
    constraint_value=HOSTILE,
    script=HOSTILE,
)
def test_hostile_strings_round_trip_through_the_real_parser(
    nomad_client, env_value, meta_key, meta_value, image, constraint_value, script
):
    CASES["count"] += 1
    base = step_settings(driver="docker")
    hostile = StepSettings(
        **{
            **base.__dict__,
            "image": image,
            "env": {"USER_VALUE": env_value},
            "meta": {meta_key: meta_value},
            "constraints": (
                {"attribute": "${meta.x}", "operator": "=", "value": constraint_value},
            ),
        }
    )
    job = nomad_client.parse(render_step(hostile, IDENTITY, TaskLaunch(script)).hcl)
    task = job["TaskGroups"][0]["Tasks"][0]
    assert task["Env"]["USER_VALUE"] == env_value
    assert job["Meta"][meta_key] == meta_value or meta_key.startswith("metaflow.")
    assert task["Config"]["image"] == image
    assert job["Constraints"][0]["RTarget"] == constraint_value
    assert base64.b64decode(task["Env"][COMMAND_ENV]).decode() == script


def test_hostile_case_count_was_at_least_500():
    # Runs after the property test in file order; prints the count for the record.
    print(f"hostile-string cases parsed through the real agent: {CASES['count']}")
    assert CASES["count"] >= 500


def test_step_command_is_immune_to_runtime_interpolation(nomad_client, tmp_path):
    """A real task prints hostile strings that Nomad would otherwise interpolate."""
    strings = [
        "${NOMAD_ALLOC_ID}",
        "${node.unique.name}",
        "${attr.kernel.name}",
        "$${x}",
        "%{ if true }x%{ endif }",
        "${env.HOME}",
        "${NOMAD_META_metaflow.user}",
        'quote " and \\ backslash',
        "tab\tand $HOME and $(echo no)",
    ]
    script = "".join(f"printf '%s\\n' {shlex.quote(s)}\n" for s in strings)
    identity = JobIdentity("TemplateFlow", str(time.time_ns()), "echo", "1", 0, "tester")
    rendered = render_step(step_settings(), identity, TaskLaunch(script), tmp_path)
    job = parse_jobspec(rendered, nomad_client)
    nomad_client.register(job)
    deadline = time.monotonic() + 60
    index = 0
    while time.monotonic() < deadline:
        allocs, index = nomad_client.job_allocations(rendered.job_id, index, 10)
        if allocs and allocs[0]["ClientStatus"] in ("complete", "failed"):
            break
    assert allocs[0]["ClientStatus"] == "complete"
    stdout = nomad_client.alloc_logs(allocs[0]["ID"], "metaflow", "stdout", 10000)
    assert stdout.splitlines() == strings


# --- metaflow-nomad render ------------------------------------------------------

RESOURCES_ONLY_FLOW = """
from metaflow import FlowSpec, nomad, resources, step


class PrecedenceFlow(FlowSpec):
    @nomad(cpu=3)
    @resources(cpu=1, memory=500)
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    PrecedenceFlow()
"""


def render_cli(nomad_agent, cwd, *args, env=None):
    full_env = dict(
        clean_environ(),
        USER="tester",
        METAFLOW_NOMAD_ADDRESS=nomad_agent.address,
        METAFLOW_NOMAD_SHARED_FILESYSTEM="1",
        METAFLOW_HOME=str(cwd / "mfhome"),
    )
    full_env.update(env or {})
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "metaflow-nomad"), "render", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_render_user_guide_example_json_via_agent(nomad_agent, nomad_client, tmp_path):
    (tmp_path / "nomad_flow.py").write_text(flow_source("nomad_flow.py").read_text())
    before = len(nomad_client.list_jobs())
    result = render_cli(
        nomad_agent, tmp_path, "nomad_flow.py", "--step", "compute_on_nomad", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["TaskGroups"][0]["Tasks"][0]["Resources"]["CPU"] == 2000
    assert job["TaskGroups"][0]["Tasks"][0]["Resources"]["MemoryMB"] == 1000
    assert job["TaskGroups"][0]["EphemeralDisk"]["SizeMB"] == 500
    assert "NOT submitted" in result.stderr
    assert len(nomad_client.list_jobs()) == before  # nothing was submitted


def test_render_shows_nomad_beats_resources_beats_config(nomad_agent, tmp_path):
    (tmp_path / "precedence_flow.py").write_text(RESOURCES_ONLY_FLOW)
    result = render_cli(
        nomad_agent,
        tmp_path,
        "precedence_flow.py",
        "--step",
        "start",
        "--format",
        "json",
        env={
            "METAFLOW_NOMAD_CPU": "5",
            "METAFLOW_NOMAD_MEMORY": "777",
            "METAFLOW_NOMAD_DISK": "888",
        },
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    resources = job["TaskGroups"][0]["Tasks"][0]["Resources"]
    assert resources["CPU"] == 3000  # @nomad(cpu=3) over @resources(cpu=1) and config 5
    assert resources["MemoryMB"] == 500  # @resources over config 777
    assert job["TaskGroups"][0]["EphemeralDisk"]["SizeMB"] == 888  # config over default


def test_render_offline_needs_no_cluster(tmp_path):
    (tmp_path / "precedence_flow.py").write_text(RESOURCES_ONLY_FLOW)

    class Nowhere:
        address = "http://127.0.0.1:9"

    result = render_cli(Nowhere, tmp_path, "precedence_flow.py", "--step", "start", "--offline")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('job "mf-precedenceflow-render-preview-start-1-0" {')
    assert "offline" in result.stderr


def test_render_exits_nonzero_on_errors(nomad_agent, tmp_path):
    (tmp_path / "precedence_flow.py").write_text(RESOURCES_ONLY_FLOW)
    result = render_cli(
        nomad_agent, tmp_path, "precedence_flow.py", "--step", "end", "--with", "nomad:memory=-1"
    )
    assert result.returncode != 0
    assert "setting 'memory' = -1 (from @nomad)" in result.stdout + result.stderr


def test_render_reproduces_the_submitted_jobspec_exactly(run_flow, nomad_client):
    """`nomad render` with the trampoline's own inputs prints the HCL Nomad stored."""
    result = run_flow("nomad_flow.py")
    assert result.returncode == 0, result.output
    job_id = next(
        j["ID"]
        for j in nomad_client.list_jobs(prefix="mf-nomadflow-")
        if j["Meta"]["metaflow.run_id"] == result.run_id
    )
    submitted = nomad_client.job_submission(job_id)["Source"]
    env = nomad_client.job(job_id)["TaskGroups"][0]["Tasks"][0]["Env"]
    script = base64.b64decode(env[COMMAND_ENV]).decode()
    # The step runs as `<capture> bash -c '<mflog>; <bootstrap && > python -u FLOW ... step S ...'`.
    line = next(line for line in script.splitlines() if "bash -c" in line)
    inner = shlex.split(line[line.index("bash -c") :])[2]
    words = shlex.split(inner[inner.rindex(" -u ") + len(" -u ") :])
    at = words.index("step")
    flow_file, top, step_name = words[0], words[1:at], words[at + 1]
    step_args = [
        env["METAFLOW_INPUT_PATHS_0"] if w == "${METAFLOW_INPUT_PATHS_0}" else w
        for w in words[at + 2 :]
    ]
    render_env = {**clean_environ(), **result.env}
    rendered = subprocess.run(
        [
            sys.executable,
            flow_file,
            *top,
            "nomad",
            "render",
            step_name,
            *step_args,
            "--code-package-url",
            env["METAFLOW_CODE_URL"],
            "--code-package-sha",
            env["METAFLOW_CODE_SHA"],
            "--code-package-metadata",
            env["METAFLOW_CODE_METADATA"],
        ],
        cwd=run_flow.workdir,
        env=render_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout == submitted + "\n"
