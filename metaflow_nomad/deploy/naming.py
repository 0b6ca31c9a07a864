"""Names of a deployment, its runner jobs and its runs.

A deployment is named like an Argo Workflows template: the flow name, or with
``@project`` the project flow name (``project.branch.Flow``), so that every
branch and ``--production`` gets its own deployment.  It owns two runner jobs:
the parameterized job under the deployment's name (``trigger`` dispatches it)
and, with ``@schedule``, a periodic job next to it.

Run ids are derived from the runner job that runs them, so the runner needs no
input to know its run id and ``trigger`` knows it as soon as Nomad answers the
dispatch.  They stay short (the step job IDs keep 40 characters of a run id)
and are unique per runner job: ``nomad-dispatch-<unix time>-<hash>`` or
``nomad-periodic-<unix time>-<hash>``, the hash being over the runner job ID.
A run resumed after its runner was lost continues as ``<run id>-r1``, ``-r2``...
"""

from __future__ import annotations

import base64
import hashlib
import re

from metaflow_nomad.errors import NomadException

RUN_ID_PREFIX = "nomad-"
SCHEDULE_SUFFIX = "-schedule"
MAX_NAME_LENGTH = 60
RESUME_MARK = "-r"

_VALID_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_CHILD = re.compile(r"/(dispatch|periodic)-(\d+)")
_ATTEMPT = re.compile(r"^(.*)-r(\d+)$")


class DeploymentNameError(NomadException):
    headline = "Invalid deployment name"


def deployment_name(
    flow_name: str, project_flow_name: str | None = None, given: str | None = None
) -> str:
    """The deployment's name: ``--name``, else the (project) flow name, made a valid job ID.

    A name given with ``--name`` must already be valid (a silent change would
    deploy under a name the user did not choose); a derived one is lower-cased,
    cleaned and, if too long, shortened with a hash that keeps it unique.
    """
    if given is not None:
        if project_flow_name:
            raise DeploymentNameError(
                "--name cannot be used with @project: the deployment is named after the "
                "project and branch. Use --branch or --production instead."
            )
        if not _VALID_NAME.match(given) or len(given) > MAX_NAME_LENGTH:
            raise DeploymentNameError(
                f"--name {given!r} is not a valid deployment name: use at most "
                f"{MAX_NAME_LENGTH} lower-case letters, digits, '.', '_' or '-', starting "
                "and ending with a letter or digit."
            )
        return given
    source = project_flow_name or flow_name
    name = _UNSAFE.sub("-", source.lower()).strip("-._")
    if len(name) > MAX_NAME_LENGTH or not name:
        digest = _short_hash(source, 8)
        name = f"{name[: MAX_NAME_LENGTH - 9].rstrip('-._')}-{digest}".lstrip("-")
    return name


def schedule_job_id(deployment: str) -> str:
    """The periodic runner job of a deployment with ``@schedule``."""
    return deployment + SCHEDULE_SUFFIX


def run_id_for_runner_job(job_id: str) -> str:
    """The run id of the runner job ``job_id`` (a dispatched or periodic child)."""
    match = _CHILD.search(job_id)
    kind, stamp = (match.group(1), match.group(2)) if match else ("run", "0")
    return f"{RUN_ID_PREFIX}{kind}-{stamp}-{_short_hash(job_id, 8)}"


def attempt_run_id(base_run_id: str, attempt: int) -> str:
    """The run id of a runner's ``attempt`` (0: the run itself; n: its n-th resume)."""
    return base_run_id if attempt == 0 else f"{base_run_id}{RESUME_MARK}{attempt}"


def base_run_id(run_id: str) -> str:
    """The run id a resumed run continues (itself for a first attempt)."""
    match = _ATTEMPT.match(run_id)
    return match.group(1) if match else run_id


def is_deployed_run_id(run_id: str) -> bool:
    return run_id.startswith(RUN_ID_PREFIX)


def production_token_prefix(deployment: str, project: str | None, branch: str | None) -> str:
    """Where Metaflow keeps the production token of this deployment (METAFLOW_HOME).

    The same key as Metaflow's other schedulers use, so that a project branch
    keeps its production namespace whichever scheduler deploys it.
    """
    if project:
        digest = base64.b32encode(hashlib.sha1(f"{project}.{branch}".encode()).digest())
        return "mfprj-" + digest.decode()[:16].lower()
    return deployment


def _short_hash(value: str, length: int) -> str:
    return hashlib.sha1(value.encode()).hexdigest()[:length]
