"""Issue 10 item 4: user values reach a Nomad task byte for byte.

A property test through real tasks: each example is one run of
tests/flows/parity_flow.py on the session agent, carrying a batch of generated
values at once through every channel a user has: @environment values (from the
flow's config file), tags, a parameter, and a ``--with environment:vars=...``
string.  The tasks record what they saw; the Metaflow client reads it back.
Nomad's runtime interpolation (``${NOMAD_*}``, ``${attr.*}``, ``${node.*}``,
``${meta.*}``), the task's bash (quotes, backslashes, ``$``), HCL (newlines,
Unicode NFC) and the JSON on the way must all leave them unchanged.
"""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from metaflow.exception import MetaflowTaggingError
from metaflow.plugins.environment_decorator import EnvironmentDecorator
from metaflow.tagging_util import validate_tags

from tests.support.flows import read_run

pytestmark = pytest.mark.integration

FRAGMENTS = [
    "${NOMAD_ALLOC_ID}",
    "${NOMAD_META_metaflow.user}",
    "${attr.kernel.name}",
    "${node.unique.name}",
    "${meta.owner}",
    "$${x}",
    "%{ if true }",
    "$HOME",
    "$(id)",
    "`id`",
    '"',
    "'",
    "\\",
    "\\n",
    "\n",
    "\t",
    "é",
    unicodedata.normalize("NFD", "é"),
    "✓ 漢字",
    " ",
]
ANY_CHAR = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
HOSTILE = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(ANY_CHAR, max_size=4)), max_size=6
).map("".join)
# Metaflow's own decospec grammar (locally too) cannot carry '"', '\' or ','
# inside a --with value (it splits on commas and unescapes \" before parsing).
WITH_VALUE = HOSTILE.map(lambda v: v.replace('"', "").replace("\\", "").replace(",", ""))
TAG = HOSTILE.filter(lambda t: t and not t.startswith("-"))

ISSUE_CASES = [
    "${NOMAD_ALLOC_ID}",
    "${attr.kernel.name}",
    "${node.unique.name}",
    "${meta.owner}",
    "say \"hi\" and 'bye'",
    "back\\slash\\",
    "two\nlines",
    "ünïcødé ✓ " + unicodedata.normalize("NFD", "é"),
]
RUNS = {"count": 0, "values": 0}


def valid_tags(tags: list[str]) -> bool:
    """Tags local Metaflow accepts (length and encoding limits)."""
    try:
        validate_tags(tags)
    except MetaflowTaggingError:
        return False
    return True


def with_spec(values: dict[str, str]) -> str:
    return "environment:vars=" + json.dumps(values)


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(
    env_values=ISSUE_CASES,
    tags=ISSUE_CASES,
    text=" ".join(ISSUE_CASES),
    with_values=[v.replace('"', "").replace("\\", "") for v in ISSUE_CASES],
)
@given(
    env_values=st.lists(HOSTILE, min_size=8, max_size=8),
    tags=st.lists(TAG, min_size=1, max_size=6, unique=True).filter(valid_tags),
    text=HOSTILE,
    with_values=st.lists(WITH_VALUE, min_size=4, max_size=4),
)
def test_user_values_reach_the_task_byte_for_byte(run_flow, env_values, tags, text, with_values):
    env = {f"PARITY_{i}": v for i, v in enumerate(env_values)}
    with_env = {f"WITH_{i}": v for i, v in enumerate(with_values)}
    spec = with_spec(with_env)
    # What a local run would see: Metaflow's own parse of the same --with string.
    assert EnvironmentDecorator.parse_decorator_spec(spec.split(":", 1)[1]).attributes == {
        "vars": with_env
    }
    (run_flow.workdir / "parity_values.json").write_text(
        json.dumps({"env": env, "with_names": sorted(with_env)})
    )
    tag_args = [arg for tag in tags for arg in ("--tag", tag)]
    result = run_flow("parity_flow.py", *tag_args, "--text", text, top_args=("--with", spec))
    assert result.returncode == 0, result.output
    run = read_run(result, f"ParityFlow/{result.run_id}")
    [start] = run["steps"]["start"]
    [middle] = run["steps"]["middle"]
    assert start["metadata"]["nomad-job-id"] and middle["metadata"]["nomad-job-id"]
    assert start["data"]["env_seen"] == env
    assert set(tags) <= set(start["data"]["tags_seen"])
    assert start["data"]["text_seen"] == text
    assert middle["data"]["with_seen"] == with_env
    RUNS["count"] += 1
    RUNS["values"] += len(env) + len(tags) + 1 + len(with_env)


def test_parity_examples_ran():
    # Runs after the property test in file order; prints the count for the record.
    print(f"byte-parity: {RUNS['count']} flow runs, {RUNS['values']} values through real tasks")
    assert RUNS["count"] >= 4
