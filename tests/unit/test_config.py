"""The settings table is the one place every setting's names are written."""

from __future__ import annotations

from pathlib import Path

from metaflow_nomad.api.connection import SETTING
from metaflow_nomad.config import (
    CONFIG_NAMES,
    SECRET_ENV_KEYS,
    SECRET_NAMES,
    SETTING_SPECS,
    settings_markdown,
)
from metaflow_nomad.settings import DECORATOR_ATTRIBUTES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_docs_settings_table_is_generated_from_the_specs():
    text = DOCS.read_text()
    start = text.index("<!-- settings-table:start -->\n") + len("<!-- settings-table:start -->\n")
    end = text.index("<!-- settings-table:end -->")
    assert text[start:end] == settings_markdown()


def test_every_name_appears_once():
    for attribute in ("decorator_key", "config_name", "connection_field"):
        names = [getattr(s, attribute) for s in SETTING_SPECS if getattr(s, attribute)]
        assert len(names) == len(set(names)), attribute


def test_derived_tables_agree_with_the_specs():
    assert set(DECORATOR_ATTRIBUTES) == {s.decorator_key for s in SETTING_SPECS if s.decorator_key}
    assert CONFIG_NAMES["NOMAD_ADDRESS"] == "NOMAD_ADDR"
    assert {"NOMAD_TOKEN"} == SECRET_NAMES
    assert {"NOMAD_TOKEN", "METAFLOW_NOMAD_TOKEN", "AWS_SECRET_ACCESS_KEY"} <= SECRET_ENV_KEYS
    assert SETTING["address"] == "METAFLOW_NOMAD_ADDRESS (or NOMAD_ADDR)"
    assert SETTING["namespace"] == "METAFLOW_NOMAD_NAMESPACE (or NOMAD_NAMESPACE)"
