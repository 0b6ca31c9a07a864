"""The HCL literal writer (pure logic; the real parser round trip is in integration)."""

import pytest

from metaflow_nomad.render.hcl import HclRaw, quote, to_hcl


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("line1\nline2\r\t", '"line1\\nline2\\r\\t"'),
        ("${attr.kernel.name}", '"$${attr.kernel.name}"'),
        ("%{ if x }", '"%%{ if x }"'),
        ("$${already}", '"$$${already}"'),
        ("bell\x07nul\x00", '"bell\\u0007nul\\u0000"'),
        ("ünïcødé ✓", '"ünïcødé ✓"'),
    ],
)
def test_quote_escapes_every_hcl_template_introducer(value, expected):
    assert quote(value) == expected


def test_to_hcl_writes_collections_and_scalars():
    assert to_hcl(["a", 1, True]) == '["a", 1, true]'
    assert to_hcl({"k": "v", "n": 2}) == '{ "k" = "v", "n" = 2 }'
    assert to_hcl({}) == "{}"
    assert to_hcl(2.5) == "2.5"


def test_raw_is_the_only_way_around_escaping():
    assert to_hcl(HclRaw('"${x}"')) == '"${x}"'


def test_none_is_refused_with_a_hint():
    with pytest.raises(TypeError, match="is not none"):
        to_hcl(None)


def test_values_hcl_would_normalise_are_refused():
    with pytest.raises(ValueError, match="not in Unicode NFC form"):
        quote("\ufa2a")
    with pytest.raises(ValueError, match="not in Unicode NFC form"):
        quote("e\u0301")


def test_combining_mark_after_an_escape_is_written_as_a_code_point():
    assert quote("\n\u0301") == '"\\n\\u0301"'
