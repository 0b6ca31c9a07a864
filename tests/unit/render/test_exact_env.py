"""Which env values Nomad would change, and the exports that restore them (pure logic)."""

import subprocess
import unicodedata

from metaflow_nomad.render.exact_env import changed_by_nomad, exact_env, inexact_names

DECOMPOSED = unicodedata.normalize("NFD", "é")


def test_values_nomad_would_interpolate_or_hcl_normalise_are_detected():
    assert changed_by_nomad("${NOMAD_ALLOC_ID}")
    assert changed_by_nomad("x ${attr.kernel.name} y")
    assert changed_by_nomad(DECOMPOSED)
    assert not changed_by_nomad("$HOME {braces} %{x} é")


def test_jobspec_keeps_readable_copies_and_exports_restore_exact_values():
    env = {"PLAIN": "hello", "NOMADISH": "${node.unique.name}", "NFD": DECOMPOSED}
    plain, exports = exact_env(env)
    assert plain == {"PLAIN": "hello", "NOMADISH": "${node.unique.name}"}
    printed = subprocess.run(
        ["bash", "-c", exports + 'printf "%s|%s" "$NOMADISH" "$NFD"'],
        capture_output=True,
        check=True,
        env={"NOMADISH": "rewritten by nomad"},
    ).stdout.decode()
    assert printed == f"${{node.unique.name}}|{DECOMPOSED}"


def test_names_a_shell_cannot_export_are_reported():
    assert inexact_names({"A.B": "${x}", "A.C": "fine", "OK": "${x}"}) == ["A.B"]
