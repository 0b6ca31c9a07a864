"""``python flow.py nomad doctor [--probe]``: is this cluster ready for this flow?

One line per check, a verdict at the end, and a non-zero exit on any failure.
Run from the flow, it checks each ``@nomad`` step's settings (decorators,
``--with``, project file, configuration) as a run would resolve them; ``--probe``
also runs one tiny job with a step's settings.  ``metaflow-nomad doctor`` without
a flow file runs the same cluster checks for the defaults of ``--with nomad``.
"""

from __future__ import annotations

import sys
import time
import uuid

from metaflow import util
from metaflow._vendor import click

from metaflow_nomad.model import JobIdentity

PROBE_RUN = "doctor"


@click.command(
    help="Check the Nomad cluster, the token and this flow's @nomad settings, one line "
    "each; exits non-zero if anything fails. --probe also runs one tiny job."
)
@click.option(
    "--probe",
    is_flag=True,
    default=False,
    help="Also run one tiny job with a step's settings: it must start, fetch the code "
    "package and use the datastore; it is purged afterwards.",
)
@click.option("--step", "probe_step", default=None, help="The @nomad step --probe uses.")
@click.pass_obj
def doctor(obj, probe, probe_step):
    from metaflow_nomad.api.connection import ConnectionSettings
    from metaflow_nomad.plugin.doctor_report import Report, check_cluster

    report = Report(click.echo)
    steps = _nomad_steps(obj)
    if not steps:
        raise click.UsageError("No step has @nomad: add it, or pass --with nomad.")
    connection = ConnectionSettings.from_environment()
    client = check_cluster(report, connection)
    report.section(f"Flow {obj.flow.name}:")
    report.add(_datastore_check(obj, steps))
    if client is not None:
        settings = _step_settings(report, steps, obj.flow_datastore)
        _check_steps(report, client, obj, settings)
        if probe:
            _probe(report, obj, settings, probe_step, connection)
    sys.exit(0 if report.verdict() else 1)


def _nomad_steps(obj) -> list:
    from metaflow_nomad.render.pipeline import find_nomad_decorator

    found = [(name, find_nomad_decorator(obj.flow, name)) for name in obj.graph.sorted_nodes]
    return [(name, deco) for name, deco in found if deco is not None]


def _datastore_check(obj, steps):
    from metaflow_nomad.api.doctor import FAIL, OK, Check

    datastore = obj.flow_datastore
    where = f"{datastore.TYPE} at {datastore.datastore_root}"
    problems = [deco.datastore_problem for _, deco in steps if deco.datastore_problem]
    if problems:
        return Check(FAIL, "datastore", f"{where}: {problems[0]}")
    return Check(OK, "datastore", where)


def _step_settings(report, steps, datastore) -> list:
    """Each step's settings as a run renders its tasks with them (with the package
    cache and a local datastore mounted where they would be); a step whose settings
    are invalid gets a FAIL line instead."""
    from metaflow_nomad.api.doctor import FAIL, Check
    from metaflow_nomad.errors import NomadException
    from metaflow_nomad.render.pipeline import task_settings

    resolved = []
    for name, deco in steps:
        try:
            resolved.append((name, deco, task_settings(deco.preview_settings, datastore)))
        except NomadException as exc:
            report.add(Check(FAIL, f"step '{name}' settings", str(exc)))
    return resolved


def _check_steps(report, client, obj, resolved) -> None:
    from metaflow_nomad.plugin.doctor_report import (
        Nodes,
        check_namespaces,
        check_step_placement,
        placement_key,
        steps_label,
    )
    from metaflow_nomad.plugin.render_inputs import render_inputs

    submittable = check_namespaces(report, client, [s.nomad_namespace for _, _, s in resolved])
    nodes = Nodes(client, report)
    groups: dict[str, list] = {}
    for name, deco, settings in resolved:
        groups.setdefault(placement_key(settings), []).append((name, deco, settings))
    inputs = render_inputs(client.settings)
    for group in groups.values():
        _, _, settings = group[0]
        check_step_placement(
            report,
            client,
            nodes,
            settings,
            steps_label([name for name, _, _ in group]),
            _job(client, obj.flow.name, inputs, settings)
            if (settings.nomad_namespace or "default") in submittable
            else None,
        )


def _identity(flow_name: str, step: str, run_id: str, task_id: str) -> JobIdentity:
    return JobIdentity(flow_name, run_id, step, task_id, 0, util.get_username())


def _job(client, flow_name: str, inputs, settings):
    """The step's job as the cluster parses it (for its devices and the plan), or
    the FAIL line saying why it cannot be rendered."""
    from metaflow_nomad.plugin.doctor_report import parsed_job
    from metaflow_nomad.render.jobspec import parse_jobspec
    from metaflow_nomad.render.probe import render_plan_job

    identity = _identity(flow_name, settings.step_name, PROBE_RUN, "plan")

    def render_and_parse() -> dict:
        rendered = render_plan_job(settings, identity, inputs)
        return parse_jobspec(rendered, client)

    return parsed_job(render_and_parse)


def _probe(report, obj, resolved, probe_step, connection) -> None:
    """Upload the code package, run the probe job with one step's settings, purge it."""
    from metaflow_nomad.api.doctor import FAIL, Check
    from metaflow_nomad.api.lookup import default_client
    from metaflow_nomad.errors import NomadException
    from metaflow_nomad.plugin.render_inputs import render_inputs
    from metaflow_nomad.render.probe import render_probe_job
    from metaflow_nomad.runtime.probe import run_probe

    chosen = [r for r in resolved if probe_step in (None, r[0])]
    if not chosen:
        raise click.UsageError(f"--step {probe_step}: no @nomad step of that name.")
    name, _, settings = chosen[0]
    if report.failed():
        report.section(f"Probe with step '{name}': not run, fix the FAIL lines above first.")
        return
    identity = _identity(obj.flow.name, name, f"{PROBE_RUN}-{int(time.time())}", "probe")
    report.section(f"Probe with step '{name}' (job {identity.job_id}):", scope="probe")
    package = _upload_package(report, obj)
    if package is None:
        return
    token = f"metaflow-nomad doctor probe {uuid.uuid4()}"
    try:
        rendered = render_probe_job(
            obj, settings, identity, package, token, render_inputs(connection)
        )
        report.add(*run_probe(default_client(), rendered, settings, token, _datastore(obj)))
    except NomadException as exc:
        report.add(Check(FAIL, "probe job", f"{exc.headline}: {exc}"))


def _upload_package(report, obj):
    """Package the flow as a run does and save it in the datastore (content-addressed,
    so a run with the same code reuses it)."""
    import json

    from metaflow.package import MetaflowPackage

    from metaflow_nomad.api.doctor import FAIL, OK, Check

    try:
        package = MetaflowPackage(
            obj.flow, obj.environment, obj.echo, suffixes=obj.package_suffixes
        )
        blob = package.blob
        url, sha = obj.flow_datastore.save_data([blob], len_hint=1)[0]
    except Exception as exc:  # packaging or datastore: either way, what went wrong is the line
        report.add(Check(FAIL, "code package upload", f"{exc.__class__.__name__}: {exc}"))
        return None
    report.add(Check(OK, "code package upload", f"{len(blob) // 1024} KB saved at {url}"))
    metadata = package.package_metadata
    return {"url": url, "sha": sha, "metadata": metadata or json.dumps({"version": 0})}


def _datastore(obj):
    """How the launcher reads back and removes the probe task's blob."""
    from metaflow.datastore.exceptions import DataException

    from metaflow_nomad.runtime.probe import ProbeDatastore, remove_local_blob

    datastore = obj.flow_datastore

    def read(key: str) -> bytes | None:
        try:
            return next(iter(datastore.load_data([key])))[1]
        except (DataException, OSError, StopIteration):
            return None

    def remove(url: str) -> None:
        if datastore.TYPE == "local":
            remove_local_blob(url)
        elif datastore.TYPE == "s3":
            _remove_s3_object(url)

    if datastore.TYPE == "local":
        hint = (
            "tasks do not see the local datastore at the launcher's path, so "
            "METAFLOW_NOMAD_SHARED_FILESYSTEM=1 is wrong here: share the path, or use "
            "--datastore=s3."
        )
    else:
        hint = (
            "the task and the launcher use different datastores: check "
            "METAFLOW_DATASTORE_SYSROOT_S3 and METAFLOW_S3_ENDPOINT_URL on both sides."
        )
    return ProbeDatastore(read=read, remove=remove, shared_hint=hint)


def _remove_s3_object(url: str) -> None:
    from metaflow.plugins.datatools.s3.s3util import get_s3_client

    bucket, _, key = url[len("s3://") :].partition("/")
    client, _ = get_s3_client()
    client.delete_object(Bucket=bucket, Key=key)


def doctor_without_flow() -> bool:
    """``metaflow-nomad doctor`` with no flow file: the cluster checks, for the
    settings a step run with ``--with nomad`` would get from configuration alone."""
    from metaflow_nomad.api.connection import ConnectionSettings
    from metaflow_nomad.config import read_config, read_standard_env
    from metaflow_nomad.plugin.doctor_report import (
        Nodes,
        Report,
        check_cluster,
        check_namespaces,
        check_step_placement,
    )
    from metaflow_nomad.settings import resolve_step_settings

    report = Report(click.echo)
    client = check_cluster(report, ConnectionSettings.from_environment())
    if client is not None:
        settings = resolve_step_settings(
            "with-nomad", {}, config=read_config(), standard_env=read_standard_env()
        )
        namespace = settings.nomad_namespace or "default"
        submittable = check_namespaces(report, client, [namespace], settings.region)
        check_step_placement(
            report,
            client,
            Nodes(client, report),
            settings,
            "defaults for `--with nomad` (no flow file given)",
            _job(client, "Doctor", {}, settings) if namespace in submittable else None,
        )
    return report.verdict()
