"""The typed template context: one constructor for every kind of job, and the
README's variable table kept equal to its fields."""

import dataclasses
import re
from pathlib import Path

from metaflow_nomad.model import JobIdentity, TaskLaunch
from metaflow_nomad.render.context import TemplateContext
from metaflow_nomad.settings import resolve_step_settings
from tests.support.render import render_step

README = Path(__file__).resolve().parents[3] / "nomad_templates" / "README.md"
IDENTITY = JobIdentity("Flow", "7", "train", "3", 1, "me")


def documented_variables() -> list[str]:
    """The first column of the README's "Variables a template may use" table."""
    section = README.read_text().split("## Variables a template may use", 1)[1]
    table = section.split("\n\n| variable |", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)


def test_the_readme_documents_exactly_the_context_fields():
    fields = [f.name for f in dataclasses.fields(TemplateContext)]
    assert documented_variables() == fields


def test_the_template_sees_every_field_and_nothing_else(tmp_path):
    settings = resolve_step_settings("train", {"driver": "raw_exec"}, python_version=(3, 11))
    rendered = render_step(settings, IDENTITY, TaskLaunch("x"), tmp_path)
    names = set(rendered.context.as_template_vars())
    assert names == {f.name for f in dataclasses.fields(TemplateContext)}
    assert rendered.context.metaflow["attempt"] == 1
    assert rendered.context.trigger is None
