"""What ``doctor`` checks and prints, with or without a flow: sections of one-line
checks and a verdict at the end.

The checks themselves live in ``api.doctor`` and ``api.placement`` (the cluster),
``api.metadata_service`` (Metaflow's metadata service) and ``runtime.probe`` (the
scheduler's plan, the probe job); this module orders them, skips what an earlier
failure makes pointless, and counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.diagnosis import one_line
from metaflow_nomad.api.doctor import (
    FAIL,
    SKIP,
    WARN,
    Check,
    check_capabilities,
    check_connection,
    check_token,
    check_version,
    settings_report,
)
from metaflow_nomad.api.metadata_service import (
    check_from_launcher,
    check_headers_variable,
    tasks_url,
)
from metaflow_nomad.api.placement import (
    check_devices,
    check_docker_volumes,
    check_driver,
    check_node_pool,
    check_nodes,
    check_region,
    node_lines,
    package_cache_hint,
    read_nodes,
    requested_bind_mounts,
    requested_devices,
)
from metaflow_nomad.api.preflight import fast_client
from metaflow_nomad.api.registry_auth import check_registry_auth
from metaflow_nomad.errors import NomadException
from metaflow_nomad.runtime.probe import check_plan
from metaflow_nomad.settings import StepSettings

Echo = Callable[[str], None]
# The step settings shown in a step's header, in this order.
HEADER_SETTINGS = ("driver", "image", "datacenters", "node_pool", "region", "nomad_namespace")


class Report:
    """Check lines under section titles, and the verdict they add up to."""

    def __init__(self, echo: Echo):
        self._echo = echo
        self.checks: list[Check] = []
        self._scope = ""
        self._scopes: list[str] = []

    def section(self, title: str, scope: str = "") -> None:
        """A title line; ``scope`` names what the checks below are about, in the verdict."""
        self._echo(title)
        self._scope = scope

    def text(self, line: str) -> None:
        self._echo(line)

    def add(self, *checks: Check) -> None:
        for check in checks:
            self.checks.append(check)
            self._scopes.append(self._scope)
            self._echo(check.line())

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    def verdict(self) -> bool:
        """Print the verdict; True when nothing failed."""
        failed = self.failed()
        counted = [c for c in self.checks if c.status not in ("info", SKIP)]
        warnings = sum(c.status == WARN for c in self.checks)
        warned = f" ({warnings} warning(s))" if warnings else ""
        if not failed:
            self._echo(f"Verdict: all {len(counted)} checks passed{warned}.")
            return True
        names = ", ".join(
            f"{c.name} ({scope})" if scope else c.name
            for c, scope in zip(self.checks, self._scopes)
            if c.failed
        )
        self._echo(
            f"Verdict: {len(failed)} of {len(counted)} checks FAILED ({names}){warned}. "
            "Each FAIL line says what to change."
        )
        return False


def check_cluster(report: Report, connection: ConnectionSettings) -> NomadClient | None:
    """The settings read, then address, TLS and token; a client if all of them passed
    (everything else would fail for the same reason)."""
    report.section("Settings read (METAFLOW_NOMAD_*, else their NOMAD_* twin):")
    for line in settings_report():
        report.text(line)
    report.section("Cluster:")
    client = fast_client(connection)
    connected = check_connection(client)
    report.add(*connected)
    if any(c.failed for c in connected):
        return None
    token = check_token(client)
    report.add(token)
    if token.failed:
        return None
    version = check_version(client)
    report.add(version)
    return None if version.failed else client


def check_namespaces(report: Report, client: NomadClient, namespaces, region=None) -> set[str]:
    """The capability lines of each namespace; returns those where jobs may be submitted."""
    submittable = set()
    for namespace in sorted({ns or "default" for ns in namespaces}):
        report.section(f"Namespace '{namespace}':")
        checks = check_capabilities(client, namespace, region)
        report.add(*checks)
        if not any(c.failed and c.name.startswith("submit jobs") for c in checks):
            submittable.add(namespace)
    return submittable


@dataclass(frozen=True)
class ServiceSettings:
    """How this launcher reaches Metaflow's metadata service, and how its jobs will:
    the URLs, the headers it sends, and the Nomad Variable the jobs read theirs
    from (None when it sends none)."""

    url: str | None
    internal_url: str | None
    headers: Mapping[str, str]
    variable: str | None


def check_metadata_service(
    report: Report,
    client: NomadClient | None,
    namespaces: Iterable[str | None],
    service: ServiceSettings,
) -> None:
    """The service from here, where tasks will reach it, and whether they get its
    headers in each of the steps' namespaces (``client`` None: the cluster did not
    answer, so the Variable cannot be looked up)."""
    report.section("Metadata service (--metadata=service):")
    report.add(check_from_launcher(service.url, service.headers))
    report.add(tasks_url(service.url, service.internal_url))
    if client is None:
        report.add(Check(SKIP, "service auth", "not checked: the cluster did not answer"))
        return
    for namespace in sorted({ns or "default" for ns in namespaces} or {"default"}):
        report.add(check_headers_variable(client, service.variable, namespace, service.headers))


class Nodes:
    """The cluster's nodes, listed once for all steps (None if the token may not)."""

    def __init__(self, client: NomadClient, report: Report):
        self.listed, warning = read_nodes(client)
        if warning:
            report.add(warning)


def step_header(settings: StepSettings, label: str) -> str:
    shown = []
    for name in HEADER_SETTINGS:
        value = getattr(settings, name)
        if value in (None, ()):
            continue
        value = list(value) if isinstance(value, tuple) else value
        shown.append(f"{name}={value} ({settings.sources.get(name, 'default')})")
    shown.append(f"resources: {settings.describe_resources()}")
    return f"{label[:1].upper()}{label[1:]}: " + ", ".join(shown)


def steps_label(steps: list[str]) -> str:
    names = ", ".join(f"'{name}'" for name in steps)
    return f"step {names}" if len(steps) == 1 else f"steps {names}"


def placement_key(settings: StepSettings) -> str:
    """Steps whose settings only differ in name share their checks."""
    return repr(dataclasses.replace(settings, step_name="", sources={}))


def check_step_placement(
    report: Report,
    client: NomadClient,
    nodes: Nodes,
    settings: StepSettings,
    label: str,
    job: dict | Check | None,
) -> None:
    """Region, node pool, nodes, drivers and devices, then the scheduler's plan.

    ``label`` names the steps these settings are for (``steps_label``).  ``job`` is
    the step's job as the cluster parsed it, a FAIL line when it cannot be rendered,
    or None when the token may not submit jobs (a plan needs the same right)."""
    report.section(step_header(settings, label), scope=label)
    static = [check_region(client, settings.region), check_node_pool(client, settings.node_pool)]
    report.add(*static)
    registry_auth = settings.docker.registry_auth if settings.docker else None
    if registry_auth and settings.image:
        namespace = settings.nomad_namespace or "default"
        report.add(check_registry_auth(client, registry_auth, namespace, settings.image))
    if nodes.listed is not None:
        found, eligible = check_nodes(nodes.listed, settings.datacenters, settings.node_pool)
        report.add(found, *node_lines(eligible))
        static.append(found)
        if eligible:
            hardware = [check_driver(eligible, settings.driver)]
            if isinstance(job, dict):
                hardware += [check_devices(eligible, *d) for d in requested_devices(job)]
                if settings.driver == "docker":
                    docker = [
                        check_docker_volumes(eligible, requested_bind_mounts(job)),
                        package_cache_hint(eligible, settings.package_cache),
                    ]
                    hardware += [check for check in docker if check]
            report.add(*hardware)
            static += hardware
    if job is None:
        report.add(Check(SKIP, "placement", "not planned: the token may not submit jobs here"))
    elif isinstance(job, Check):
        report.add(job)
    elif any(c.failed for c in static):
        report.add(Check(SKIP, "placement", "not planned: fix the lines above first"))
    else:
        report.add(check_plan(client, job, settings))


def parsed_job(render_and_parse: Callable[[], dict]) -> dict | Check:
    """The step's job as the cluster parses it, or the line saying why it cannot be."""
    try:
        return render_and_parse()
    except NomadException as exc:
        return Check(FAIL, "placement", f"the step's job cannot be rendered: {one_line(str(exc))}")
