"""The run-wide render inputs, collected once from configuration and the project.

Every entry point that renders jobs (a run's runtime, ``render``, ``doctor``,
``nomad-workflows create|render``) calls ``render_inputs`` once and passes the
result down; the render stage itself reads no configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.metadata_service import DEFAULT_VARIABLE
from metaflow_nomad.config import flow_directory, read_config
from metaflow_nomad.errors import NomadException
from metaflow_nomad.plugin.step_settings import load_project_file
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.validation import variable_path_problem

SERVICE_AUTH_SETTING = "METAFLOW_NOMAD_SERVICE_AUTH_VARIABLE"


def render_inputs(
    connection: ConnectionSettings, values: Mapping[str, Any] | None = None
) -> RenderInputs:
    """The inputs for this flow's jobs, given how the launcher reaches the cluster.

    ``values`` replaces the project file's ``values:`` (``render --values``).
    """
    config = read_config()
    flow_dir = flow_directory()
    if values is None:
        values = load_project_file(flow_dir).get("values") or {}
    return RenderInputs(
        flow_dir=flow_dir,
        templates_dir=config.get("NOMAD_TEMPLATES_DIR"),
        task_tls_dir=config.get("NOMAD_TASK_TLS_DIR"),
        mtls_address=connection.address if connection.uses_mtls else None,
        values=dict(values),
        service_auth_variable=service_auth_variable(config),
    )


def service_headers() -> dict[str, str]:
    """The headers this launcher sends to the metadata service: Metaflow's own
    ``SERVICE_HEADERS``, which holds ``x-api-key`` when METAFLOW_SERVICE_AUTH_KEY is set."""
    from metaflow.metaflow_config import SERVICE_HEADERS

    return dict(SERVICE_HEADERS or {})


def service_auth_variable(config: Mapping[str, str]) -> str | None:
    """The Nomad Variable the jobs read the service headers from, or None when the
    launcher sends none: the headers themselves never go into a jobspec, so a job
    that needs them gets them from the cluster (feature ``service_auth``)."""
    if not service_headers():
        return None
    path = config.get("NOMAD_SERVICE_AUTH_VARIABLE") or DEFAULT_VARIABLE
    problem = variable_path_problem(path)
    if problem:
        raise NomadException(f"{SERVICE_AUTH_SETTING} is set to {path!r}: {problem}.")
    return path
