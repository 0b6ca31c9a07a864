"""What the ``doctor --probe`` task runs once it has its code package (in the task).

It writes one small blob into the flow's datastore through Metaflow's own
datastore layer (as a step saves an artifact) and reads it back.  Its lines start
with ``metaflow-nomad probe: `` so that the launcher finds them in Nomad's raw
task output; the launcher then reads the blob itself, which proves that the task
and the launcher share one datastore.  With Metaflow's metadata service it first
pings the service the way the task's steps would reach it: at the URL and with
the headers the task was given (its internal URL, the headers from the Nomad
Variable).
"""

from __future__ import annotations

import json
import os
import sys

PREFIX = "metaflow-nomad probe: "
STARTED = "started with the code package unpacked"
# Set by render.probe for the task.
FLOW_ENV = "METAFLOW_NOMAD_PROBE_FLOW"
ROOT_ENV = "METAFLOW_NOMAD_PROBE_ROOT"
TOKEN_ENV = "METAFLOW_NOMAD_PROBE_TOKEN"
SERVICE_ENV = "METAFLOW_NOMAD_PROBE_SERVICE"
# The service line: "service ok: <detail>" or "service FAIL: <detail>".
SERVICE_OK = "service ok: "
SERVICE_FAIL = "service FAIL: "
DATASTORE_EXIT = 3


def service_line() -> str:
    """Ping the metadata service as this task's steps would reach it."""
    from metaflow_nomad.api.metadata_service import task_ping_line

    try:
        headers = json.loads(os.environ.get("METAFLOW_SERVICE_HEADERS") or "{}")
    except ValueError:
        headers = None
    if not isinstance(headers, dict):
        return SERVICE_FAIL + (
            "the task's METAFLOW_SERVICE_HEADERS is not a JSON object: fix the item "
            "METAFLOW_SERVICE_HEADERS of the Nomad Variable (docs/metadata-service.md)"
        )
    ok, detail = task_ping_line(os.environ.get("METAFLOW_SERVICE_URL"), headers)
    return (SERVICE_OK if ok else SERVICE_FAIL) + detail


def main() -> None:
    print(PREFIX + STARTED, flush=True)
    if os.environ.get(SERVICE_ENV):
        print(PREFIX + service_line(), flush=True)
    from metaflow.datastore import FlowDataStore
    from metaflow.plugins import DATASTORES

    datastore_type = os.environ["METAFLOW_DEFAULT_DATASTORE"]
    root = os.environ[ROOT_ENV]
    token = os.environ[TOKEN_ENV].encode()
    try:
        storage = next(impl for impl in DATASTORES if datastore_type == impl.TYPE)
        flow_datastore = FlowDataStore(os.environ[FLOW_ENV], storage_impl=storage, ds_root=root)
        [(url, key)] = flow_datastore.save_data([token], len_hint=1)
        [(_, blob)] = list(flow_datastore.load_data([key]))
    except Exception as exc:  # any datastore error is the answer the probe looks for
        print(f"{PREFIX}datastore {root} failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        sys.exit(DATASTORE_EXIT)
    if blob != token:
        print(f"{PREFIX}datastore {root} returned other bytes than were written", file=sys.stderr)
        sys.exit(DATASTORE_EXIT)
    print(f"{PREFIX}wrote {url} key {key}", flush=True)


if __name__ == "__main__":
    main()
