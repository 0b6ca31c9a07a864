"""Checks for one setting value at a time.  Each bad value is recorded as a
``NomadSettingsError`` that names the step, the setting, the value, its source and
the accepted form, and the checks go on, so that one run reports every bad value."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from metaflow_nomad.config import SECRET_ENV_KEYS, secret_env_problem
from metaflow_nomad.errors import NomadSettingsError

CONSTRAINT_OPERATORS = (
    "=",
    "==",
    "is",
    "!=",
    "not",
    ">",
    ">=",
    "<",
    "<=",
    "regexp",
    "version",
    "semver",
    "set_contains",
    "set_contains_all",
    "set_contains_any",
    "is_set",
    "is_not_set",
    "distinct_hosts",
    "distinct_property",
)
VCPU_THRESHOLD = 100
NETWORK_MODES = ("bridge", "host", "none")
_DURATION_RE = re.compile(r"^(\d+(ns|us|ms|s|m|h))+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VENDOR_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# Nomad's own rule for Variable paths (nomad/structs/variables.go).
_VARIABLE_PATH_RE = re.compile(r"^[a-zA-Z0-9_~/-]{1,128}$")
VARIABLE_PATH_RULE = "a Nomad Variable path: 1 to 128 letters, digits, '-', '_', '~' or '/'"


def variable_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a Nomad Variable's path, or None.  Such a path is also
    a Go template string literal as it is, so a template may embed it."""
    return None if _VARIABLE_PATH_RE.match(path) else VARIABLE_PATH_RULE


def _finite_number(value: Any) -> float | None:
    """A number from a number or its text (--with and config give text), or None.

    Booleans are not numbers here, and neither are NaN and infinity: no setting can
    use them, and infinity would overflow as a whole number of MB or MHz.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = value
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            return None
    return number if math.isfinite(number) else None


def parse_structured(value: Any) -> Any:
    """--with and config deliver lists/dicts as JSON strings; accept those too."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class Validator:
    """Checks one step's values and records each bad one in ``problems``.

    A check that finds a bad value records it and returns None in its place, so the
    caller goes on to the next setting; ``resolve_step_settings`` raises all of a
    step's problems together once every setting was checked.
    """

    def __init__(self, step: str, sources: Mapping[str, str]):
        self.step = step
        self.sources = sources
        self.problems: list[NomadSettingsError] = []

    def fail(self, setting: str, value: Any, accepted: str, source: str | None = None) -> None:
        """Record a bad value; returns the placeholder a check gives back for it."""
        source = source or self.sources.get(setting, "default")
        self.problems.append(NomadSettingsError(self.step, setting, value, accepted, source))

    def number(
        self,
        setting: str,
        value: Any,
        minimum: float | None = None,
        accepted: str = "a number",
        source: str | None = None,
    ) -> float | None:
        number = _finite_number(value)
        if number is None or (minimum is not None and number < minimum):
            return self.fail(setting, value, accepted, source)
        return number

    def integer(
        self,
        setting: str,
        value: Any,
        minimum: int | None = None,
        maximum: int | None = None,
        accepted: str | None = None,
    ) -> int | None:
        if accepted is None:
            accepted = f"a whole number between {minimum} and {maximum}"
        number = self.number(setting, value, minimum=minimum, accepted=accepted)
        if number is None:
            return None
        if number != int(number) or (maximum is not None and number > maximum):
            return self.fail(setting, value, accepted)
        return int(number)

    def cpu(self, value: Any, mhz_per_vcpu: float) -> int | None:
        accepted = (
            "a positive number: below 100 it counts vCPUs (e.g. cpu=2), "
            "100 or more is MHz (e.g. cpu=4000)"
        )
        number = self.number("cpu", value, accepted=accepted)
        if number is None:
            return None
        if number <= 0:
            return self.fail("cpu", value, accepted)
        mhz = number * mhz_per_vcpu if number < VCPU_THRESHOLD else number
        return max(1, round(mhz))

    def choice(self, setting: str, value: Any, choices: tuple[str, ...]) -> str | None:
        if value not in choices:
            return self.fail(setting, value, "one of: " + ", ".join(choices))
        return value

    def token(self, setting: str, value: Any, accepted: str) -> str | None:
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            return self.fail(setting, value, accepted)
        return value

    def optional_node_path(self, setting: str, value: Any) -> str | None:
        """An absolute path on the client nodes, usable as both sides of a docker
        bind mount (so no ':')."""
        if value is None:
            return None
        if (
            not isinstance(value, str)
            or not value.startswith("/")
            or ":" in value
            or any(c in value for c in "\n\r")
        ):
            return self.fail(setting, value, "an absolute path on the client nodes without ':'")
        return value.rstrip("/") or "/"

    def optional_name(self, setting: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _NAME_RE.match(value):
            return self.fail(setting, value, "a Nomad name: letters, digits, '.', '_' or '-'")
        return value

    def optional_variable_path(self, setting: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or variable_path_problem(value):
            return self.fail(setting, value, VARIABLE_PATH_RULE + ", e.g. nomad/jobs")
        return value

    def boolean(self, setting: str, value: Any) -> bool | None:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        return self.fail(setting, value, "true or false")

    def duration(self, setting: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _DURATION_RE.match(value):
            return self.fail(setting, value, "a duration such as 90s, 10m or 1h30m")
        return value

    def network_mode(self, value: Any) -> str | None:
        if value is None:
            return None
        if value not in NETWORK_MODES and not (
            isinstance(value, str) and value.startswith("container:") and len(value) > 10
        ):
            return self.fail(
                "network_mode",
                value,
                "one of " + ", ".join(NETWORK_MODES) + ", or container:<name>",
            )
        return value

    def volumes(self, value: Any) -> tuple[str, ...] | None:
        original = value
        value = parse_structured(value)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        accepted = (
            "a list of bind mounts '/host/path:/container/path' with an optional ':ro' or ':rw', "
            "e.g. ['/data/shared:/data:ro']"
        )
        if not isinstance(value, (list, tuple)):
            return self.fail("volumes", original, accepted)
        for item in value:
            parts = item.split(":") if isinstance(item, str) else []
            if not 2 <= len(parts) <= 3 or not all(parts[:2]) or not parts[1].startswith("/"):
                return self.fail("volumes", original, accepted)
            if len(parts) == 3 and parts[2] not in ("ro", "rw"):
                return self.fail("volumes", original, accepted)
        return tuple(value)

    def vendor(self, value: Any) -> str | None:
        if not isinstance(value, str) or not _VENDOR_RE.match(value):
            return self.fail("gpu_vendor", value, "a device vendor such as 'nvidia' or 'amd'")
        return value

    def name_list(self, setting: str, value: Any) -> tuple[str, ...] | None:
        original = value
        value = parse_structured(value)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        accepted = "a non-empty list of names, e.g. ['dc1', 'east-2a']"
        if not isinstance(value, (list, tuple)) or not value:
            return self.fail(setting, original, accepted)
        for item in value:
            if not isinstance(item, str) or not item or any(c.isspace() for c in item):
                return self.fail(setting, original, accepted)
        return tuple(value)

    def constraints(self, value: Any) -> tuple[dict[str, str], ...] | None:
        value = parse_structured(value)
        accepted = (
            "a list of dicts with keys 'attribute', 'operator' and 'value', e.g. "
            '[{"attribute": "${attr.kernel.name}", "operator": "=", "value": "linux"}]'
        )
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return self.fail("constraints", value, accepted)
        result = []
        for item in value:
            if not isinstance(item, dict) or not item:
                return self.fail("constraints", item, accepted)
            extra = set(item) - {"attribute", "operator", "value"}
            if extra:
                return self.fail(
                    "constraints", item, accepted + f" (unknown key {sorted(extra)[0]!r})"
                )
            operator = item.get("operator", "=")
            if operator not in CONSTRAINT_OPERATORS:
                return self.fail(
                    "constraints",
                    item,
                    "an operator among: " + ", ".join(CONSTRAINT_OPERATORS),
                )
            constraint = {"operator": operator}
            for key in ("attribute", "value"):
                if key in item:
                    if not isinstance(item[key], (str, int, float)) or isinstance(item[key], bool):
                        return self.fail("constraints", item, accepted)
                    constraint[key] = str(item[key])
            if "attribute" not in constraint and operator not in ("distinct_hosts",):
                return self.fail("constraints", item, accepted + " ('attribute' is required)")
            result.append(constraint)
        return tuple(result)

    def env(self, value: Any) -> dict[str, str] | None:
        env = self.string_map("env", value, key_re=_ENV_KEY_RE)
        if env is None:
            return None
        problem = secret_env_problem(env)
        if problem:
            key = sorted(SECRET_ENV_KEYS & set(env))[0]
            return self.fail("env", {key: "<hidden>"}, problem)
        return env

    def string_map(
        self, setting: str, value: Any, key_re: re.Pattern[str] | None
    ) -> dict[str, str] | None:
        value = parse_structured(value)
        accepted = "a dict of string keys to string values"
        if key_re is not None:
            accepted += " (keys must be valid environment variable names)"
        if not isinstance(value, dict):
            return self.fail(setting, value, accepted)
        result = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key or (key_re and not key_re.match(key)):
                return self.fail(setting, value, accepted)
            if isinstance(item, (dict, list)) or item is None:
                return self.fail(setting, value, accepted)
            result[key] = item if isinstance(item, str) else json.dumps(item)
        return result
