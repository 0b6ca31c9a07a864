"""Configuration names and how they are read.

Every setting is read through Metaflow's ``from_conf`` so that it can live in
the environment (``METAFLOW_NOMAD_*``) or in a Metaflow profile
(``~/.metaflowconfig/config.json``), like every other Metaflow setting.  The
standard ``NOMAD_*`` variables of the official CLI are the fallback for the
settings that have one.

This module is imported in every Metaflow process (the extension's config shim
declares these names), so it must stay free of heavy imports.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Name (after the METAFLOW_ prefix) -> the standard Nomad variable it falls back to.
CONFIG_NAMES: dict[str, str | None] = {
    "NOMAD_ADDRESS": "NOMAD_ADDR",
    "NOMAD_TOKEN": "NOMAD_TOKEN",
    "NOMAD_REGION": "NOMAD_REGION",
    "NOMAD_NAMESPACE": "NOMAD_NAMESPACE",
    "NOMAD_CACERT": "NOMAD_CACERT",
    "NOMAD_CLIENT_CERT": "NOMAD_CLIENT_CERT",
    "NOMAD_CLIENT_KEY": "NOMAD_CLIENT_KEY",
    "NOMAD_TLS_SERVER_NAME": "NOMAD_TLS_SERVER_NAME",
    "NOMAD_SKIP_VERIFY": "NOMAD_SKIP_VERIFY",
    "NOMAD_DEFAULT_DATACENTERS": None,
    "NOMAD_DEFAULT_IMAGE": None,
    "NOMAD_DRIVER": None,
    "NOMAD_CPU": None,
    "NOMAD_MEMORY": None,
    "NOMAD_DISK": None,
    "NOMAD_GPU_VENDOR": None,
    "NOMAD_NODE_POOL": None,
    "NOMAD_PRIORITY": None,
    "NOMAD_MHZ_PER_VCPU": None,
    "NOMAD_PENDING_TIMEOUT": None,
    "NOMAD_TEMPLATE": None,
    "NOMAD_TEMPLATES_DIR": None,
    "NOMAD_SHARED_FILESYSTEM": None,
    "NOMAD_TASK_TLS_DIR": None,
    "NOMAD_PYTHON": None,
}

# Set in every task's environment: "this process runs inside a Nomad task".
WORKLOAD_ENV = "METAFLOW_NOMAD_WORKLOAD"

# Settings that hold secrets: never printed, rendered or recorded.
SECRET_NAMES = frozenset({"NOMAD_TOKEN"})


def read_config(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values set through Metaflow: env ``METAFLOW_NOMAD_X`` or a Metaflow profile.

    Keys drop the ``METAFLOW_`` prefix; unset names are absent.
    """
    environ = os.environ if environ is None else environ
    from metaflow.metaflow_config_funcs import from_conf

    values: dict[str, str] = {}
    for name in CONFIG_NAMES:
        value = environ.get("METAFLOW_" + name)
        if value is None:
            value = from_conf(name, None)
        if value is not None and str(value) != "":
            values[name] = str(value)
    return values


def read_standard_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The official Nomad CLI variables that are set (NOMAD_ADDR, NOMAD_TOKEN, ...)."""
    environ = os.environ if environ is None else environ
    names = {v for v in CONFIG_NAMES.values() if v}
    return {name: environ[name] for name in names if environ.get(name)}


def connection_config(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """METAFLOW_NOMAD_* values, falling back to the standard NOMAD_* ones, by our names."""
    merged = read_config(environ)
    standard = read_standard_env(environ)
    for name, fallback in CONFIG_NAMES.items():
        if name not in merged and fallback in standard:
            merged[name] = standard[fallback]
    return merged


def is_truthy(value: str | None) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}
