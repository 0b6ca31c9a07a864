"""Env values that must reach the task exactly, although Nomad would change them.

Nomad replaces ``${NOMAD_*}``, ``${attr.*}``, ``${node.*}``, ``${meta.*}``... in
every env value when a task starts, and has no escape for it; HCL turns every
string into Unicode NFC.  A value either would change is therefore also exported
by the encoded bootstrap (``jobspec.EXACT_ENV``), which runs before anything
else, so the task sees the value that was given: an ``@environment`` value means
the same on Nomad as it does locally.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from collections.abc import Mapping

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def changed_by_nomad(value: str) -> bool:
    """Would Nomad (runtime interpolation) or HCL (NFC) hand the task another string?"""
    return "${" in value or not unicodedata.is_normalized("NFC", value)


def inexact_names(env: Mapping[str, str]) -> list[str]:
    """Variables whose value Nomad would change and that no shell export can set."""
    return [k for k, v in env.items() if changed_by_nomad(str(v)) and not _SHELL_NAME.match(k)]


def exact_env(env: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """Split ``env`` into what the jobspec carries, and exports that restore the rest.

    The jobspec keeps a readable copy of every value HCL can hold (Nomad may
    rewrite it; the export puts it back); a non-NFC value is only exported.
    Callers check ``inexact_names`` first: such a name is left to Nomad.
    """
    plain: dict[str, str] = {}
    exports = []
    for name, value in env.items():
        if unicodedata.is_normalized("NFC", value):
            plain[name] = value
        if changed_by_nomad(value) and _SHELL_NAME.match(name):
            exports.append(f"export {name}={shlex.quote(value)}\n")
    return plain, "".join(exports)
