"""Links into Nomad's web UI, for the launcher's lines, task metadata and `nomad list`.

Nomad serves its UI at ``/ui/`` on the API address, so that is the default base;
``METAFLOW_NOMAD_UI_URL`` names another (a proxy, a public name for a private
address).  Pages of another namespace than ``default`` carry it, as the UI's own
links do.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from metaflow_nomad.config import connection_config

UI_URL_SETTING = "NOMAD_UI_URL"


def ui_base_url(api_address: str, environ: Mapping[str, str] | None = None) -> str:
    """The UI's base address: the setting, else the API address."""
    base = connection_config(environ).get(UI_URL_SETTING) or api_address
    base = base.rstrip("/")
    return base[: -len("/ui")] if base.endswith("/ui") else base


def allocation_url(base: str, alloc_id: str, namespace: str | None = None) -> str:
    return f"{base}/ui/allocations/{urllib.parse.quote(alloc_id, safe='')}{_ns_query(namespace)}"


def job_url(base: str, job_id: str, namespace: str | None = None) -> str:
    """A job's page (the UI names jobs ``<id>@<namespace>``)."""
    name = urllib.parse.quote(f"{job_id}@{namespace or 'default'}", safe="@")
    return f"{base}/ui/jobs/{name}"


def _ns_query(namespace: str | None) -> str:
    if not namespace or namespace == "default":
        return ""
    return "?" + urllib.parse.urlencode({"namespace": namespace})
