"""Flow parameters as dispatch meta, and back into ``run`` options in the runner.

Each flow parameter is an optional meta key of the parameterized runner job, so
Nomad itself refuses a dispatch with an unknown name.  Values travel as the
strings a user would type after ``--name`` on the command line; the runner
passes them to ``run`` unchanged, so the same click types check them with the
same messages as a local run.  ``trigger`` checks them before dispatching, so a
bad value normally fails on the caller's side with nothing started.

The runner reads them from its job's Meta, not from ``NOMAD_META_*``: Nomad
gives a task every optional meta key of its parameterized job as a variable,
set to "" when the dispatch did not carry it, so the environment cannot tell a
parameter left to its default from one given as "".

Flow Configs are not parameters: ``create`` materialises their values in the
code package, and the runner is told to read them from there, as Argo Workflows
tells its containers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

# Metaflow's environment variable for --config-value; `kv.<name>` values are read
# from the code package's CONFIG file (what Argo Workflows sets on its containers).
CONFIG_VALUE_ENV = "METAFLOW_FLOW_CONFIG_VALUE"


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


def run_options(names: list[str], job_meta: Mapping[str, str]) -> list[str]:
    """``--name value`` for each parameter the runner job was dispatched with (its
    job's Meta holds only those); the others keep the flow's defaults."""
    options = []
    for name in names:
        value = job_meta.get(name)
        if value is not None:
            options += [f"--{name}", value]
    return options


def config_names(flow) -> list[str]:
    """The names of the flow's Configs, in definition order."""
    return [p.name for _, p in flow._get_parameters() if p.IS_CONFIG_PARAMETER]


def config_value_env(names: list[str]) -> dict[str, str]:
    """The runner's ``METAFLOW_FLOW_CONFIG_VALUE``: every Config read from the code
    package (``kv.<name>``), where ``create`` stored the values it was given, so a
    run, its steps and a resume all see the deployed values, not the defaults."""
    from metaflow.user_configs.config_options import ConfigInput

    if not names:
        return {}
    return {CONFIG_VALUE_ENV: json.dumps({n: ConfigInput.make_key_name(n) for n in names})}
