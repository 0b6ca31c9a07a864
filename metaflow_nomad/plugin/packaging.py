"""What the code package carries of this library, so that task images need no
metaflow-nomad install."""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Test support: a local agent harness and test PKI, never needed by a task.
NOT_SHIPPED = ("testing",)


def shipped_modules() -> list[tuple[str, str]]:
    """(path, name in the code package) of every library module a task may import."""
    shipped = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT)
        if relative.parts[0] in NOT_SHIPPED:
            continue
        shipped.append((str(path), f"metaflow_nomad/{relative.as_posix()}"))
    return shipped
