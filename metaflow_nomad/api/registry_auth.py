"""``doctor``'s line on a docker step's registry credentials (feature ``registry_auth``).

The task pulls its image with the items ``registry_username`` and
``registry_password`` of a Nomad Variable, read with its workload identity when it
starts.  From the launcher, ``doctor`` reads the same Variable with the launcher's
token and says whether both items are there; it never shows their values.  Whether
the registry accepts them is what ``doctor --probe`` shows, by pulling.
"""

from __future__ import annotations

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.diagnosis import one_line
from metaflow_nomad.api.doctor import FAIL, OK, WARN, Check
from metaflow_nomad.errors import NomadClientError, NomadForbidden, NomadNotFound

ITEMS = ("registry_username", "registry_password")
NAME = "registry credentials"


def check_registry_auth(client: NomadClient, path: str, namespace: str, image: str) -> Check:
    """Will the step's tasks find credentials for ``image`` in the Variable ``path``?"""
    where = f"the Nomad Variable {path} in namespace '{namespace}'"
    store = (
        f"nomad var put -namespace {namespace} {path} registry_username=<user> "
        "registry_password=<password>"
    )
    try:
        variable, _ = client.blocking_get(f"var/{path}", params={"namespace": namespace})
    except NomadNotFound:
        return Check(
            FAIL,
            NAME,
            f"there is no Nomad Variable {path} in namespace '{namespace}': tasks would pull "
            f"{image} with the node's own credentials, if any. "
            f"Store them (docs/docker.md): {store}",
        )
    except NomadForbidden:
        return Check(
            WARN,
            NAME,
            f"this launcher's token may not read {where}, so doctor cannot tell whether tasks "
            "find credentials there (they read it with their workload identity): "
            "doctor --probe pulls the image as a task does",
        )
    except NomadClientError as exc:
        return Check(WARN, NAME, f"{where} could not be read: {one_line(exc.detail)}")
    items = variable.get("Items") or {}
    missing = [item for item in ITEMS if not items.get(item)]
    if missing:
        return Check(
            FAIL,
            NAME,
            f"{where} has no {' or '.join(missing)}: tasks would pull {image} without them. "
            f"Store both (docs/docker.md): {store}",
        )
    return Check(
        OK, NAME, f"tasks pull {image} with registry_username and registry_password from {where}"
    )
