"""Everything between "a step is about to run" and "here is its rendered job".

Both the trampoline (``nomad step``) and ``metaflow-nomad render`` call
``render_step_job``, so what ``render`` prints is what a step submits.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from metaflow import util

from .command import build_task_launch, split_input_paths, task_environment
from .errors import NomadException
from .jobspec import JobIdentity, RenderedJob, TlsMaterial, render_jobspec
from .settings import StepSettings


def find_nomad_decorator(flow, step_name: str):
    """The step's @nomad decorator instance (static or from --with), or None."""
    return next((d for d in getattr(flow, step_name).decorators if d.name == "nomad"), None)


def load_values_file(path: str) -> dict:
    """A ``--values`` file: the same schema as metaflow_nomad.yaml."""
    import yaml

    with open(path) as handle:
        document = yaml.safe_load(handle) or {}
    if not isinstance(document, dict):
        raise NomadException(f"{path}: expected a mapping at the top level.")
    return document


def step_user_env(node) -> dict[str, str]:
    """The flow file name plus any ``@environment`` vars of the step."""
    env = {"METAFLOW_FLOW_FILENAME": os.path.basename(sys.argv[0])}
    for deco in node.decorators:
        if deco.name == "environment":
            env.update({k: str(v) for k, v in deco.attributes["vars"].items()})
    return env


def render_step_job(
    obj,
    top_level_params: Mapping[str, Any],
    settings: StepSettings,
    identity: JobIdentity,
    code_package: Mapping[str, str],
    step_options: dict[str, Any],
    config: Mapping[str, str],
    tls: TlsMaterial | None = None,
    values: Mapping[str, Any] | None = None,
) -> RenderedJob:
    """Build the task's command and env, and render its job (nothing is submitted).

    ``obj`` is Metaflow's CLI context object (flow, graph, environment, datastore);
    ``step_options`` are the options of the top-level ``step`` command.
    """
    step_name = identity.step_name
    step_options = dict(step_options)
    step_options["input_paths"], input_env = split_input_paths(step_options.get("input_paths"))
    step_options.pop("ubf_context", None)
    executable = obj.environment.executable(step_name, config.get("NOMAD_PYTHON"))
    step_cli = "{entry} {top} step {step} {args}".format(
        entry=f"{executable} -u {os.path.basename(sys.argv[0])}",
        top=" ".join(util.dict_to_cli_options(top_level_params)),
        step=step_name,
        args=" ".join(util.dict_to_cli_options(step_options)),
    )
    datastore = obj.flow_datastore
    env = task_environment(
        identity,
        code_package,
        datastore.TYPE,
        step_user_env(obj.graph[step_name]),
        input_env,
        os.environ,
    )
    launch = build_task_launch(
        obj.environment,
        identity,
        step_cli,
        code_package,
        datastore.TYPE,
        datastore.datastore_root,
        env,
    )
    return render_jobspec(
        settings,
        identity,
        launch,
        flow_dir=os.path.dirname(os.path.abspath(sys.argv[0])),
        templates_dir=config.get("NOMAD_TEMPLATES_DIR"),
        tls=tls,
        values=values,
    )
