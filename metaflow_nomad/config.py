"""Every setting's names, in one table, and how configuration is read.

A setting can have up to three names: its ``@nomad`` key, its Metaflow
configuration name (``METAFLOW_NOMAD_*``, from the environment or a Metaflow
profile, read through ``from_conf``) and the standard ``NOMAD_*`` variable of the
official CLI that it falls back to.  ``SETTING_SPECS`` is the only place they are
written: the settings resolver, the API client's messages, the secret checks,
the config shim and the table in ``docs/settings.md`` all derive from it.

This module is imported in every Metaflow process (the extension's config shim
declares these names), so it must stay free of heavy imports.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Set in every task's environment: "this process runs inside a Nomad task".
WORKLOAD_ENV = "METAFLOW_NOMAD_WORKLOAD"
# Set in a deployed flow's runner: the version of the deployment's step jobs that
# its launchers dispatch (instead of rendering and registering a job per task).
STEP_JOBS_ENV = "METAFLOW_NOMAD_STEP_JOBS"
# Set where the Metaflow profile's METAFLOW_NOMAD_* values are already in the
# environment (a task's launcher): the profile is not read again.
PROFILE_EXPORTED_ENV = "METAFLOW_NOMAD_PROFILE_EXPORTED"


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its names in each layer, and what the docs say about it."""

    kind: str  # "step" (resolved per step), "connection" (the API client), "launcher"
    doc_type: str
    default_doc: str
    meaning: str = ""
    decorator_key: str | None = None  # the @nomad attribute
    config_name: str | None = None  # METAFLOW_ + this
    standard_env: str | None = None  # the Nomad CLI's own variable
    connection_field: str | None = None  # the ConnectionSettings field
    secret: bool = False
    default: Any = None

    @property
    def metaflow_name(self) -> str | None:
        return "METAFLOW_" + self.config_name if self.config_name else None

    def describe(self) -> str:
        """Where a user sets it, for messages: ``METAFLOW_NOMAD_X (or NOMAD_X)``."""
        names = [n for n in (self.metaflow_name, self.standard_env) if n]
        if self.decorator_key and not names:
            return f"@nomad({self.decorator_key}=...)"
        return names[0] + (f" (or {names[1]})" if len(names) > 1 else "")


def _step(key, doc_type, default_doc, config=None, standard=None, default=None, conn=None):
    return SettingSpec(
        kind="step",
        doc_type=doc_type,
        default_doc=default_doc,
        decorator_key=key,
        config_name=config,
        standard_env=standard,
        connection_field=conn,
        default=default,
    )


def _conn(field, config, standard, meaning, secret=False):
    return SettingSpec(
        kind="connection",
        doc_type="str",
        default_doc="",
        meaning=meaning,
        config_name=config,
        standard_env=standard,
        connection_field=field,
        secret=secret,
    )


def _launcher(config, meaning, default_doc=""):
    return SettingSpec(
        kind="launcher",
        doc_type="str",
        default_doc=default_doc,
        meaning=meaning,
        config_name=config,
    )


SETTING_SPECS: tuple[SettingSpec, ...] = (
    _step(
        "image", "str", "`python:<major>.<minor>` of the launching Python", "NOMAD_DEFAULT_IMAGE"
    ),
    _step("driver", "`docker`, `exec`, `raw_exec`", "`docker`", "NOMAD_DRIVER", default="docker"),
    _step("region", "str", "the agent's", "NOMAD_REGION", "NOMAD_REGION", conn="region"),
    _step(
        "datacenters",
        'list[str] or `"dc1,dc2"`',
        '`["*"]`',
        "NOMAD_DEFAULT_DATACENTERS",
        default=["*"],
    ),
    _step("constraints", "list of `{attribute, operator, value}`", "`[]`", default=[]),
    _step("cpu", "number (see below)", "1 vCPU", "NOMAD_CPU", default=1),
    _step("memory", "int MB", "4096", "NOMAD_MEMORY", default=4096),
    _step("disk", "int MB (ephemeral disk)", "10240", "NOMAD_DISK", default=10240),
    _step("gpu", "int", "0", default=0),
    _step("gpu_vendor", "str", "`nvidia`", "NOMAD_GPU_VENDOR", default="nvidia"),
    _step(
        "nomad_namespace",
        "str",
        "the agent's",
        "NOMAD_NAMESPACE",
        "NOMAD_NAMESPACE",
        conn="namespace",
    ),
    _step("node_pool", "str", "Nomad's (`default`)", "NOMAD_NODE_POOL"),
    _step("priority", "int 1-100", "Nomad's (50)", "NOMAD_PRIORITY"),
    _step("env", "dict", "`{}`", default={}),
    _step("meta", "dict", "`{}`", default={}),
    _step(
        "template",
        "name or path",
        "`base`, with the step's features (see `nomad_templates/README.md`)",
        "NOMAD_TEMPLATE",
    ),
    _step("pending_timeout", "seconds", "none", "NOMAD_PENDING_TIMEOUT"),
    _step(
        "package_cache",
        "absolute path on the client nodes (docker: bind-mounted)",
        "`$TMPDIR/metaflow-nomad-packages` on the node; docker: none",
        "NOMAD_PACKAGE_CACHE",
    ),
    _step(
        "network_mode",
        "docker: `bridge`, `host`, `none` or `container:<name>`",
        "the engine's (`bridge`)",
        "NOMAD_NETWORK_MODE",
    ),
    _step(
        "force_pull",
        "docker: bool",
        "`false` (a local image is used unless its tag is `latest`)",
        "NOMAD_FORCE_PULL",
        default=False,
    ),
    _step(
        "image_pull_timeout",
        "docker: duration, e.g. `10m`",
        "Nomad's (`5m`)",
        "NOMAD_IMAGE_PULL_TIMEOUT",
    ),
    _step("docker_runtime", "docker: str, e.g. `nvidia`", "the engine's", "NOMAD_DOCKER_RUNTIME"),
    _step("volumes", "docker: list of `/host:/container[:ro]`", "`[]`", default=[]),
    _step(
        "registry_auth",
        "docker: a Nomad Variable path, e.g. `nomad/jobs`",
        "none (the node's own registry credentials, if any)",
        "NOMAD_REGISTRY_AUTH",
    ),
    _step(
        "task_api",
        "bool: the task may call Nomad (e.g. publish an event) through its Task API socket",
        "`false`",
        "NOMAD_TASK_API",
        default=False,
    ),
    _conn("address", "NOMAD_ADDRESS", "NOMAD_ADDR", "API address, default `http://127.0.0.1:4646`"),
    _conn(
        "token",
        "NOMAD_TOKEN",
        "NOMAD_TOKEN",
        "ACL token (never rendered, logged or recorded)",
        secret=True,
    ),
    _conn("ca_cert", "NOMAD_CACERT", "NOMAD_CACERT", "CA certificate the launcher trusts"),
    _conn("client_cert", "NOMAD_CLIENT_CERT", "NOMAD_CLIENT_CERT", "launcher's client certificate"),
    _conn("client_key", "NOMAD_CLIENT_KEY", "NOMAD_CLIENT_KEY", "its key"),
    _conn(
        "tls_server_name",
        "NOMAD_TLS_SERVER_NAME",
        "NOMAD_TLS_SERVER_NAME",
        "name to verify the server certificate against",
    ),
    _conn(
        "skip_verify",
        "NOMAD_SKIP_VERIFY",
        "NOMAD_SKIP_VERIFY",
        "TLS verification is on unless this is true",
    ),
    _launcher(
        "NOMAD_UI_URL",
        "base address of Nomad's web UI, for the allocation links in task metadata "
        "(`nomad-alloc-url`), the launcher's lines and `nomad list`",
        "the API address",
    ),
    _launcher("NOMAD_MHZ_PER_VCPU", "MHz per vCPU for cpu values below 100", "1000"),
    _launcher("NOMAD_TEMPLATES_DIR", "a project template directory"),
    _launcher(
        "NOMAD_SHARED_FILESYSTEM", "`1`: tasks see the local datastore root at the same path"
    ),
    _launcher(
        "NOMAD_TASK_TLS_DIR",
        "directory on every client node with ca.pem, client.pem, client-key.pem for tasks",
    ),
    _launcher("NOMAD_PYTHON", "the Python the task runs", "`python` on the node's PATH"),
    _launcher(
        "NOMAD_SERVICE_AUTH_VARIABLE",
        "the Nomad Variable (in the job's namespace) whose item METAFLOW_SERVICE_HEADERS "
        "tasks and runners get, when the launcher sends the metadata service headers",
        "`nomad/jobs`",
    ),
    _launcher(
        "NOMAD_LEASE_TIMEOUT",
        "seconds a run's tasks keep running once its launcher stops renewing the run's lease",
        "60",
    ),
)

# Name (after the METAFLOW_ prefix) -> the standard Nomad variable it falls back to.
CONFIG_NAMES: dict[str, str | None] = {
    s.config_name: s.standard_env for s in SETTING_SPECS if s.config_name
}
SECRET_NAMES = frozenset(s.config_name for s in SETTING_SPECS if s.secret)
STEP_SPECS = {s.decorator_key: s for s in SETTING_SPECS if s.decorator_key}
CONNECTION_SPECS = {s.connection_field: s for s in SETTING_SPECS if s.connection_field}

# Values under these names are credentials; in a jobspec they would be stored in
# plain text, so they must come from the cluster (Variables, Vault, node files).
# The metadata service's key and headers reach tasks from a Nomad Variable
# (feature service_auth, docs/metadata-service.md).
SECRET_ENV_KEYS = frozenset(
    {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "METAFLOW_SERVICE_AUTH_KEY",
        "METAFLOW_SERVICE_HEADERS",
    }
    | {n for s in SETTING_SPECS if s.secret for n in (s.metaflow_name, s.standard_env) if n}
)


def secret_env_problem(env_keys) -> str | None:
    """Why a task environment must not carry one of ``env_keys``, or None."""
    found = sorted(SECRET_ENV_KEYS & set(env_keys))
    if not found:
        return None
    return (
        f"no credentials: {found[0]} would be stored in the jobspec in plain text; deliver it "
        "with a Nomad Variable or Vault template block (see docs/s3.md)"
    )


def read_config(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values set through Metaflow: env ``METAFLOW_NOMAD_X`` or a Metaflow profile.

    Keys drop the ``METAFLOW_`` prefix; unset names are absent.  Where the
    profile's values were already exported (``profile_exports``), the profile is
    not read again: that is how a task's launcher gets them without Metaflow.
    """
    environ = os.environ if environ is None else environ
    if environ.get(PROFILE_EXPORTED_ENV):

        def from_conf(name: str, default: Any) -> Any:
            return default
    else:
        from metaflow.metaflow_config_funcs import from_conf

    values: dict[str, str] = {}
    for name in CONFIG_NAMES:
        value = environ.get("METAFLOW_" + name)
        if value is None:
            value = from_conf(name, None)
        if value is not None and str(value) != "":
            values[name] = str(value)
    return values


def profile_exports(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Metaflow profile's values as ``METAFLOW_NOMAD_*`` variables, for a child
    process that must not load Metaflow to read the profile itself."""
    environ = os.environ if environ is None else environ
    exports = {
        "METAFLOW_" + name: value
        for name, value in read_config(environ).items()
        if "METAFLOW_" + name not in environ
    }
    return {**exports, PROFILE_EXPORTED_ENV: "1"}


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


def setting_source(config_name: str, environ: Mapping[str, str] | None = None) -> str:
    """Where the value of a setting comes from: its METAFLOW_ name, the NOMAD_ twin,
    a Metaflow profile, or the built-in default."""
    environ = os.environ if environ is None else environ
    metaflow_name = "METAFLOW_" + config_name
    if environ.get(metaflow_name):
        return metaflow_name
    if config_name in read_config(environ):
        return f"{metaflow_name} (Metaflow profile)"
    twin = CONFIG_NAMES.get(config_name)
    if twin and environ.get(twin):
        return twin
    return "the built-in default"


def is_truthy(value: str | None) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def flow_directory() -> str:
    """The directory of the flow file this process runs (project file, templates)."""
    return os.path.dirname(os.path.abspath(sys.argv[0]))


def settings_markdown() -> str:
    """The settings tables of ``docs/settings.md``, generated from ``SETTING_SPECS``."""
    rows = ["| setting | type | config | default |", "|---|---|---|---|"]
    for s in SETTING_SPECS:
        if s.kind != "step":
            continue
        config = ", ".join(f"`{n}`" for n in (s.metaflow_name, s.standard_env) if n)
        rows.append(f"| `{s.decorator_key}` | {s.doc_type} | {config} | {s.default_doc} |")
    rows += ["", "| config | falls back to | meaning |", "|---|---|---|"]
    for s in SETTING_SPECS:
        if s.kind == "step":
            continue
        meaning = s.meaning + (f" (default {s.default_doc})" if s.default_doc else "")
        fallback = f"`{s.standard_env}`" if s.standard_env else ""
        rows.append(f"| `{s.metaflow_name}` | {fallback} | {meaning} |")
    return "\n".join(rows) + "\n"
