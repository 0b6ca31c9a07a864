"""Which Nomad this project runs on, checked at first contact.

Node pools (``node_pool``) and the Task API that deployed runs use came in Nomad
1.6, so an older cluster would fail later and obscurely: a run refuses it at
once, naming the version found and the one needed.  The version is the one the
agent at the address reports (``/v1/agent/self``); a token without
``agent:read`` cannot see it, and then nothing is refused.
"""

from __future__ import annotations

import re

MIN_NOMAD_VERSION = (1, 6, 0)
WHY_MINIMUM = "node pools and the Task API came in Nomad 1.6"


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``1.6.1``, ``1.5.6+ent``, ``1.7.0-beta.1`` -> (major, minor, patch); None if not one."""
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return tuple(int(part) for part in found.groups()) if found else None  # type: ignore[return-value]


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def too_old_message(found: str, address: str) -> str | None:
    """Why the agent at ``address`` is refused, or None if its version is supported
    (or cannot be read as one)."""
    version = parse_version(found)
    if version is None or version >= MIN_NOMAD_VERSION:
        return None
    return (
        f"the Nomad agent at {address} is version {found}, older than "
        f"{version_text(MIN_NOMAD_VERSION)}, the oldest metaflow-nomad supports "
        f"({WHY_MINIMUM}): upgrade the cluster to Nomad {version_text(MIN_NOMAD_VERSION)} "
        "or newer"
    )
