"""With local metadata and a remote datastore, bring a finished task's metadata home.

The task sends its metadata to the datastore (``task.run_metadata``); Metaflow's
own ``sync_local_metadata_from_datastore`` unpacks it into the launcher's
``.metaflow`` before the runtime moves on, as ``@kubernetes`` does.  This is the
one step of a launcher that loads Metaflow, and only in that configuration.
"""

from __future__ import annotations

from metaflow_nomad.model import JobIdentity


def bring_task_metadata_home(datastore_type: str, datastore_root: str, identity: JobIdentity):
    from metaflow.datastore import FlowDataStore
    from metaflow.datastore.exceptions import DataException
    from metaflow.metadata_provider.util import sync_local_metadata_from_datastore
    from metaflow.metaflow_config import DATASTORE_LOCAL_DIR
    from metaflow.plugins import DATASTORES

    storage = next(d for d in DATASTORES if datastore_type == d.TYPE)
    flow_datastore = FlowDataStore(
        identity.flow_name, None, storage_impl=storage, ds_root=datastore_root
    )
    try:
        task_ds = flow_datastore.get_task_datastore(
            identity.run_id, identity.step_name, identity.task_id
        )
    except DataException:
        # The task never finished an attempt (it could not start, or it was
        # killed): there is no metadata to bring back, and the error would hide
        # the real one.
        return
    sync_local_metadata_from_datastore(DATASTORE_LOCAL_DIR, task_ds)
