"""Checks of a Nomad cluster for Metaflow steps: one result each, given a client.

``doctor`` prints them all, one line each; the preflight before a run uses the
few a run cannot do without.  Every check asks the cluster itself and changes
nothing: a capability is tested with a request that needs it and has no effect
(the parse of a tiny job, a scheduler plan, the lookup, listing and stop of a job
ID that exists nowhere).  Nomad 1.6 has no "may this token do X" endpoint; a token
may read its own policies, but judging their rules (namespace globs, policy
shorthands, roles) would re-implement Nomad's ACL engine, where the answer to a
real request cannot be wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.connection import SETTING, ConnectionSettings
from metaflow_nomad.api.diagnosis import missing_token_clause, one_line, unknown_token_message
from metaflow_nomad.config import SETTING_SPECS, connection_config, setting_source
from metaflow_nomad.errors import (
    NomadAclDisabled,
    NomadClientError,
    NomadForbidden,
    NomadNotFound,
    NomadTlsError,
    NomadTokenMissing,
    NomadUnknownNamespace,
    NomadUnknownNodePool,
    NomadUnreachable,
)

OK, FAIL, WARN, SKIP, INFO = "ok", "FAIL", "warn", "skip", "info"
# (what the line says, the Nomad capability it needs)
CAPABILITIES = (
    ("parse jobs", "parse-job"),
    ("submit jobs", "submit-job"),
    ("read jobs", "read-job"),
    ("list jobs", "list-jobs"),
    ("stop jobs", "submit-job"),
)


@dataclass(frozen=True)
class Check:
    """One line of the report: a verdict, what was checked, and what was found
    (or, for a failure, what to change)."""

    status: str
    name: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def line(self) -> str:
        return f"  {self.status:<5} {self.name}: {self.detail}"


# -- reaching the cluster ------------------------------------------------------------


def check_connection(client: NomadClient) -> list[Check]:
    """The address and TLS lines; the address fails if nothing answers there."""
    s = client.settings
    where = f"{s.address} (from {s.address_source})"
    try:
        leader = client.leader()
    except NomadUnreachable as exc:
        return [Check(FAIL, "address", exc.detail), Check(SKIP, "TLS", "nothing answered")]
    except NomadTlsError as exc:
        return [Check(OK, "address", f"{where} answers"), Check(FAIL, "TLS", exc.detail)]
    except NomadClientError as exc:
        answer = (
            f"something at {where} answered, but not as a Nomad agent does "
            f"({one_line(exc.detail)}): check the address, and if an HTTP proxy is in between, "
            "exclude the Nomad address with NO_PROXY."
        )
        return [Check(FAIL, "address", answer), Check(SKIP, "TLS", "not checked")]
    return [Check(OK, "address", f"{where} answers (leader {leader})"), _tls_summary(s)]


def check_version(client: NomadClient) -> Check:
    """Nomad's version at the address against the oldest this project supports."""
    from metaflow_nomad.api.compatibility import MIN_NOMAD_VERSION, too_old_message, version_text

    needed = version_text(MIN_NOMAD_VERSION)
    try:
        found = client.agent_version()
    except NomadForbidden:
        return Check(
            SKIP,
            "Nomad version",
            f"not checked: the token may not read the agent (agent:read); "
            f"{needed} or newer is needed",
        )
    except NomadClientError as exc:
        return Check(SKIP, "Nomad version", f"not checked: {one_line(exc.detail)}")
    if not found:
        return Check(SKIP, "Nomad version", "not checked: the agent did not report one")
    problem = too_old_message(found, client.settings.address)
    if problem:
        return Check(FAIL, "Nomad version", problem)
    return Check(OK, "Nomad version", f"{found} ({needed} or newer is needed)")


def _tls_summary(s: ConnectionSettings) -> Check:
    if not s.address.startswith("https://"):
        return Check(OK, "TLS", "not used (the address is http://)")
    if s.skip_verify:
        return Check(
            WARN,
            "TLS",
            f"the server certificate is NOT verified ({SETTING['skip_verify']}): anyone on "
            f"the network path could pose as the cluster. Set {SETTING['ca_cert']} instead.",
        )
    trust = f"the CA in {SETTING['ca_cert']}" if s.ca_cert else "the system's trusted CAs"
    client_cert = (
        f"; the client certificate in {SETTING['client_cert']} was accepted"
        if s.client_cert
        else ""
    )
    return Check(OK, "TLS", f"server certificate verified with {trust}{client_cert}")


def check_token(client: NomadClient) -> Check:
    s = client.settings
    try:
        own = client.token_self()
    except NomadAclDisabled:
        ignored = f" (the one in {SETTING['token']} is ignored)" if s.token else ""
        return Check(OK, "token", f"ACLs are disabled on this cluster: none needed{ignored}")
    except NomadClientError as exc:
        if not s.token:
            return Check(
                WARN,
                "token",
                "none set, and this cluster enforces ACLs: requests get its anonymous "
                f"policy. If the checks below are denied, set {SETTING['token']}.",
            )
        if isinstance(exc, (NomadForbidden, NomadNotFound)):
            return Check(FAIL, "token", unknown_token_message())
        return Check(FAIL, "token", f"looking it up failed: {one_line(exc.detail)}")
    name = own.get("Name") or "-"
    if own.get("Type") == "management":
        return Check(OK, "token", f"management token '{name}': every capability")
    policies = ", ".join(own.get("Policies") or []) or "none"
    expires = f", expires {own['ExpirationTime']}" if own.get("ExpirationTime") else ""
    return Check(OK, "token", f"'{name}' (policies: {policies}{expires})")


# -- what the token may do in a namespace ----------------------------------------------


def probe_job(
    job_id: str, namespace: str | None, region: str | None = None, node_pool: str | None = None
) -> dict:
    """The smallest valid batch job, for plans that test rights, never registered."""
    job = {
        "ID": job_id,
        "Name": job_id,
        "Type": "batch",
        "Namespace": namespace or "default",
        "Datacenters": ["*"],
        "TaskGroups": [
            {
                "Name": "probe",
                "Count": 1,
                "Tasks": [
                    {
                        "Name": "probe",
                        "Driver": "raw_exec",
                        "Config": {"command": "true"},
                        "Resources": {"CPU": 100, "MemoryMB": 32},
                    }
                ],
            }
        ],
    }
    if region:
        job["Region"] = region
    if node_pool:
        job["NodePool"] = node_pool
    return job


def _probe_hcl(job_id: str) -> str:
    return (
        f'job "{job_id}" {{\n  type = "batch"\n  group "probe" {{\n    task "probe" {{\n'
        '      driver = "raw_exec"\n      config {\n        command = "true"\n      }\n'
        "    }\n  }\n}\n"
    )


def check_capabilities(
    client: NomadClient,
    namespace: str | None,
    region: str | None = None,
    which: tuple[str, ...] = tuple(name for name, _ in CAPABILITIES),
    node_pool: str | None = None,
) -> list[Check]:
    """One line per capability a run needs in ``namespace``, each tested for real.

    The job ID is random, so the lookup, the listing and the stop find nothing
    and change nothing; the plan registers nothing.  With ``node_pool`` the plan
    also proves that the pool exists (Nomad checks it before the rights).
    """
    ns = namespace or "default"
    job_id = f"mf-doctor-{uuid.uuid4().hex[:12]}"
    probes: Mapping[str, Callable[[], object]] = {
        "parse jobs": lambda: client.parse(_probe_hcl(job_id), namespace=ns),
        "submit jobs": lambda: client.plan(probe_job(job_id, ns, region, node_pool)),
        "read jobs": lambda: client.job(job_id, namespace=ns),
        "list jobs": lambda: client.list_jobs(prefix=job_id, namespace=ns),
        "stop jobs": lambda: client.deregister(job_id, namespace=ns),
    }
    checks = []
    for name, capability in CAPABILITIES:
        if name not in which:
            continue
        label = f"{name} in namespace '{ns}'"
        try:
            probes[name]()
        except NomadClientError as exc:
            checks.append(Check(FAIL, label, _denial(exc, capability, ns)))
            continue
        checks.append(Check(OK, label, f"allowed (`{capability}`)"))
    return checks


def _denial(exc: NomadClientError, capability: str, namespace: str) -> str:
    """A failed capability probe, as the line's finding: what is missing, or which
    capability the token lacks here (the probe's error says which case it is)."""
    if isinstance(exc, NomadUnknownNodePool):
        return (
            f"node pool '{exc.node_pool}' does not exist: create it (`nomad node pool apply`) "
            "or choose another with METAFLOW_NOMAD_NODE_POOL or @nomad(node_pool=...)."
        )
    if isinstance(exc, NomadUnknownNamespace):
        return (
            f"the namespace does not exist: create it (`nomad namespace apply {namespace}`) "
            f"or choose another with {SETTING['namespace']} or @nomad(nomad_namespace=...)."
        )
    if isinstance(exc, NomadTokenMissing):
        return f"denied: {missing_token_clause(namespace)}"
    if isinstance(exc, NomadForbidden):
        return f"denied: the token needs the `{capability}` capability here. {exc.explanation}"
    return one_line(exc.detail)


# -- what doctor reads ---------------------------------------------------------------


def settings_report(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every METAFLOW_NOMAD_* setting (and its NOMAD_* twin) with its value and source.

    Secrets are shown as set or not set, never their value.
    """
    values = connection_config(environ)
    lines = []
    for spec in SETTING_SPECS:
        if not spec.config_name:
            continue
        value = values.get(spec.config_name)
        twin = f" (or {spec.standard_env})" if spec.standard_env else ""
        if value is None:
            default = f"; default {spec.default_doc}" if spec.default_doc else ""
            lines.append(f"  {spec.metaflow_name}{twin}: not set{default}")
            continue
        shown = "set" if spec.secret else value
        source = setting_source(spec.config_name, environ)
        lines.append(f"  {spec.metaflow_name}{twin}: {shown} (from {source})")
    return lines
