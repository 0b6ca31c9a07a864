"""``python flow.py nomad-workflows ...``: deploy a flow to Nomad and run it there.

The life cycle follows ``argo-workflows``: ``create`` registers the runner jobs
(and stores the code package), ``trigger`` starts a run with parameters,
``resume`` starts a run that resumes an earlier one,
``list-runs``/``status`` follow runs, ``terminate`` stops one, ``delete``
removes the deployment.  ``render`` prints the runner jobs without sending
anything, and ``policy`` the ACL policy a runner needs.  The hidden ``runner``
and ``start-run`` commands run inside the runner job.
"""

from __future__ import annotations

import json

from metaflow import parameters
from metaflow._vendor import click

from metaflow_nomad.plugin.deploy.runner import announce_finish, runner, start_run
from metaflow_nomad.plugin.deploy.runs import delete, list_runs, policy, status, terminate


@click.group()
def cli():
    pass


@cli.group(
    name="nomad-workflows",
    help="Deploy this flow to Nomad, and trigger, follow and stop its runs there.",
)
@click.option(
    "--name",
    default=None,
    help="Deployment (runner job) name; the flow name by default. Not with @project.",
)
@click.pass_obj
def nomad_workflows(obj, name=None):
    from metaflow_nomad.plugin.deploy.context import current_deployment

    obj.check(obj.graph, obj.flow, obj.environment, pylint=obj.pylint)
    obj.deployment = current_deployment(obj.flow.name, name)


@nomad_workflows.command(help="Deploy a new version of this flow to Nomad.")
@click.option(
    "--authorize",
    default=None,
    help="Redeploy another owner's deployment with its production token.",
)
@click.option(
    "--generate-new-token", is_flag=True, help="Move the deployment to a new production namespace."
)
@click.option("--new-token", "given_token", default=None, help="Use this production token.")
@click.option("--tag", "tags", multiple=True, help="Tag every run of the deployment; repeatable.")
@click.option(
    "--max-workers",
    default=16,
    show_default=True,
    type=int,
    help="Parallel tasks per run.",
)
@click.option(
    "--runner-cpu", default=None, type=float, help="The runner's CPU, as @nomad(cpu=...) [500 MHz]."
)
@click.option("--runner-memory", default=None, type=int, help="The runner's memory in MB [1024].")
@click.option("--runner-disk", default=None, type=int, help="The runner's disk in MB [1024].")
@click.option(
    "--runner-node-pool", default=None, help="Node pool of the runner (steps keep theirs)."
)
@click.option("--runner-template", default=None, help="A runner template name or path.")
@click.option(
    "--deployer-attribute-file", default=None, hidden=True, help="Used by the Deployer API."
)
@click.pass_obj
def create(
    obj,
    authorize,
    generate_new_token,
    given_token,
    tags,
    max_workers,
    runner_cpu,
    runner_memory,
    runner_disk,
    runner_node_pool,
    runner_template,
    deployer_attribute_file,
):
    from metaflow.tagging_util import validate_tags

    from metaflow_nomad.api.client import default_client
    from metaflow_nomad.deploy.registration import register_deployment
    from metaflow_nomad.deploy.runner_job import render_runner_job
    from metaflow_nomad.plugin.deploy.build import (
        RunnerOptions,
        prepare_flow,
        render_flow_step_jobs,
        runner_jobs,
        save_code_package,
    )
    from metaflow_nomad.plugin.deploy.context import runner_settings
    from metaflow_nomad.plugin.deploy.token import resolve_token
    from metaflow_nomad.plugin.render_inputs import render_inputs

    validate_tags(tags)
    deployment = obj.deployment
    options = RunnerOptions(
        settings=runner_settings(runner_cpu, runner_memory, runner_disk, runner_node_pool),
        max_workers=max_workers,
        tags=tags,
        template=runner_template,
    )
    prepare_flow(obj)
    client = default_client()
    namespace = options.settings.nomad_namespace
    existing = client.job(deployment.name, namespace=namespace)
    obj.echo(f"Deploying *{obj.flow.name}* to Nomad as *{deployment.name}*...", bold=True)
    token = resolve_token(
        deployment.name,
        deployment.token_prefix,
        (existing or {}).get("Meta") if existing and not existing.get("Stop") else None,
        authorize,
        given_token,
        generate_new_token,
        bool(deployment.project),
        obj.echo,
    )
    code_package = save_code_package(obj)
    inputs = render_inputs(client.settings)
    version, step_jobs = render_flow_step_jobs(obj, deployment, inputs)
    jobs = runner_jobs(obj, deployment, options, code_package, token, version)
    runners = [(job, render_runner_job(job, inputs)) for job in jobs]
    registered = register_deployment(client, obj.flow.name, step_jobs, runners, namespace, obj.echo)
    _write_attributes(deployer_attribute_file, deployment.name, obj)
    for line in registered:
        obj.echo(line, indent=True, no_bold=True)
    _echo_triggers(obj, jobs[0].meta)
    obj.echo(
        f"Trigger a run with: python {_flow_file()} nomad-workflows trigger "
        "[--<parameter> <value> ...]",
        bold=True,
    )
    obj.echo(
        "On a cluster with ACLs, the runner needs its policy bound once per runner job: "
        f"python {_flow_file()} nomad-workflows policy",
    )


@nomad_workflows.command(help="Print the runner job(s) create would register. Sends nothing.")
@click.option("--format", "output_format", type=click.Choice(["hcl", "json"]), default="hcl")
@click.option("--offline", is_flag=True, default=False, help="No cluster: HCL syntax check only.")
@click.option("--max-workers", default=16, type=int)
@click.option("--runner-template", default=None, help="A runner template name or path.")
@click.pass_obj
def render(obj, output_format, offline, max_workers, runner_template):
    from metaflow_nomad.api.client import default_client
    from metaflow_nomad.deploy.runner_job import parse_runner_job, render_runner_job
    from metaflow_nomad.plugin.deploy.build import (
        RunnerOptions,
        prepare_flow,
        render_flow_step_jobs,
        runner_jobs,
    )
    from metaflow_nomad.plugin.deploy.context import runner_settings
    from metaflow_nomad.plugin.render_inputs import render_inputs
    from metaflow_nomad.render.jobspec import check_offline, parse_jobspec

    prepare_flow(obj)
    options = RunnerOptions(runner_settings(), max_workers, (), runner_template)
    preview_package = {
        "url": f"{obj.flow_datastore.datastore_root}/{obj.flow.name}/data/pr/preview-package",
        "sha": "preview-package",
        "metadata": json.dumps({"version": 0, "archive_format": "tgz", "mfcontent_version": 1}),
    }
    client = default_client()
    inputs = render_inputs(client.settings)
    version, step_jobs = render_flow_step_jobs(obj, obj.deployment, inputs)
    jobs = runner_jobs(obj, obj.deployment, options, preview_package, "preview-token", version)
    documents = [(r, parse_jobspec) for r in step_jobs]
    documents += [(render_runner_job(j, inputs), parse_runner_job) for j in jobs]
    for rendered, parse in documents:
        if offline:
            check_offline(rendered.hcl)
            click.echo(rendered.hcl)
        else:
            parsed = parse(rendered, client)
            click.echo(
                rendered.hcl
                if output_format == "hcl"
                else json.dumps(parsed, indent=2, sort_keys=True)
            )
    click.echo("# nothing was registered.", err=True)


@parameters.add_custom_parameters(deploy_mode=False)
@nomad_workflows.command(help="Trigger a run of the deployed flow, with its parameters.")
@click.option("--run-id-file", default=None, help="Write the ID of the run to this file.")
@click.option(
    "--deployer-attribute-file", default=None, hidden=True, help="Used by the Deployer API."
)
@click.pass_obj
def trigger(obj, run_id_file=None, deployer_attribute_file=None, **kwargs):
    from metaflow_nomad.deploy.deployments import dispatch
    from metaflow_nomad.deploy.parameters import dispatch_meta

    client, namespace, _ = _deployed_runner_job(obj)
    run_id = dispatch(client, obj.deployment.name, dispatch_meta(obj.flow, kwargs), namespace)
    _record_run(obj, run_id, run_id_file, deployer_attribute_file)
    obj.echo(f"Run *{run_id}* of *{obj.deployment.name}* triggered on Nomad.", bold=True)


@nomad_workflows.command(
    help="Resume a run on Nomad: a new run of the deployment that reuses the tasks "
    "the given run finished and runs the rest (Metaflow's resume)."
)
@click.option("--origin-run-id", required=True, help="The run to resume (any run of this flow).")
@click.option(
    "--step",
    "step_to_rerun",
    default=None,
    help="Run this step again, and the steps after it, even if it finished.",
)
@click.option("--run-id-file", default=None, help="Write the ID of the new run to this file.")
@click.option(
    "--deployer-attribute-file", default=None, hidden=True, help="Used by the Deployer API."
)
@click.pass_obj
def resume(obj, origin_run_id, step_to_rerun=None, run_id_file=None, deployer_attribute_file=None):
    from metaflow_nomad.deploy.attempts import META_RESUME_ORIGIN, META_RESUME_STEP
    from metaflow_nomad.deploy.deployments import dispatch
    from metaflow_nomad.plugin.deploy.resume import check_resume

    client, namespace, deployed = _deployed_runner_job(obj)
    check_resume(obj, deployed, origin_run_id, step_to_rerun)
    meta = {META_RESUME_ORIGIN: origin_run_id}
    if step_to_rerun:
        meta[META_RESUME_STEP] = step_to_rerun
    run_id = dispatch(client, obj.deployment.name, meta, namespace)
    _record_run(obj, run_id, run_id_file, deployer_attribute_file)
    obj.echo(
        f"Run *{run_id}* of *{obj.deployment.name}* resumes run *{origin_run_id}* on Nomad.",
        bold=True,
    )


def _deployed_runner_job(obj):
    """The Nomad client, the deployment's namespace and its runner job; a clear error
    if the flow is not deployed there."""
    from metaflow_nomad.api.client import default_client
    from metaflow_nomad.errors import NomadException
    from metaflow_nomad.plugin.deploy.context import deployment_namespace

    client = default_client()
    namespace = deployment_namespace()
    deployed = client.job(obj.deployment.name, namespace=namespace)
    if deployed is None or deployed.get("Stop"):
        raise NomadException(
            f"{obj.flow.name} is not deployed as {obj.deployment.name} in Nomad namespace "
            f"{namespace or 'default'}. Deploy it first: python {_flow_file()} "
            "nomad-workflows create"
        )
    return client, namespace, deployed


def _record_run(obj, run_id: str, run_id_file: str | None, attribute_file: str | None) -> None:
    """Tell the caller (a script, the Deployer) the new run's id at once."""
    if run_id_file:
        with open(run_id_file, "w") as handle:
            handle.write(run_id)
    if attribute_file:
        with open(attribute_file, "w") as handle:
            json.dump(
                {
                    "name": obj.deployment.name,
                    "metadata": obj.metadata.metadata_str(),
                    "pathspec": f"{obj.flow.name}/{run_id}",
                },
                handle,
            )


def _echo_triggers(obj, runner_meta) -> None:
    from metaflow_nomad.deploy.event_dispatch import PENDING_EVENT_TTL_S
    from metaflow_nomad.deploy.triggers import describe, read_triggers

    triggers = read_triggers(runner_meta)
    if not triggers:
        return
    obj.echo(f"A run starts on {describe(triggers)}.", bold=True)
    if len(triggers) > 1:
        obj.echo(
            f"An event waits up to {PENDING_EVENT_TTL_S // 3600} h for the others.", indent=True
        )


def _write_attributes(path: str | None, name: str, obj) -> None:
    if path:
        with open(path, "w") as handle:
            json.dump(
                {"name": name, "flow_name": obj.flow.name, "metadata": obj.metadata.metadata_str()},
                handle,
            )


def _flow_file() -> str:
    import os
    import sys

    return os.path.basename(sys.argv[0])


for _command in (list_runs, status, terminate, delete, policy, runner, start_run, announce_finish):
    nomad_workflows.add_command(_command)
