"""The local datastore on a shared filesystem: what a task needs to act as if local.

A local run's steps find the run's metadata and cards by looking for
``.metaflow`` upwards from the working directory (or through
``METAFLOW_DATASTORE_SYSROOT_LOCAL``).  A Nomad task works in its allocation's
directory, so without this it would look there, find nothing, and write there.
"""

from __future__ import annotations

import os
import shlex

from metaflow.metaflow_config import DATASTORE_LOCAL_DIR


def shared_filesystem_env(datastore_root: str | None, sysroot: str | None) -> dict[str, str]:
    """Pin the task's local metadata root to the run's datastore.

    Metaflow's local metadata provider (and so the client API inside a step)
    takes its root from METAFLOW_DATASTORE_SYSROOT_LOCAL; the run's datastore
    root is ``<sysroot>/.metaflow``.  With any other root the launcher's own
    setting, if there is one, is passed on as it is.
    """
    from metaflow import metaflow_config as mc

    root = (datastore_root or "").rstrip("/")
    if os.path.basename(root) == DATASTORE_LOCAL_DIR:
        sysroot = os.path.dirname(root)
    env = {"METAFLOW_DATASTORE_SYSROOT_LOCAL": sysroot} if sysroot else {}
    if mc.CARD_LOCALROOT:
        env["METAFLOW_CARD_LOCALROOT"] = mc.CARD_LOCALROOT
    return env


def card_root_link_commands(datastore_root: str | None) -> list[str]:
    """Make the task's cards land where the launcher's ``card get`` looks for them.

    Metaflow's card store has no usable root setting for the local datastore
    (with METAFLOW_CARD_LOCALROOT set it falls back to the datastore root, and
    that is passed on as it is); it looks for ``.metaflow`` upwards from the
    working directory.  So the task's directory gets a ``.metaflow`` link to the
    directory the launcher would use.  Where the launcher finds none (a deployed
    run's runner works in its allocation's directory; its deployer's cards are
    next to the run's datastore, whose root it was given), the link goes to the
    run's datastore root, whose ``mf.cards`` the client reads for the task.
    """
    from metaflow import metaflow_config as mc
    from metaflow.plugins.cards.card_datastore import CardDatastore

    if mc.CARD_LOCALROOT:
        return []
    local_dir = os.path.dirname(os.path.abspath(CardDatastore.get_storage_root("local")))
    if not os.path.isdir(local_dir) and datastore_root:
        local_dir = datastore_root
    return [f"ln -s {shlex.quote(local_dir)} {DATASTORE_LOCAL_DIR}"]
