"""Everything between "a step is about to run" and "here is its rendered job".

Both the runtime (planning an attempt, ``plugin.attempt_planning``) and
``render`` call ``prepare_job``, so what ``render`` prints is what a step submits.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from metaflow import util
from metaflow.mflog import TASK_LOG_SOURCE

from metaflow_nomad.model import JobIdentity, TaskLaunch, TaskLogs
from metaflow_nomad.render.bootstrap import TaskScript, build_task_launch, task_environment
from metaflow_nomad.render.code_package import PACKAGE_CACHE_ENV
from metaflow_nomad.render.command_line import split_input_paths, step_command_line
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.jobspec import RenderedJob, render_job, step_request
from metaflow_nomad.render.metadata_snapshot import (
    MetadataSnapshot,
    build_snapshot,
    local_metadata_root,
    needs_snapshot,
)
from metaflow_nomad.render.metadata_snapshot import task_commands as metadata_task_commands
from metaflow_nomad.render.parallel import (
    UBF_CONTROL,
    ParallelGang,
    dispatch_script,
    gang_env,
    gang_for,
    gang_settings,
    node_step_options,
)
from metaflow_nomad.settings import StepSettings


@dataclass(frozen=True)
class FlowObjects:
    """The Metaflow objects a step's job is built from: the runtime's own, or those
    of the CLI command that renders it."""

    flow: Any
    graph: Any
    environment: Any
    flow_datastore: Any
    metadata_type: str


@dataclass(frozen=True)
class StepInvocation:
    """One task's ``step`` command, as Metaflow's runtime would start it locally.

    ``top_level_options`` and ``step_options`` are those of Metaflow's
    ``CLIArgs`` (the runtime's, or one ``render`` builds the same way), keyed by
    the CLI's parameter names; the task runs exactly that command.  ``run_env``
    is what every task of the run gets besides (where the run's lease is).
    """

    objects: FlowObjects
    step_name: str
    top_level_options: Mapping[str, Any]
    step_options: Mapping[str, Any]
    code_package: Mapping[str, str]
    run_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_cli_args(
        cls,
        cli_args,
        objects: FlowObjects,
        code_package: Mapping[str, str],
        run_env: Mapping[str, str] | None = None,
    ) -> StepInvocation:
        """From the runtime's ``CLIArgs`` for a local ``step`` command."""
        return cls(
            run_env=dict(run_env or {}),
            objects=objects,
            step_name=cli_args.command_args[0],
            top_level_options=_parameter_names(cli_args.top_level_options),
            step_options=_parameter_names(cli_args.command_options),
            code_package=code_package,
        )

    @cached_property
    def identity(self) -> JobIdentity:
        return JobIdentity(
            flow_name=self.objects.flow.name,
            run_id=str(self.step_options["run_id"]),
            step_name=self.step_name,
            task_id=str(self.step_options["task_id"]),
            attempt=int(self.step_options.get("retry_count") or 0),
            user=util.get_username(),
        )

    @cached_property
    def logs(self) -> TaskLogs:
        """Where the task writes its output (and the launcher reads it): computed
        once, for the bootstrap and for the attempt's plan."""
        return task_logs(self.objects.flow_datastore, self.identity)

    @cached_property
    def gang(self) -> ParallelGang | None:
        """The gang of a ``@parallel`` step's control task (its ``--num-parallel``),
        which this attempt's job runs whole; None for any other task."""
        options = self.step_options
        if options.get("ubf_context") != UBF_CONTROL or not options.get("num_parallel"):
            return None
        identity = self.identity
        return gang_for(identity.job_id, identity.task_id, int(options["num_parallel"]))

    def for_node(self, node_index: int) -> StepInvocation:
        """Node ``node_index`` of this control task's gang, as its own task."""
        options = node_step_options(dict(self.step_options), self.gang, node_index)
        return dataclasses.replace(self, step_options=options)

    @cached_property
    def metadata_snapshot(self) -> MetadataSnapshot | None:
        """The flow's local metadata for a task that cannot see it (see metadata_snapshot).

        Built once per invocation: ``render`` shows its key, the runtime also
        stores it before the attempt's job is submitted.
        """
        objects = self.objects
        if not needs_snapshot(objects.metadata_type, objects.flow_datastore.TYPE):
            return None
        return build_snapshot(local_metadata_root(), objects.flow.name)


def _parameter_names(options: Mapping[str, Any]) -> dict[str, Any]:
    """``CLIArgs`` spells options as on the command line; click names them."""
    return {
        ("decospecs" if key == "with" else key.replace("-", "_")): value
        for key, value in options.items()
    }


def task_logs(flow_datastore, identity: JobIdentity) -> TaskLogs:
    """Where the attempt's task writes its mflog output, and the launcher reads it."""
    task_ds = flow_datastore.get_task_datastore(
        mode="w",
        run_id=identity.run_id,
        step_name=identity.step_name,
        task_id=identity.task_id,
        attempt=identity.attempt,
    )
    stdout_url = task_ds.get_log_location(TASK_LOG_SOURCE, "stdout")
    task_dir = os.path.dirname(stdout_url)
    exit_file = None
    if flow_datastore.TYPE == "local":
        exit_file = os.path.join(task_dir, f"{identity.attempt}.nomad_exit")
    return TaskLogs(
        stdout_url=stdout_url,
        stderr_url=task_ds.get_log_location(TASK_LOG_SOURCE, "stderr"),
        datastore_type=flow_datastore.TYPE,
        exit_file=exit_file,
        claim_url=f"{task_dir}/{identity.attempt}.nomad_claim",
    )


def step_user_env(node) -> dict[str, str]:
    """The flow file name plus any ``@environment`` vars of the step."""
    env = {"METAFLOW_FLOW_FILENAME": os.path.basename(sys.argv[0])}
    for deco in node.decorators:
        if deco.name == "environment":
            env.update({k: str(v) for k, v in deco.attributes["vars"].items()})
    return env


def prepare_job(
    invocation: StepInvocation,
    settings: StepSettings,
    inputs: RenderInputs,
    config: Mapping[str, str],
) -> RenderedJob:
    """Render the step's job exactly as a run submits it (nothing is sent): its
    command and env, with the settings its datastore needs.  ``config`` is
    ``read_config()``, which a runtime reads once for all its attempts."""
    settings = task_settings(settings, invocation.objects.flow_datastore)
    gang = invocation.gang
    if gang is not None:
        settings = gang_settings(settings, invocation.step_name)
    launch = build_step_launch(invocation, config)
    return render_job(step_request(settings, invocation.identity, launch, gang), inputs)


def task_settings(settings: StepSettings, datastore) -> StepSettings:
    """The settings a step's job is rendered with, given where its datastore is."""
    if datastore.TYPE == "local" and settings.docker is not None:
        settings = with_node_path(settings, datastore.datastore_root)
    if settings.package_cache:
        settings = with_package_cache(settings)
    return settings


def with_package_cache(settings: StepSettings) -> StepSettings:
    """The node's code-package cache, for every task of the step.

    The task's bootstrap keeps each package unpacked and byte-compiled there
    (``render.code_package``); a docker task otherwise has only its container's
    own, empty one, and unpacks and compiles the package for every task (1.1 s of
    a no-op docker task here).
    """
    path = settings.package_cache
    env = {**settings.env, PACKAGE_CACHE_ENV: path}
    settings = dataclasses.replace(settings, env=env)
    return with_node_path(settings, path) if settings.docker is not None else settings


def with_node_path(settings: StepSettings, path: str) -> StepSettings:
    """A docker task sees nothing of its node's filesystem: bind-mount ``path`` (the
    local datastore on a shared filesystem, the package cache) at the same path, as
    raw_exec and exec tasks see it (the docker plugin must allow volumes)."""
    mount = f"{path}:{path}"
    if mount in settings.docker.volumes:
        return settings
    docker = dataclasses.replace(settings.docker, volumes=(*settings.docker.volumes, mount))
    return dataclasses.replace(settings, docker=docker)


def build_step_launch(invocation: StepInvocation, config: Mapping[str, str]) -> TaskLaunch:
    """What the task runs: its bootstrap script and its environment; for a
    ``@parallel`` control task, what every node of its gang runs (``render.parallel``)."""
    gang = invocation.gang
    if gang is None:
        return build_node_launch(invocation, config, keep_ubf_context=False)
    nodes = [
        build_node_launch(invocation.for_node(i), config, keep_ubf_context=True)
        for i in range(gang.num_nodes)
    ]
    # The nodes' environments differ in nothing but their scripts (the task id is
    # in the script alone), so node 0's is every node's.
    env = {**nodes[0].env, **gang_env(gang, [node.script for node in nodes])}
    return TaskLaunch(script=dispatch_script(gang), env=env)


def build_node_launch(
    invocation: StepInvocation, config: Mapping[str, str], keep_ubf_context: bool
) -> TaskLaunch:
    """One task's bootstrap script and environment.  A gang's nodes keep their UBF
    context (control or worker), which Metaflow's step command needs to tell them
    apart; a lone task runs as an ordinary task."""
    objects = invocation.objects
    identity = invocation.identity
    step_options = dict(invocation.step_options)
    step_options["input_paths"], input_env = split_input_paths(step_options.get("input_paths"))
    if not keep_ubf_context:
        step_options.pop("ubf_context", None)
    executable = objects.environment.executable(identity.step_name, config.get("NOMAD_PYTHON"))
    step_cli = step_command_line(
        executable,
        os.path.basename(sys.argv[0]),
        invocation.top_level_options,
        identity.step_name,
        step_options,
    )
    datastore = objects.flow_datastore
    env = task_environment(
        identity,
        invocation.code_package,
        datastore.TYPE,
        step_user_env(objects.graph[identity.step_name]),
        {**input_env, **invocation.run_env},
        os.environ,
        datastore.datastore_root,
    )
    task_setup, after_step = metadata_task_commands(
        objects.metadata_type, datastore, identity, invocation.metadata_snapshot
    )
    task = TaskScript(
        identity=identity,
        step_cli=step_cli,
        code_package=invocation.code_package,
        datastore_type=datastore.TYPE,
        datastore_root=datastore.datastore_root,
        env=env,
        task_setup=task_setup,
        after_step=after_step,
        logs=invocation.logs,
    )
    return build_task_launch(objects.environment, task)
