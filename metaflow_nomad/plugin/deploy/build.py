"""What ``create`` and ``render`` build: the flow prepared for Nomad, the code
package, and the runner jobs of the deployment (nothing is sent from here)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from metaflow import decorators
from metaflow.util import get_username

from metaflow_nomad.config import SETTING_SPECS, STEP_JOBS_ENV, read_config
from metaflow_nomad.deploy.attempts import RESUME_META
from metaflow_nomad.deploy.naming import schedule_job_id
from metaflow_nomad.deploy.parameters import (
    config_names,
    config_value_env,
    flow_parameter_names,
    parameter_info,
    unschedulable_parameter,
)
from metaflow_nomad.deploy.runner_job import (
    DISPATCH,
    META_OWNER,
    META_PARAMETERS,
    META_PRODUCTION_TOKEN,
    META_RUNNER_KIND,
    META_STEPS,
    SCHEDULE,
    RunnerCommands,
    RunnerJob,
    runner_launch,
)
from metaflow_nomad.deploy.schedule import flow_schedule
from metaflow_nomad.deploy.triggers import (
    TRIGGERS_META,
    flow_triggers,
    read_triggers,
    triggers_meta,
)
from metaflow_nomad.errors import NomadException, raise_problems
from metaflow_nomad.model import META_DEPLOYMENT, META_FLOW_NAME
from metaflow_nomad.plugin.deploy.context import Deployment
from metaflow_nomad.plugin.step_settings import find_nomad_decorator, flow_settings_problems
from metaflow_nomad.render.bootstrap import forwarded_metaflow_config
from metaflow_nomad.render.context import RunnerTrigger
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.pipeline import task_settings
from metaflow_nomad.settings import StepSettings

# Launcher settings a runner must not inherit: it reaches Nomad through the Task
# API, and a project template directory is shipped in the code package instead.
NOT_FORWARDED = {s.config_name for s in SETTING_SPECS if s.kind == "connection"} | {
    "NOMAD_TEMPLATES_DIR"
}


@dataclass(frozen=True)
class RunnerOptions:
    """The ``create``/``render`` options that shape the runner jobs."""

    settings: StepSettings
    max_workers: int
    tags: Sequence[str]
    template: str | None

    def __post_init__(self):
        if self.max_workers < 1:
            raise NomadException(
                f"--max-workers {self.max_workers} is not valid: give the number of tasks a "
                "run may run at once, 1 or more."
            )


def prepare_flow(obj) -> None:
    """Put every step on Nomad, as Argo Workflows puts every step on Kubernetes, and
    check each step's settings now: a bad value must fail before anything is sent."""
    decorators._attach_decorators(obj.flow, ["nomad"])
    _init_attached_decorators(obj)
    obj.graph = obj.flow._graph
    raise_problems(flow_settings_problems(obj.flow, obj.graph))
    check_storage(obj.flow_datastore.TYPE, obj.metadata.TYPE)


def _init_attached_decorators(obj) -> None:
    """Initialise the decorators attached after the flow's start.  Newer Metaflow has
    one call for it (which also reruns step mutators); Metaflow 2.16 has not, and
    its own Argo CLI initialises them as done here."""
    late = getattr(decorators, "_process_late_attached_decorator", None)
    if late is not None:
        late(["nomad"], obj.flow, obj.graph, obj.environment, obj.flow_datastore, obj.logger)
        return
    decorators._init(obj.flow)
    decorators._init_step_decorators(
        obj.flow, obj.graph, obj.environment, obj.flow_datastore, obj.logger
    )


def check_storage(datastore_type: str, metadata_type: str) -> None:
    """Deployed runs write from Nomad nodes; the client must be able to read them.

    The local datastore with a shared filesystem (checked per step by @nomad) keeps
    local metadata next to it.  With a remote datastore, local metadata would stay
    on the node that ran the runner: the metadata service is needed, as for Argo.
    """
    if metadata_type == "local" and datastore_type != "local":
        raise NomadException(
            "A deployed run records its metadata on the Nomad node that runs it. With "
            f"--datastore={datastore_type} and local metadata nobody else could read it: "
            "use Metaflow's metadata service (METAFLOW_DEFAULT_METADATA=service and "
            "METAFLOW_SERVICE_URL)."
        )


def save_code_package(obj) -> dict[str, str]:
    """Package the flow (with the library, project file and templates) into the datastore."""
    from metaflow.metaflow_config import FEAT_ALWAYS_UPLOAD_CODE_PACKAGE
    from metaflow.package import MetaflowPackage

    package = MetaflowPackage(
        obj.flow,
        obj.environment,
        obj.echo,
        suffixes=obj.package_suffixes,
        flow_datastore=obj.flow_datastore if FEAT_ALWAYS_UPLOAD_CODE_PACKAGE else None,
    )
    if FEAT_ALWAYS_UPLOAD_CODE_PACKAGE:
        url, sha = package.package_url(), package.package_sha()
    else:
        url, sha = obj.flow_datastore.save_data([package.blob], len_hint=1)[0]
    return {"url": url, "sha": sha, "metadata": package.package_metadata}


def runner_commands(obj, deployment: Deployment, options: RunnerOptions) -> RunnerCommands:
    """``flow.py <top-level options> nomad-workflows [--name] runner ...`` as the runner
    runs it, and the ``announce-finish`` that follows a run that succeeded."""
    datastore = obj.flow_datastore
    top = [
        os.path.basename(sys.argv[0]),
        "--no-pylint",
        f"--metadata={obj.metadata.TYPE}",
        f"--environment={obj.environment.TYPE}",
        f"--datastore={datastore.TYPE}",
        f"--datastore-root={datastore.datastore_root}",
        f"--event-logger={obj.event_logger.TYPE}",
        f"--monitor={obj.monitor.TYPE}",
        f"--package-suffixes={','.join(obj.package_suffixes)}",
    ]
    specs = list(obj.tl_decospecs)
    if "nomad" not in specs:  # every step of a deployed flow runs on Nomad
        specs.append("nomad")
    for spec in specs:
        top.append(f"--with={spec}")
    for deco in decorators.flow_decorators(obj.flow):
        for name, value in deco.get_top_level_options():
            # A multiple option (@trigger_on_finish's --trigger) comes as a tuple.
            for one in value if isinstance(value, (list, tuple)) else [value]:
                if one is True:
                    top.append(f"--{name}")
                elif one not in (None, False):
                    top.append(f"--{name}={one}")
    group = ["nomad-workflows"]
    if deployment.given_name:
        group.append(f"--name={deployment.given_name}")
    runner = ["runner", f"--max-workers={options.max_workers}"]
    runner += [f"--tag={tag}" for tag in options.tags]
    return RunnerCommands(
        python=read_config().get("NOMAD_PYTHON") or "python",
        run=top + group + runner,
        on_success=[*top, "--quiet", *group, "announce-finish"],
    )


def render_flow_step_jobs(obj, deployment: Deployment, inputs: RenderInputs):
    """Every step's parameterized job (see ``deploy.step_jobs``) and their version."""
    from metaflow_nomad.deploy.step_jobs import render_step_jobs

    steps = {
        node.name: task_settings(
            find_nomad_decorator(obj.flow, node.name).settings, obj.flow_datastore
        )
        for node in obj.graph
    }
    return render_step_jobs(obj.flow.name, deployment.name, steps, inputs)


def runner_env(obj, token: str, step_jobs: str) -> dict[str, str]:
    """The runner's environment: Metaflow's settings for the datastore and services,
    the flow-wide METAFLOW_NOMAD_* settings its steps are launched with, who the
    runs belong to, and where to read the flow's Configs.  No credential: the
    runner's only one is its identity (the metadata service's headers come from a
    Nomad Variable, feature service_auth)."""
    env = forwarded_metaflow_config(os.environ)
    for name, value in read_config().items():
        if name not in NOT_FORWARDED:
            env["METAFLOW_" + name] = value
    env.update(
        {
            "METAFLOW_DEFAULT_DATASTORE": obj.flow_datastore.TYPE,
            "METAFLOW_DEFAULT_METADATA": obj.metadata.TYPE,
            "METAFLOW_USER": get_username(),
            "METAFLOW_PRODUCTION_TOKEN": token,
            STEP_JOBS_ENV: step_jobs,
            **config_value_env(config_names(obj.flow)),
        }
    )
    return env


def deployment_triggers(flow, deployment: Deployment):
    """The events the deployment waits on (``@trigger``, ``@trigger_on_finish``)."""
    project = {"project_name": deployment.project or "", "branch_name": deployment.branch or ""}
    return flow_triggers(flow, flow_parameter_names(flow), project)


def dispatch_meta_keys(flow, runner_meta: Mapping[str, str]) -> tuple[str, ...]:
    """The runner job's dispatch meta: the flow's parameters, the events that started
    the run if the deployment waits on events, and what ``resume`` dispatches."""
    names = (*flow_parameter_names(flow), *((TRIGGERS_META,) if read_triggers(runner_meta) else ()))
    return (*names, *RESUME_META)


def runner_jobs(
    obj,
    deployment: Deployment,
    options: RunnerOptions,
    code_package: Mapping[str, str],
    token: str,
    step_jobs: str,
) -> list[RunnerJob]:
    """The parameterized runner job, and the periodic one if the flow has ``@schedule``."""
    launch = runner_launch(
        obj.environment,
        code_package,
        obj.flow_datastore.TYPE,
        runner_commands(obj, deployment, options),
        runner_env(obj, token, step_jobs),
    )
    meta = {
        META_FLOW_NAME: obj.flow.name,
        META_DEPLOYMENT: deployment.name,
        META_OWNER: get_username(),
        META_PRODUCTION_TOKEN: token,
        META_PARAMETERS: json.dumps(parameter_info(obj.flow), sort_keys=True),
        META_STEPS: ",".join(obj.graph.sorted_nodes),
        **deployment.project_meta,
        **triggers_meta(deployment_triggers(obj.flow, deployment)),
    }
    described = {
        "name": deployment.name,
        "flow_name": obj.flow.name,
        "project": deployment.project,
        "branch": deployment.branch,
        "production": deployment.is_production,
    }
    common = {
        "settings": options.settings,
        "launch": launch,
        "deployment": described,
        "template": options.template,
    }
    jobs = [
        RunnerJob(
            job_id=deployment.name,
            trigger=RunnerTrigger(DISPATCH, meta_optional=dispatch_meta_keys(obj.flow, meta)),
            meta={**meta, META_RUNNER_KIND: DISPATCH},
            **common,
        )
    ]
    schedule = flow_schedule(obj.flow)
    if schedule is not None:
        missing = unschedulable_parameter(obj.flow)
        if missing:
            raise NomadException(
                f"@schedule cannot start {obj.flow.name}: its parameter '{missing}' is "
                "required and has no default, and a scheduled run is given no parameters. "
                "Give it a default."
            )
        jobs.append(
            RunnerJob(
                job_id=schedule_job_id(deployment.name),
                trigger=RunnerTrigger(SCHEDULE, cron=schedule.cron, time_zone=schedule.time_zone),
                meta={**meta, META_RUNNER_KIND: SCHEDULE},
                **common,
            )
        )
    return jobs
