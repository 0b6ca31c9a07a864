"""``python flow.py nomad doctor [--probe]``: is this cluster ready for this flow?

One line per check, a verdict at the end, and a non-zero exit on any failure.
Run from the flow, it checks each ``@nomad`` step's settings (decorators,
``--with``, project file, configuration) as a run would resolve them; ``--probe``
also runs one tiny job with a step's settings.  With Metaflow's metadata service
(``--metadata=service``) it also checks the service, from here and, with
``--probe``, from inside that job.  ``metaflow-nomad doctor`` without a flow file
runs the same cluster (and service) checks for the defaults of ``--with nomad``.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from metaflow import util
from metaflow._vendor import click

from metaflow_nomad.model import JobIdentity

if TYPE_CHECKING:
    from metaflow_nomad.api.doctor import Check
    from metaflow_nomad.plugin.doctor_report import ServiceSettings

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
    from metaflow_nomad.plugin.doctor_report import Report, check_cluster, check_metadata_service

    report = Report(click.echo)
    steps = _nomad_steps(obj)
    if not steps:
        raise click.UsageError("No step has @nomad: add it, or pass --with nomad.")
    connection = ConnectionSettings.from_environment()
    client = check_cluster(report, connection)
    report.section(f"Flow {obj.flow.name}:")
    report.add(_datastore_check(obj, steps))
    settings = _step_settings(report, steps, obj.flow_datastore) if client is not None else []
    if obj.metadata.TYPE == "service":
        namespaces = [s.nomad_namespace for _, _, s in settings]
        check_metadata_service(report, client, namespaces, _service_settings())
    if client is not None:
        _check_steps(report, client, obj, settings)
        if probe:
            _probe(report, obj, settings, probe_step, connection)
    sys.exit(0 if report.verdict() else 1)


def _service_settings() -> ServiceSettings:
    """How this launcher reaches Metaflow's metadata service (Metaflow's own
    configuration), and the Variable its jobs would read the headers from."""
    from metaflow import metaflow_config as mc

    from metaflow_nomad.config import read_config
    from metaflow_nomad.plugin.doctor_report import ServiceSettings
    from metaflow_nomad.plugin.render_inputs import service_auth_variable, service_headers

    return ServiceSettings(
        url=mc.SERVICE_URL,
        internal_url=mc.SERVICE_INTERNAL_URL,
        headers=service_headers(),
        variable=service_auth_variable(read_config()),
    )


def _nomad_steps(obj) -> list:
    from metaflow_nomad.plugin.step_settings import find_nomad_decorator

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
    from metaflow_nomad.errors import NomadException, problems_of
    from metaflow_nomad.render.pipeline import task_settings

    resolved = []
    for name, deco in steps:
        try:
            resolved.append((name, deco, task_settings(deco.preview_settings, datastore)))
        except NomadException as exc:
            for problem in problems_of(exc):
                report.add(Check(FAIL, f"step '{name}' settings", str(problem)))
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
    from metaflow_nomad.render.probe_job import render_plan_job

    identity = _identity(flow_name, settings.step_name, PROBE_RUN, "plan")

    def render_and_parse() -> dict:
        rendered = render_plan_job(settings, identity, inputs)
        return parse_jobspec(rendered, client)

    return parsed_job(render_and_parse)


def _probe(report, obj, resolved, probe_step, connection) -> None:
    """Upload the code package, run the probe job with one step's settings, purge it."""
    from metaflow_nomad.api.client import default_client
    from metaflow_nomad.api.doctor import FAIL, Check
    from metaflow_nomad.errors import NomadException
    from metaflow_nomad.plugin.render_inputs import render_inputs
    from metaflow_nomad.render.probe_job import render_probe_job
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
    said: tuple[str, ...] = ()
    try:
        rendered = render_probe_job(
            obj, settings, identity, package, token, render_inputs(connection)
        )
        result = run_probe(default_client(), rendered, settings, token, _datastore(obj))
        report.add(*result.checks)
        said = result.said
    except NomadException as exc:
        report.add(Check(FAIL, "probe job", f"{exc.headline}: {exc}"))
    if obj.metadata.TYPE == "service":
        report.add(task_service_check(said))


def task_service_check(said: Sequence[str]) -> Check:
    """The line of the probe task's ping of the metadata service (SKIP if it never
    got that far); ``said`` is what the task said (``ProbeResult.said``)."""
    from metaflow_nomad.api.doctor import FAIL, OK, SKIP, Check
    from metaflow_nomad.render import probe_task

    name = "metadata service from the task"
    for line in said:
        if line.startswith(probe_task.SERVICE_OK):
            return Check(OK, name, line[len(probe_task.SERVICE_OK) :])
        if line.startswith(probe_task.SERVICE_FAIL):
            return Check(FAIL, name, line[len(probe_task.SERVICE_FAIL) :])
    return Check(SKIP, name, "not reached: the probe task did not get that far")


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
    settings a step run with ``--with nomad`` would get from configuration alone
    (and the metadata service's, when it is Metaflow's default)."""
    from metaflow.metaflow_config import DEFAULT_METADATA

    from metaflow_nomad.api.connection import ConnectionSettings
    from metaflow_nomad.config import read_config, read_standard_env
    from metaflow_nomad.plugin.doctor_report import (
        Nodes,
        Report,
        check_cluster,
        check_metadata_service,
        check_namespaces,
        check_step_placement,
    )
    from metaflow_nomad.plugin.render_inputs import render_inputs
    from metaflow_nomad.settings import resolve_step_settings

    report = Report(click.echo)
    client = check_cluster(report, ConnectionSettings.from_environment())
    settings = None
    if client is not None:
        settings = resolve_step_settings(
            "with-nomad", {}, config=read_config(), standard_env=read_standard_env()
        )
    if DEFAULT_METADATA == "service":
        namespaces = [settings.nomad_namespace] if settings else []
        check_metadata_service(report, client, namespaces, _service_settings())
    if settings is not None:
        namespace = settings.nomad_namespace or "default"
        submittable = check_namespaces(report, client, [namespace], settings.region)
        check_step_placement(
            report,
            client,
            Nodes(client, report),
            settings,
            "defaults for `--with nomad` (no flow file given)",
            _job(client, "Doctor", render_inputs(client.settings, {}), settings)
            if namespace in submittable
            else None,
        )
    return report.verdict()
