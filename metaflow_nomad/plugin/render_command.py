"""``python flow.py nomad render STEP``: the jobspec a step would submit, and nothing sent.

It takes the options of Metaflow's ``step`` command, builds the ``CLIArgs``
Metaflow's runtime would build for that task, and goes through the same
``prepare_job`` as the runtime does when it plans an attempt.  Without options
it uses placeholder ids and package, which is what a human usually wants to see.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from metaflow._vendor import click

from metaflow_nomad.plugin.step_options import step_options

PREVIEW_RUN_ID = "render-preview"
PREVIEW_TASK_ID = "1"
# A @parallel step's gang size is the previous step's num_parallel, unknown here.
PREVIEW_NUM_PARALLEL = "2"


@click.command(
    help="Print the jobspec a step would submit (HCL or parsed Job JSON). Submits nothing."
)
@click.argument("step-name")
@click.option("--format", "output_format", type=click.Choice(["hcl", "json"]), default="hcl")
@click.option("--offline", is_flag=True, default=False, help="No cluster: HCL syntax check only.")
@click.option("--values", "values_file", default=None, help="A metaflow_nomad.yaml-like file.")
@click.option("--code-package-url", default=None, hidden=True)
@click.option("--code-package-sha", default="preview-package", hidden=True)
@click.option("--code-package-metadata", default=None, hidden=True)
@step_options
@click.pass_context
def render(
    ctx,
    step_name,
    output_format,
    offline,
    values_file,
    code_package_url,
    code_package_sha,
    code_package_metadata,
    **kwargs,
):
    from metaflow_nomad.api.client import default_client
    from metaflow_nomad.api.connection import ConnectionSettings
    from metaflow_nomad.api.preflight import check_reachable
    from metaflow_nomad.config import read_config
    from metaflow_nomad.plugin.render_inputs import render_inputs
    from metaflow_nomad.render.jobspec import check_offline, parse_jobspec
    from metaflow_nomad.render.pipeline import FlowObjects, StepInvocation, prepare_job

    obj = ctx.obj
    settings, values = _settings_override(obj, step_name, values_file)
    kwargs["run_id"] = kwargs["run_id"] or PREVIEW_RUN_ID
    kwargs["task_id"] = kwargs["task_id"] or PREVIEW_TASK_ID
    _gang_options(obj, step_name, kwargs)
    objects = FlowObjects(
        flow=obj.flow,
        graph=obj.graph,
        environment=obj.environment,
        flow_datastore=obj.flow_datastore,
        metadata_type=obj.metadata.TYPE,
    )
    code_package = {
        "url": code_package_url
        or f"{obj.flow_datastore.datastore_root}/{obj.flow.name}/data/pr/preview-package",
        "sha": code_package_sha,
        "metadata": code_package_metadata
        or json.dumps({"version": 0, "archive_format": "tgz", "mfcontent_version": 1}),
    }
    invocation = StepInvocation.from_cli_args(
        runtime_cli_args(obj, step_name, kwargs),
        objects,
        code_package,
        _run_lease_env(obj, kwargs["run_id"]),
    )
    if offline:
        inputs = render_inputs(ConnectionSettings.from_environment(), values)
        rendered = prepare_job(invocation, settings, inputs, read_config())
        check_offline(rendered.hcl)
        click.echo(rendered.hcl if output_format == "hcl" else _offline_json(rendered.hcl))
        click.echo(
            "# offline: HCL syntax checked with python-hcl2 only; the cluster's parser "
            "was not consulted.",
            err=True,
        )
        _warn_datastore(obj, step_name)
        return
    connection = ConnectionSettings.from_environment()
    check_reachable(connection)
    client = default_client()
    rendered = prepare_job(
        invocation, settings, render_inputs(client.settings, values), read_config()
    )
    job = parse_jobspec(rendered, client)
    click.echo(
        rendered.hcl if output_format == "hcl" else json.dumps(job, indent=2, sort_keys=True)
    )
    click.echo(
        f"# parsed by the cluster's /v1/jobs/parse; job {rendered.job_id} was NOT submitted.",
        err=True,
    )
    _warn_datastore(obj, step_name)


def runtime_cli_args(obj, step_name: str, step_options: dict):
    """The ``CLIArgs`` Metaflow's runtime would build for this task: its own class,
    given a task with this command's flow objects and ``step`` options, so that
    the task's command line is the runtime's to the option."""
    from metaflow.runtime import CLIArgs

    task = SimpleNamespace(
        entrypoint=[],
        flow=obj.flow,
        step=step_name,
        decos=getattr(obj.flow, step_name).decorators,
        metadata_type=obj.metadata.TYPE,
        environment_type=obj.environment.TYPE,
        datastore_type=obj.flow_datastore.TYPE,
        event_logger_type=obj.event_logger.TYPE,
        monitor_type=obj.monitor.TYPE,
        datastore_sysroot=obj.flow_datastore.datastore_root,
        run_id=None,
        task_id=None,
        input_paths=[],
        split_index=None,
        retries=0,
        user_code_retries=0,
        tags=[],
        ubf_context=None,
    )
    cli_args = CLIArgs(task)
    cli_args.command_options = {key.replace("_", "-"): value for key, value in step_options.items()}
    return cli_args


def _gang_options(obj, step_name: str, kwargs: dict) -> None:
    """A @parallel step renders as its control task's attempt: its whole gang (of
    ``--num-parallel`` nodes, 2 unless given), as a run submits it."""
    from metaflow_nomad.plugin.step_settings import find_nomad_decorator

    if not find_nomad_decorator(obj.flow, step_name).parallel:
        return
    kwargs["ubf_context"] = kwargs["ubf_context"] or "ubf_control"
    kwargs["split_index"] = kwargs["split_index"] or "0"
    if not kwargs["num_parallel"]:
        kwargs["num_parallel"] = PREVIEW_NUM_PARALLEL
        click.echo(
            f"# @parallel: a gang of {PREVIEW_NUM_PARALLEL} nodes (the run's num_parallel is "
            "decided by the previous step; pass --num-parallel N).",
            err=True,
        )


def _run_lease_env(obj, run_id: str) -> dict[str, str]:
    """Where the run's tasks watch its lease, as a run would give them (nothing is
    written: ``render`` holds no lease)."""
    from metaflow_nomad.config import read_config
    from metaflow_nomad.plugin.run_lease import RunLease, lease_timeout

    timeout = lease_timeout(read_config())
    return RunLease.for_run(obj.flow_datastore, obj.flow.name, run_id, timeout).task_env()


def _warn_datastore(obj, step_name: str) -> None:
    """A dry run renders even where a real run would refuse the datastore; say so."""
    from metaflow_nomad.plugin.step_settings import find_nomad_decorator

    problem = find_nomad_decorator(obj.flow, step_name).datastore_problem
    if problem:
        click.echo(f"# WARNING: a real run of this step would be refused: {problem}", err=True)


def _settings_override(obj, step_name: str, values_file: str | None):
    """Check the step, and resolve ``--values`` in place of the project file."""
    from metaflow_nomad.config import flow_directory
    from metaflow_nomad.plugin.step_settings import (
        find_nomad_decorator,
        read_yaml_mapping,
        resolve_for_step,
    )

    if step_name not in obj.graph:
        raise click.UsageError(
            f"Step {step_name!r} is not in flow {obj.flow.name}: "
            + ", ".join(node.name for node in obj.graph)
        )
    deco = find_nomad_decorator(obj.flow, step_name)
    if deco is None:
        raise click.UsageError(f"Step {step_name!r} has no @nomad. Add it, or pass --with nomad.")
    if not values_file:
        return deco.preview_settings, None
    document = read_yaml_mapping(values_file)
    values = document.pop("values", None) or {}
    step_decos = getattr(obj.flow, step_name).decorators
    return resolve_for_step(step_name, step_decos, deco, flow_directory(), document), values


def _offline_json(hcl: str) -> str:
    import hcl2

    return json.dumps(hcl2.loads(hcl), indent=2, sort_keys=True)
