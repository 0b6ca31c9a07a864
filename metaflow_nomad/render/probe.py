"""The job ``doctor --probe`` runs, and the job ``doctor`` plans.

Both are rendered with the step's own settings, template, project values and TLS
material, so they are placed, started and given credentials exactly as the step's
jobs would be.  The probe's bootstrap fetches the code package the way a step's
does (``render.code_package``) and then, instead of the step, runs
``render.probe_task`` to use the datastore from inside the task.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from metaflow_nomad.api.connection import ConnectionSettings, task_tls_material
from metaflow_nomad.config import flow_directory, read_config
from metaflow_nomad.model import JobIdentity, TaskLaunch
from metaflow_nomad.render import probe_task
from metaflow_nomad.render.bootstrap import LOGS_DIR, STDERR_PATH, STDOUT_PATH, task_environment
from metaflow_nomad.render.code_package import PACKAGE_CACHE_ENV, code_package_setup
from metaflow_nomad.render.jobspec import RenderedJob, render_jobspec
from metaflow_nomad.render.pipeline import step_user_env
from metaflow_nomad.settings import StepSettings


def render_probe_job(
    obj,
    settings: StepSettings,
    identity: JobIdentity,
    code_package: Mapping[str, str],
    connection: ConnectionSettings,
    token: str,
    values: Mapping[str, Any] | None = None,
) -> RenderedJob:
    """The probe job for the step ``identity`` names; ``obj`` is Metaflow's CLI
    context (flow, graph, environment, datastore)."""
    datastore = obj.flow_datastore
    env = task_environment(
        identity,
        code_package,
        datastore.TYPE,
        step_user_env(obj.graph[identity.step_name]),
        {
            probe_task.FLOW_ENV: identity.flow_name,
            probe_task.ROOT_ENV: datastore.datastore_root,
            probe_task.TOKEN_ENV: token,
            # The node's package cache (``package_cache``) stays mounted, so that the
            # probe shows the driver accepts the mount, but is not used: a package
            # cached by an earlier run would hide a download that fails.
            PACKAGE_CACHE_ENV: "",
        },
        os.environ,
    )
    setup = code_package_setup(obj.environment, code_package, datastore.TYPE)
    logs = f"mkdir -p {LOGS_DIR} && export MFLOG_STDOUT={STDOUT_PATH} MFLOG_STDERR={STDERR_PATH}"
    probe = f"python -m {probe_task.__name__}"
    script = (
        '${METAFLOW_INIT_SCRIPT:+eval "${METAFLOW_INIT_SCRIPT}"}\n'
        f"{setup.definitions}"
        f"{logs} && {' && '.join(setup.commands)} && {probe}\n"
    )
    return _render(settings, identity, TaskLaunch(script=script, env=env), connection, values)


def render_plan_job(
    settings: StepSettings,
    identity: JobIdentity,
    connection: ConnectionSettings,
    values: Mapping[str, Any] | None = None,
) -> RenderedJob:
    """The step's job as the scheduler sees it, for a plan: the task's script does
    not change where it can be placed, so it is left out."""
    return _render(settings, identity, TaskLaunch(script="true", env={}), connection, values)


def _render(settings, identity, launch, connection, values) -> RenderedJob:
    config = read_config()
    tls = task_tls_material(connection, config.get("NOMAD_TASK_TLS_DIR"), settings.driver)
    return render_jobspec(
        settings,
        identity,
        launch,
        flow_dir=flow_directory(),
        templates_dir=config.get("NOMAD_TEMPLATES_DIR"),
        tls=tls,
        values=values,
    )
