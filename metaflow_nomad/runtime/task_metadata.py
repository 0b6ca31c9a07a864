"""Task metadata the launcher records: the allocation's UI link and what the task used.

The launcher never imports Metaflow for its own work, so with local metadata it
writes the records as Metaflow's ``LocalMetadataProvider.register_metadata``
does: one ``sysmeta_<field>_<ms>.json`` per field in the task's ``_meta``
directory, which the runtime found for it (``AttemptPlan.local_metadata_dir``).
Any other provider (the metadata service) is Metaflow's own, loaded only then.
A record that cannot be written is said, never the task's verdict.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable

from metaflow_nomad.model import JobIdentity


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
    identity: JobIdentity,
    fields: dict[str, str],
    metadata_type: str | None,
    local_metadata_dir: str | None,
    echo: Callable[[str], None],
) -> None:
    if not fields:
        return
    try:
        if local_metadata_dir:
            _write_local(local_metadata_dir, identity, fields)
        elif metadata_type and metadata_type != "local":
            _register_with_metaflow(metadata_type, identity, fields)
    except Exception as exc:  # metadata is a report, not the verdict
        echo(f"Could not record the task's Nomad metadata ({', '.join(fields)}): {exc}")


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
