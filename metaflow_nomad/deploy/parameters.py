"""Flow parameters as dispatch meta, and back into ``run`` options in the runner.

Each flow parameter is an optional meta key of the parameterized runner job, so
Nomad itself refuses a dispatch with an unknown name.  Values travel as the
strings a user would type after ``--name`` on the command line; the runner
passes them to ``run`` unchanged, so the same click types check them with the
same messages as a local run.  ``trigger`` checks them before dispatching, so a
bad value normally fails on the caller's side with nothing started.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

_ENV_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")


def flow_parameter_names(flow) -> list[str]:
    """The names of the flow's parameters (configs excluded), in definition order."""
    return [p.name for _, p in flow._get_parameters() if not p.IS_CONFIG_PARAMETER]


def parameter_info(flow) -> dict[str, dict]:
    """What ``from_deployment`` needs to rebuild the trigger's options (Metaflow's
    ``generate_fake_flow_file_contents`` schema): name, type, help, required."""
    from metaflow import JSONType

    info = {}
    for var, param in flow._get_parameters():
        if param.IS_CONFIG_PARAMETER:
            continue
        kind = param.kwargs.get("type")
        if kind == JSONType or hasattr(kind, "_is_text"):
            type_name = str(kind.name)
        else:
            type_name = getattr(kind, "__name__", "str")
        info[param.name] = {
            "python_var_name": var,
            "name": param.name,
            "type": type_name,
            "description": param.kwargs.get("help") or "",
            "is_required": bool(param.kwargs.get("required", False)),
        }
    return info


def unschedulable_parameter(flow) -> str | None:
    """A required parameter without a default, which a scheduled run cannot be given."""
    for _, param in flow._get_parameters():
        if param.IS_CONFIG_PARAMETER:
            continue
        if param.kwargs.get("required") and "default" not in param.kwargs:
            return param.name
    return None


def dispatch_meta(flow, option_values: Mapping[str, object]) -> dict[str, str]:
    """Dispatch meta for the parameters given on ``trigger`` (converted by click)."""
    from metaflow import JSONType
    from metaflow.parameters import DelayedEvaluationParameter

    meta = {}
    for _, param in flow._get_parameters():
        if param.IS_CONFIG_PARAMETER:
            continue
        value = option_values.get(param.name.replace("-", "_").lower())
        if value is None:
            continue
        if isinstance(value, DelayedEvaluationParameter):
            value = value(return_str=True)
        elif param.kwargs.get("type") == JSONType and not isinstance(value, str):
            value = json.dumps(value)
        meta[param.name] = str(value)
    return meta


def meta_env_name(key: str) -> str:
    """The variable under which Nomad gives a task the job's meta ``key``."""
    return "NOMAD_META_" + _ENV_UNSAFE.sub("_", key)


def run_options(names: list[str], environ: Mapping[str, str]) -> list[str]:
    """``--name value`` for each parameter the runner job was dispatched with."""
    options = []
    for name in names:
        value = environ.get(meta_env_name(name))
        if value is not None:
            options += [f"--{name}", value]
    return options
