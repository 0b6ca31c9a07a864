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


def project_file(flow_dir: str) -> list[tuple[str, str]]:
    """The project file that applies to the flow, at the package's root.

    A deployed run resolves its steps' settings on a Nomad node, from the code
    package (the namespace it dispatches them in, their resources): it must see
    the ``metaflow_nomad.yaml`` the launcher saw, even one in a parent directory.
    """
    from metaflow_nomad.plugin.step_settings import PROJECT_FILE, find_project_file

    found = find_project_file(flow_dir)
    return [] if found is None else [(str(found), PROJECT_FILE)]
