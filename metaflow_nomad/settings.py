"""Resolve one step's Nomad settings from every layer, and validate them.

Precedence, highest first (documented in docs/settings.md):

1. ``@nomad(...)`` on the step, or ``--with nomad:...``
2. ``@resources(...)`` (cpu, memory, disk, gpu only; values the user actually set)
3. Metaflow configuration: ``METAFLOW_NOMAD_*`` (env or profile)
4. the project file ``metaflow_nomad.yaml`` (per-step section, then ``defaults``)
5. the standard ``NOMAD_*`` variables of the Nomad CLI, where one applies
6. built-in defaults

Everything here is pure: inputs in, a frozen ``StepSettings`` out, or a
``NomadSettingsError`` naming the step, the setting, the bad value, where it came
from and what is accepted.  Nothing is rendered or submitted before this passes.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import NomadSettingsError

DRIVERS = ("docker", "exec", "raw_exec")
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
# Nomad's own minimum memory is 10 MB; a CPU share below 1 MHz is meaningless.
MIN_MEMORY_MB = 10
VCPU_THRESHOLD = 100
DEFAULT_MHZ_PER_VCPU = 1000

# Every attribute @nomad accepts, with None meaning "not set here".
DECORATOR_ATTRIBUTES: dict[str, Any] = {
    "image": None,
    "driver": None,
    "region": None,
    "datacenters": None,
    "constraints": None,
    "cpu": None,
    "memory": None,
    "disk": None,
    "gpu": None,
    "gpu_vendor": None,
    "nomad_namespace": None,
    "node_pool": None,
    "priority": None,
    "env": None,
    "meta": None,
    "template": None,
    "pending_timeout": None,
}

# Setting -> METAFLOW_NOMAD_* config name (without METAFLOW_).
CONFIG_FOR_SETTING = {
    "image": "NOMAD_DEFAULT_IMAGE",
    "driver": "NOMAD_DRIVER",
    "region": "NOMAD_REGION",
    "datacenters": "NOMAD_DEFAULT_DATACENTERS",
    "cpu": "NOMAD_CPU",
    "memory": "NOMAD_MEMORY",
    "disk": "NOMAD_DISK",
    "gpu_vendor": "NOMAD_GPU_VENDOR",
    "nomad_namespace": "NOMAD_NAMESPACE",
    "node_pool": "NOMAD_NODE_POOL",
    "priority": "NOMAD_PRIORITY",
    "pending_timeout": "NOMAD_PENDING_TIMEOUT",
    "template": "NOMAD_TEMPLATE",
}
# Setting -> standard Nomad CLI variable.
STANDARD_ENV_FOR_SETTING = {"region": "NOMAD_REGION", "nomad_namespace": "NOMAD_NAMESPACE"}
RESOURCES_SETTINGS = ("cpu", "memory", "disk", "gpu")

BUILTIN_DEFAULTS: dict[str, Any] = {
    "driver": "docker",
    "datacenters": ["*"],
    "constraints": [],
    "cpu": 1,
    "memory": 4096,
    "disk": 10240,
    "gpu": 0,
    "gpu_vendor": "nvidia",
    "env": {},
    "meta": {},
}

# Values under these names are credentials; in a jobspec they would be stored in
# plain text, so they must come from the cluster (Variables, Vault, node files).
SECRET_ENV_KEYS = frozenset(
    {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "NOMAD_TOKEN", "METAFLOW_NOMAD_TOKEN"}
)
SECRET_ENV_HINT = (
    "no credentials: {key} would be stored in the jobspec in plain text; deliver it "
    "with a Nomad Variable or Vault template block (see docs/s3.md)"
)

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VENDOR_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class StepSettings:
    """The validated settings for one step; the only input templates see from users."""

    step_name: str
    driver: str
    image: str | None
    region: str | None
    datacenters: tuple[str, ...]
    constraints: tuple[Mapping[str, str], ...]
    cpu: int
    memory: int
    disk: int
    gpu: int
    gpu_vendor: str
    nomad_namespace: str | None
    node_pool: str | None
    priority: int | None
    env: Mapping[str, str]
    meta: Mapping[str, str]
    template: str | None
    pending_timeout: float | None
    sources: Mapping[str, str] = field(default_factory=dict)

    def describe_resources(self) -> str:
        """One line for the user: what the job will request, and from where."""
        parts = [
            f"cpu={self.cpu} MHz ({self.sources.get('cpu', 'default')})",
            f"memory={self.memory} MB ({self.sources.get('memory', 'default')})",
            f"disk={self.disk} MB ({self.sources.get('disk', 'default')})",
        ]
        if self.gpu:
            parts.append(f"gpu={self.gpu} x {self.gpu_vendor}/gpu")
        return ", ".join(parts)


def resolve_step_settings(
    step_name: str,
    nomad_attributes: Mapping[str, Any],
    resources_attributes: Mapping[str, Any] | None = None,
    config: Mapping[str, str] | None = None,
    project_defaults: Mapping[str, Any] | None = None,
    standard_env: Mapping[str, str] | None = None,
    python_version: tuple[int, int] | None = None,
) -> StepSettings:
    """Merge every layer for one step and validate the result.

    ``nomad_attributes`` and ``resources_attributes`` hold only values the user
    set (None means unset).  ``project_defaults`` is the already-selected mapping
    for this step from ``metaflow_nomad.yaml`` (see ``project_defaults_for_step``).
    """
    resources_attributes = resources_attributes or {}
    config = config or {}
    project_defaults = project_defaults or {}
    standard_env = standard_env or {}
    python_version = python_version or sys.version_info[:2]

    unknown = sorted(set(project_defaults) - set(DECORATOR_ATTRIBUTES))
    if unknown:
        raise NomadSettingsError(
            step_name,
            unknown[0],
            project_defaults[unknown[0]],
            "one of: " + ", ".join(DECORATOR_ATTRIBUTES),
            "metaflow_nomad.yaml",
        )

    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in DECORATOR_ATTRIBUTES:
        value, source = _pick(
            name, nomad_attributes, resources_attributes, config, project_defaults, standard_env
        )
        raw[name] = value
        sources[name] = source

    mhz_per_vcpu = _as_number(
        step_name,
        "METAFLOW_NOMAD_MHZ_PER_VCPU",
        config.get("NOMAD_MHZ_PER_VCPU", DEFAULT_MHZ_PER_VCPU),
        "config",
        "a positive number of MHz per vCPU, e.g. 1000",
        minimum=1,
    )
    v = _Validator(step_name, sources)
    driver = v.choice("driver", raw["driver"], DRIVERS)
    image = raw["image"]
    if image is None:
        image = "python:%d.%d" % python_version
        sources["image"] = "default"
    image = v.token("image", image, "a non-empty image name without spaces, e.g. python:3.11")
    gpu = v.integer("gpu", raw["gpu"], minimum=0, accepted="a whole number of GPUs >= 0")
    return StepSettings(
        step_name=step_name,
        driver=driver,
        image=image,
        region=v.optional_name("region", raw["region"]),
        datacenters=v.name_list("datacenters", raw["datacenters"]),
        constraints=v.constraints(raw["constraints"]),
        cpu=v.cpu(raw["cpu"], mhz_per_vcpu),
        memory=v.integer(
            "memory", raw["memory"], minimum=MIN_MEMORY_MB, accepted="a whole number of MB >= 10"
        ),
        disk=v.integer("disk", raw["disk"], minimum=1, accepted="a whole number of MB > 0"),
        gpu=gpu,
        gpu_vendor=v.vendor(raw["gpu_vendor"]),
        nomad_namespace=v.optional_name("nomad_namespace", raw["nomad_namespace"]),
        node_pool=v.optional_name("node_pool", raw["node_pool"]),
        priority=None
        if raw["priority"] is None
        else v.integer("priority", raw["priority"], minimum=1, maximum=100),
        env=v.env(raw["env"]),
        meta=v.string_map("meta", raw["meta"], key_re=None),
        template=None
        if raw["template"] is None
        else v.token("template", raw["template"], "a template name or path"),
        pending_timeout=_pending_timeout(v, raw["pending_timeout"]),
        sources=sources,
    )


def _pending_timeout(v: _Validator, value: Any) -> float | None:
    if value is None:
        return None
    seconds = v.number("pending_timeout", value, minimum=0, accepted="seconds >= 0 (0 = no limit)")
    return seconds or None


def _pick(
    name: str,
    nomad_attributes: Mapping[str, Any],
    resources_attributes: Mapping[str, Any],
    config: Mapping[str, str],
    project_defaults: Mapping[str, Any],
    standard_env: Mapping[str, str],
) -> tuple[Any, str]:
    if nomad_attributes.get(name) is not None:
        return nomad_attributes[name], "@nomad"
    if name in RESOURCES_SETTINGS and resources_attributes.get(name) is not None:
        return resources_attributes[name], "@resources"
    config_name = CONFIG_FOR_SETTING.get(name)
    if config_name and config.get(config_name) not in (None, ""):
        return config[config_name], "METAFLOW_" + config_name
    if project_defaults.get(name) is not None:
        return project_defaults[name], "metaflow_nomad.yaml"
    env_name = STANDARD_ENV_FOR_SETTING.get(name)
    if env_name and standard_env.get(env_name):
        return standard_env[env_name], env_name
    return BUILTIN_DEFAULTS.get(name), "default"


def _as_number(step, setting, value, source, accepted, minimum=None):
    if isinstance(value, bool):
        raise NomadSettingsError(step, setting, value, accepted, source)
    if isinstance(value, (int, float)):
        number = value
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise NomadSettingsError(step, setting, value, accepted, source) from None
    if number != number or (minimum is not None and number < minimum):  # NaN or too small
        raise NomadSettingsError(step, setting, value, accepted, source)
    return number


def _parse_structured(value: Any) -> Any:
    """--with and config deliver lists/dicts as JSON strings; accept those too."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class _Validator:
    def __init__(self, step: str, sources: Mapping[str, str]):
        self.step = step
        self.sources = sources

    def fail(self, setting: str, value: Any, accepted: str):
        raise NomadSettingsError(
            self.step, setting, value, accepted, self.sources.get(setting, "default")
        )

    def number(self, setting, value, minimum=None, accepted="a number"):
        return _as_number(
            self.step, setting, value, self.sources.get(setting, "default"), accepted, minimum
        )

    def integer(self, setting, value, minimum=None, maximum=None, accepted=None):
        if accepted is None:
            accepted = f"a whole number between {minimum} and {maximum}"
        number = self.number(setting, value, minimum=minimum, accepted=accepted)
        if number != int(number) or (maximum is not None and number > maximum):
            self.fail(setting, value, accepted)
        return int(number)

    def cpu(self, value, mhz_per_vcpu):
        accepted = (
            "a positive number: below 100 it counts vCPUs (e.g. cpu=2), "
            "100 or more is MHz (e.g. cpu=4000)"
        )
        number = self.number("cpu", value, accepted=accepted)
        if number <= 0:
            self.fail("cpu", value, accepted)
        mhz = number * mhz_per_vcpu if number < VCPU_THRESHOLD else number
        return max(1, round(mhz))

    def choice(self, setting, value, choices):
        if value not in choices:
            self.fail(setting, value, "one of: " + ", ".join(choices))
        return value

    def token(self, setting, value, accepted):
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            self.fail(setting, value, accepted)
        return value

    def optional_name(self, setting, value):
        if value is None:
            return None
        if not isinstance(value, str) or not _NAME_RE.match(value):
            self.fail(setting, value, "a Nomad name: letters, digits, '.', '_' or '-'")
        return value

    def vendor(self, value):
        if not isinstance(value, str) or not _VENDOR_RE.match(value):
            self.fail("gpu_vendor", value, "a device vendor such as 'nvidia' or 'amd'")
        return value

    def name_list(self, setting, value):
        original = value
        value = _parse_structured(value)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        accepted = "a non-empty list of names, e.g. ['dc1', 'east-2a']"
        if not isinstance(value, (list, tuple)) or not value:
            self.fail(setting, original, accepted)
        for item in value:
            if not isinstance(item, str) or not item or any(c.isspace() for c in item):
                self.fail(setting, original, accepted)
        return tuple(value)

    def constraints(self, value):
        value = _parse_structured(value)
        accepted = (
            "a list of dicts with keys 'attribute', 'operator' and 'value', e.g. "
            '[{"attribute": "${attr.kernel.name}", "operator": "=", "value": "linux"}]'
        )
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, (list, tuple)):
            self.fail("constraints", value, accepted)
        result = []
        for item in value:
            if not isinstance(item, dict) or not item:
                self.fail("constraints", item, accepted)
            extra = set(item) - {"attribute", "operator", "value"}
            if extra:
                self.fail("constraints", item, accepted + f" (unknown key {sorted(extra)[0]!r})")
            operator = item.get("operator", "=")
            if operator not in CONSTRAINT_OPERATORS:
                self.fail(
                    "constraints",
                    item,
                    "an operator among: " + ", ".join(CONSTRAINT_OPERATORS),
                )
            constraint = {"operator": operator}
            for key in ("attribute", "value"):
                if key in item:
                    if not isinstance(item[key], (str, int, float)) or isinstance(item[key], bool):
                        self.fail("constraints", item, accepted)
                    constraint[key] = str(item[key])
            if "attribute" not in constraint and operator not in ("distinct_hosts",):
                self.fail("constraints", item, accepted + " ('attribute' is required)")
            result.append(constraint)
        return tuple(result)

    def env(self, value):
        env = self.string_map("env", value, key_re=_ENV_KEY_RE)
        for key in sorted(SECRET_ENV_KEYS & set(env)):
            self.fail("env", {key: "<hidden>"}, SECRET_ENV_HINT.format(key=key))
        return env

    def string_map(self, setting, value, key_re):
        value = _parse_structured(value)
        accepted = "a dict of string keys to string values"
        if key_re is not None:
            accepted += " (keys must be valid environment variable names)"
        if not isinstance(value, dict):
            self.fail(setting, value, accepted)
        result = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key or (key_re and not key_re.match(key)):
                self.fail(setting, value, accepted)
            if isinstance(item, (dict, list)) or item is None:
                self.fail(setting, value, accepted)
            result[key] = item if isinstance(item, str) else json.dumps(item)
        return result


def project_defaults_for_step(document: Mapping[str, Any] | None, step_name: str) -> dict:
    """Pick this step's values from a parsed ``metaflow_nomad.yaml``.

    Schema: ``{"defaults": {setting: value}, "steps": {step_name: {setting: value}},
    "values": {...}}``; a step's own section wins over ``defaults``, and ``values``
    is free-form data for templates (not a setting).
    """
    if not document:
        return {}
    if not isinstance(document, Mapping) or set(document) - {"defaults", "steps", "values"}:
        raise NomadSettingsError(
            step_name,
            "metaflow_nomad.yaml",
            sorted(document) if isinstance(document, Mapping) else document,
            "a mapping with only the keys 'defaults', 'steps' and 'values'",
            "metaflow_nomad.yaml",
        )
    merged = dict(document.get("defaults") or {})
    merged.update((document.get("steps") or {}).get(step_name) or {})
    return merged
