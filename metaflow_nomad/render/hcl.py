"""Turn Python values into HCL2 literals that parse back to exactly the same value.

Every ``{{ value }}`` in a template goes through ``to_hcl`` (it is the Jinja
``finalize`` hook), so a template cannot forget to quote or escape: a string is
always emitted as a complete, escaped, quoted HCL string.  ``HclRaw`` is the one
explicit way out (the ``hcl_raw`` filter).

Escaping covers the parse-time rules of HCL2 quoted templates: backslash, double
quote, control characters, and the template introducers ``${`` and ``%{``.  HCL
also normalises every string to Unicode NFC (the property test found U+FA2A
coming back as U+98EF, even when written as an escape), so a value that is not
NFC-stable is refused with a clear error instead of being changed silently.
Nomad's *runtime* interpolation (``${NOMAD_...}`` in env, args, meta) has no
escape at all; values that must survive it are delivered base64-encoded instead
(see ``render/context.py``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping


class HclRaw(str):
    """A string that is already HCL and is emitted unchanged."""


_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(text: str) -> str:
    """Return ``text`` as an HCL2 quoted string literal."""
    out = []
    for char in text:
        escaped = _SIMPLE_ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append("\\u%04x" % ord(char))
        else:
            out.append(char)
    body = "".join(out).replace("${", "$${").replace("%{", "%%{")
    if not unicodedata.is_normalized("NFC", text):
        # HCL normalises strings to Unicode NFC, escaped or not, so such a value
        # would reach Nomad changed.  Refuse it rather than submit something else.
        raise ValueError(
            f"the value {text!r} is not in Unicode NFC form, and HCL would silently "
            "normalise it; pass unicodedata.normalize('NFC', value) instead"
        )
    if not unicodedata.is_normalized("NFC", body):
        # A combining mark right after an escape (e.g. "\\n" + U+0301) would compose
        # with the escape's letter in the source; escaped code points do not.
        body = "".join(c if ord(c) < 0x80 else _unicode_escape(c) for c in body)
    return '"' + body + '"'


def _unicode_escape(char: str) -> str:
    code = ord(char)
    return "\\u%04x" % code if code <= 0xFFFF else "\\U%08x" % code


def to_hcl(value: object) -> str:
    """Render a value as an HCL2 expression (the Jinja ``finalize`` hook)."""
    if isinstance(value, HclRaw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, Mapping):
        items = ", ".join(f"{quote(str(k))} = {to_hcl(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_hcl(v) for v in value) + "]"
    if value is None:
        raise TypeError("None cannot be written into HCL; guard it with {% if ... is not none %}")
    raise TypeError(f"cannot write a {type(value).__name__} into HCL")
