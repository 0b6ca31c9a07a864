"""Task metadata the launcher records: the allocation's UI link and what the task used.

The launcher never imports Metaflow for its own work (it would cost every task
0.4 s and 20 MB), so it writes the records as Metaflow's providers do:

- local metadata: one ``sysmeta_<field>_<ms>.json`` per field in the task's
  ``_meta`` directory, which the runtime found for it
  (``AttemptPlan.local_metadata_dir``), as ``LocalMetadataProvider`` does;
- the metadata service: one POST of the same records to the task's
  ``/metadata``, as ``ServiceMetadataProvider.register_metadata`` does, to the
  runtime's service URL (``AttemptPlan.metadata_service_url``) with the
  runtime's headers, which come through the launcher's environment
  (``SERVICE_HEADERS_ENV``), never the plan file.

Any other provider is Metaflow's own, loaded only then.  A record that cannot be
written is said, never the task's verdict.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping

from metaflow_nomad.model import JobIdentity
from metaflow_nomad.runtime.plan import AttemptPlan

# The runtime's metadata service headers (Metaflow's SERVICE_HEADERS, with its API
# key), as JSON, in the launcher's environment only.
SERVICE_HEADERS_ENV = "METAFLOW_NOMAD_LAUNCHER_SERVICE_HEADERS"
SERVICE_ATTEMPTS = 3
SERVICE_TIMEOUT_S = 10.0


def metadata_records(identity: JobIdentity, fields: dict[str, str], now_ms: int, user: str):
    """Metaflow's JSON for each field (``MetadataProvider._metadata_to_json``)."""
    return {
        f"sysmeta_{field}_{now_ms}": {
            "flow_id": identity.flow_name,
            "run_number": str(identity.run_id),
            "step_name": identity.step_name,
            "task_id": str(identity.task_id),
            "field_name": field,
            "type": field,
            "value": value,
            "tags": [f"attempt_id:{identity.attempt}"],
            "user_name": user,
            "ts_epoch": now_ms,
        }
        for field, value in fields.items()
    }


def record_task_metadata(
    plan: AttemptPlan,
    fields: dict[str, str],
    echo: Callable[[str], None],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Record ``fields`` for the plan's task where its run's metadata lives."""
    if not fields:
        return
    environ = os.environ if environ is None else environ
    identity = plan.identity
    try:
        if plan.local_metadata_dir:
            _write_local(plan.local_metadata_dir, identity, fields)
        elif plan.metadata_service_url:
            headers = json.loads(environ.get(SERVICE_HEADERS_ENV) or "{}")
            _post_to_service(plan.metadata_service_url, headers, identity, fields)
        elif plan.metadata_type and plan.metadata_type != "local":
            _register_with_metaflow(plan.metadata_type, identity, fields)
    except Exception as exc:  # metadata is a report, not the verdict
        echo(f"Could not record the task's Nomad metadata ({', '.join(fields)}): {exc}")


def task_metadata_url(service_url: str, identity: JobIdentity) -> str:
    """The task's metadata endpoint (Metaflow's ``ServiceMetadataProvider._obj_path``)."""
    parts = (identity.flow_name, str(identity.run_id), identity.step_name, str(identity.task_id))
    flow, run, step, task = (urllib.parse.quote(p, safe="") for p in parts)
    return f"{service_url.rstrip('/')}/flows/{flow}/runs/{run}/steps/{step}/tasks/{task}/metadata"


def _post_to_service(
    service_url: str, headers: Mapping[str, str], identity: JobIdentity, fields: dict[str, str]
) -> None:
    """One POST of the records; a connection error or a 5xx is tried again, as
    Metaflow's provider does, a 4xx is the answer."""
    records = metadata_records(identity, fields, round(time.time() * 1000), identity.user)
    request = urllib.request.Request(
        task_metadata_url(service_url, identity),
        data=json.dumps(list(records.values())).encode(),
        headers={**headers, "Content-Type": "application/json"},
        method="POST",
    )
    for attempt in range(SERVICE_ATTEMPTS):
        try:
            with urllib.request.urlopen(request, timeout=SERVICE_TIMEOUT_S):
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == SERVICE_ATTEMPTS - 1:
                raise
        except urllib.error.URLError:
            if attempt == SERVICE_ATTEMPTS - 1:
                raise
        time.sleep(2**attempt)


def _write_local(meta_dir: str, identity: JobIdentity, fields: dict[str, str]) -> None:
    os.makedirs(meta_dir, exist_ok=True)
    records = metadata_records(identity, fields, round(time.time() * 1000), identity.user)
    for name, record in records.items():
        path = os.path.join(meta_dir, f"{name}.json")
        if os.path.exists(path):
            continue
        with tempfile.NamedTemporaryFile("w", dir=meta_dir, delete=False) as handle:
            json.dump(record, handle)
        os.rename(handle.name, path)


def _register_with_metaflow(metadata_type: str, identity: JobIdentity, fields: dict[str, str]):
    from types import SimpleNamespace

    from metaflow.metadata_provider import MetaDatum
    from metaflow.metaflow_environment import MetaflowEnvironment
    from metaflow.plugins import METADATA_PROVIDERS

    provider_class = next(p for p in METADATA_PROVIDERS if metadata_type == p.TYPE)
    flow = SimpleNamespace(name=identity.flow_name)
    provider = provider_class(MetaflowEnvironment(flow), flow, None, None)
    provider.register_metadata(
        identity.run_id,
        identity.step_name,
        identity.task_id,
        [
            MetaDatum(field=k, value=v, type=k, tags=[f"attempt_id:{identity.attempt}"])
            for k, v in fields.items()
        ],
    )
