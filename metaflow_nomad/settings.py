"""Resolve one step's Nomad settings from every layer, and validate them.

Precedence, highest first (documented in docs/settings.md):

1. ``@nomad(...)`` on the step, or ``--with nomad:...``
2. ``@resources(...)`` (cpu, memory, disk, gpu only; values the user actually set)
3. Metaflow configuration: ``METAFLOW_NOMAD_*`` (env or profile)
4. the project file ``metaflow_nomad.yaml`` (per-step section, then ``defaults``)
5. the standard ``NOMAD_*`` variables of the Nomad CLI, where one applies
6. built-in defaults

Everything here is pure: inputs in, a frozen ``StepSettings`` out, or an error
holding every bad value of the step, each a ``NomadSettingsError`` naming the
step, the setting, the bad value, where it came from and what is accepted (one
bad value is raised as it is; several together, see ``errors.raise_problems``).
Nothing is rendered or submitted before this passes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metaflow_nomad.config import STEP_SPECS
from metaflow_nomad.errors import NomadSettingsError, raise_problems
from metaflow_nomad.validation import Validator

DRIVERS = ("docker", "exec", "raw_exec")
# Settings of the docker driver's config block; other drivers have no such options.
DOCKER_SETTINGS = (
    "network_mode",
    "force_pull",
    "image_pull_timeout",
    "docker_runtime",
    "volumes",
    "registry_auth",
)
# Nomad's own minimum memory is 10 MB; a CPU share below 1 MHz is meaningless.
MIN_MEMORY_MB = 10
DEFAULT_MHZ_PER_VCPU = 1000

# Every attribute @nomad accepts, with None meaning "not set here".
DECORATOR_ATTRIBUTES: dict[str, Any] = {key: None for key in STEP_SPECS}
RESOURCES_SETTINGS = ("cpu", "memory", "disk", "gpu")


@dataclass(frozen=True)
class DockerOptions:
    """The docker driver's options a step may set (the rest belongs in a template).

    ``registry_auth`` is the path of the Nomad Variable, in the job's namespace, whose
    items ``registry_username`` and ``registry_password`` the task's image is pulled
    with (template feature ``registry_auth``): the jobspec names the Variable only.
    """

    network_mode: str | None = None
    force_pull: bool = False
    image_pull_timeout: str | None = None
    runtime: str | None = None
    volumes: tuple[str, ...] = ()
    registry_auth: str | None = None


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
    docker: DockerOptions | None = None
    package_cache: str | None = None
    task_api: bool = False
    sources: Mapping[str, str] = field(default_factory=dict)

    def describe_placement(self) -> str:
        """Where the job may be placed, for a pending task's explanation."""
        words = f"datacenters={list(self.datacenters)}"
        if self.node_pool:
            words += f", node_pool={self.node_pool}"
        if self.region:
            words += f", region={self.region}"
        return words

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

    Every setting is checked even after a bad one, and all of the step's problems
    are raised together, so that one run tells the user everything to fix.

    ``nomad_attributes`` and ``resources_attributes`` hold only values the user
    set (None means unset).  ``project_defaults`` is the already-selected mapping
    for this step from ``metaflow_nomad.yaml`` (see ``project_defaults_for_step``).
    """
    resources_attributes = resources_attributes or {}
    config = config or {}
    project_defaults = project_defaults or {}
    standard_env = standard_env or {}
    python_version = python_version or sys.version_info[:2]

    sources: dict[str, str] = {}
    v = Validator(step_name, sources)
    for key in sorted(set(project_defaults) - set(DECORATOR_ATTRIBUTES)):
        v.fail(
            key,
            project_defaults[key],
            "one of: " + ", ".join(DECORATOR_ATTRIBUTES),
            source="metaflow_nomad.yaml",
        )

    raw: dict[str, Any] = {}
    for name in DECORATOR_ATTRIBUTES:
        value, source = _pick(
            name, nomad_attributes, resources_attributes, config, project_defaults, standard_env
        )
        raw[name] = value
        sources[name] = source

    mhz_per_vcpu = v.number(
        "METAFLOW_NOMAD_MHZ_PER_VCPU",
        config.get("NOMAD_MHZ_PER_VCPU", DEFAULT_MHZ_PER_VCPU),
        minimum=1,
        accepted="a positive number of MHz per vCPU, e.g. 1000",
        source="config",
    )
    driver = v.choice("driver", raw["driver"], DRIVERS)
    image = raw["image"]
    if image is None:
        image = "python:%d.%d" % python_version
        sources["image"] = "default"
    values = dict(
        driver=driver,
        image=v.token("image", image, "a non-empty image name without spaces, e.g. python:3.11"),
        region=v.optional_name("region", raw["region"]),
        datacenters=v.name_list("datacenters", raw["datacenters"]),
        constraints=v.constraints(raw["constraints"]),
        # A bad MHz-per-vCPU is a problem of its own: the cpu value is still checked.
        cpu=v.cpu(raw["cpu"], mhz_per_vcpu or DEFAULT_MHZ_PER_VCPU),
        memory=v.integer(
            "memory", raw["memory"], minimum=MIN_MEMORY_MB, accepted="a whole number of MB >= 10"
        ),
        disk=v.integer("disk", raw["disk"], minimum=1, accepted="a whole number of MB > 0"),
        gpu=v.integer("gpu", raw["gpu"], minimum=0, accepted="a whole number of GPUs >= 0"),
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
        docker=_docker_options(v, raw, driver),
        package_cache=v.optional_node_path("package_cache", raw["package_cache"]),
        task_api=v.boolean("task_api", raw["task_api"]),
    )
    raise_problems(v.problems)
    return StepSettings(step_name=step_name, sources=sources, **values)


def _docker_options(
    v: Validator, raw: Mapping[str, Any], driver: str | None
) -> DockerOptions | None:
    """Docker options for a docker step.  For another driver, one set on the step
    itself is a mistake worth stopping for; one from config or the project file
    (meant for the docker steps of a mixed flow) does not apply and is left out.
    With a bad driver (None) the values are still checked, so that their problems
    are in the same report."""
    if driver not in ("docker", None):
        for name in DOCKER_SETTINGS:
            if v.sources.get(name) == "@nomad" and raw[name] not in (None, False, [], ()):
                v.fail(name, raw[name], f"a setting of the docker driver; this step uses {driver}")
        return None
    return DockerOptions(
        network_mode=v.network_mode(raw["network_mode"]),
        force_pull=v.boolean("force_pull", raw["force_pull"]),
        image_pull_timeout=v.duration("image_pull_timeout", raw["image_pull_timeout"]),
        runtime=v.optional_name("docker_runtime", raw["docker_runtime"]),
        volumes=v.volumes(raw["volumes"]),
        registry_auth=v.optional_variable_path("registry_auth", raw["registry_auth"]),
    )


def _pending_timeout(v: Validator, value: Any) -> float | None:
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
    spec = STEP_SPECS[name]
    if nomad_attributes.get(name) is not None:
        return nomad_attributes[name], "@nomad"
    if name in RESOURCES_SETTINGS and resources_attributes.get(name) is not None:
        return resources_attributes[name], "@resources"
    if spec.config_name and config.get(spec.config_name) not in (None, ""):
        return config[spec.config_name], spec.metaflow_name
    if project_defaults.get(name) is not None:
        return project_defaults[name], "metaflow_nomad.yaml"
    if spec.standard_env and standard_env.get(spec.standard_env):
        return standard_env[spec.standard_env], spec.standard_env
    return spec.default, "default"


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
