"""What the code package carries of this library, so that task images need no
metaflow-nomad install."""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Test support: a local agent harness and test PKI, never needed by a task.
NOT_SHIPPED = ("testing",)


TEMPLATES_ROOT = PACKAGE_ROOT.parent / "nomad_templates"


def shipped_modules() -> list[tuple[str, str]]:
    """(path, name in the code package) of every library module a task may import,
    and of the packaged templates, which a deployed run renders its steps from."""
    shipped = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT)
        if relative.parts[0] in NOT_SHIPPED:
            continue
        shipped.append((str(path), f"metaflow_nomad/{relative.as_posix()}"))
    for path in sorted(TEMPLATES_ROOT.rglob("*")):
        if path.is_file() and path.suffix in (".j2", ".py"):
            relative = path.relative_to(TEMPLATES_ROOT).as_posix()
            shipped.append((str(path), f"nomad_templates/{relative}"))
    return shipped


def project_files(flow_dir: str, templates_dir: str | None) -> list[tuple[str, str]]:
    """The project file and template overrides a flow's steps are rendered with.

    A deployed run renders its steps on a Nomad node, from the code package, so
    the package carries what the launcher found on disk: the project file that
    applies to the flow (even one in a parent directory) at the package's root,
    and the project's templates (``METAFLOW_NOMAD_TEMPLATES_DIR`` first, then
    ``nomad_templates/`` next to the flow) under ``nomad_templates/``.
    """
    from metaflow_nomad.plugin.step_settings import PROJECT_FILE, find_project_file

    files: dict[str, str] = {}
    project_file = find_project_file(flow_dir)
    if project_file is not None:
        files[PROJECT_FILE] = str(project_file)
    for directory in (Path(flow_dir) / "nomad_templates", templates_dir):
        if not directory or not Path(directory).is_dir():
            continue
        for path in sorted(Path(directory).rglob("*.j2")):
            files[f"nomad_templates/{path.relative_to(directory).as_posix()}"] = str(path)
    return [(path, arcname) for arcname, path in files.items()]
