"""The job ``doctor --probe`` runs, and the job ``doctor`` plans.

Both are rendered with the step's own settings and the run's render inputs
(template directories, project values, TLS material), so they are placed,
started and given credentials exactly as the step's jobs would be.  The probe's
bootstrap fetches the code package the way a step's does
(``render.code_package``) and then, instead of the step, runs
``render.probe_task`` to use the datastore (and the metadata service) from
inside the task.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from metaflow_nomad.model import JobIdentity, TaskLaunch
from metaflow_nomad.render import probe_task
from metaflow_nomad.render.bootstrap import LOGS_DIR, STDERR_PATH, STDOUT_PATH, task_environment
from metaflow_nomad.render.code_package import PACKAGE_CACHE_ENV, code_package_setup
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.jobspec import RenderedJob, render_job, step_request
from metaflow_nomad.render.pipeline import step_user_env
from metaflow_nomad.settings import StepSettings


def render_probe_job(
    obj,
    settings: StepSettings,
    identity: JobIdentity,
    code_package: Mapping[str, str],
    token: str,
    inputs: RenderInputs,
) -> RenderedJob:
    """The probe job for the step ``identity`` names; ``obj`` is Metaflow's CLI
    context (flow, graph, environment, datastore, metadata)."""
    datastore = obj.flow_datastore
    probe_env = {
        probe_task.FLOW_ENV: identity.flow_name,
        probe_task.ROOT_ENV: datastore.datastore_root,
        probe_task.TOKEN_ENV: token,
        # The node's package cache (``package_cache``) stays mounted, so that the
        # probe shows the driver accepts the mount, but is not used: a package
        # cached by an earlier run would hide a download that fails.
        PACKAGE_CACHE_ENV: "",
    }
    if obj.metadata.TYPE == "service":
        probe_env[probe_task.SERVICE_ENV] = "1"
    env = task_environment(
        identity,
        code_package,
        datastore.TYPE,
        step_user_env(obj.graph[identity.step_name]),
        probe_env,
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
    return render_job(step_request(settings, identity, TaskLaunch(script=script, env=env)), inputs)


def render_plan_job(
    settings: StepSettings, identity: JobIdentity, inputs: RenderInputs
) -> RenderedJob:
    """The step's job as the scheduler sees it, for a plan: the task's script does
    not change where it can be placed, so it is left out."""
    return render_job(step_request(settings, identity, TaskLaunch(script="true", env={})), inputs)
