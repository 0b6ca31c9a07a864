"""A step's Nomad settings from its decorators, the project file and configuration,
and the checks a step must pass before anything of it is launched."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from metaflow_nomad.config import (
    is_truthy,
    read_config,
    read_standard_env,
    secret_env_problem,
)
from metaflow_nomad.errors import NomadException, problems_of, raise_problems
from metaflow_nomad.render.exact_env import inexact_names
from metaflow_nomad.settings import (
    StepSettings,
    project_defaults_for_step,
    resolve_step_settings,
)

PROJECT_FILE = "metaflow_nomad.yaml"
CONFLICTING_DECORATORS = ("kubernetes", "batch", "slurm")
T = TypeVar("T")


def find_nomad_decorator(flow, step_name: str):
    """The step's @nomad decorator instance (static or from --with), or None."""
    return next((d for d in getattr(flow, step_name).decorators if d.name == "nomad"), None)


def is_parallel_step(decos) -> bool:
    """A multi-node step: ``@parallel`` or one of its subclasses (``@torchrun``,
    metaflow_ray's ``@metaflow_ray``...), known by class, whatever its name."""
    from metaflow.plugins.parallel_decorator import ParallelDecorator

    return any(isinstance(deco, ParallelDecorator) for deco in decos)


def user_set_attributes(deco) -> dict:
    """The attributes a user actually set on a decorator (not its defaults)."""
    names = getattr(deco, "_user_defined_attributes", None)
    if names is None:
        names = [k for k, v in deco.attributes.items() if v is not None]
    return {k: deco.attributes[k] for k in names if deco.attributes.get(k) is not None}


@lru_cache(maxsize=8)
def load_project_file(flow_dir: str) -> dict:
    """``metaflow_nomad.yaml`` from the flow's directory or the nearest parent.

    Cached: every @nomad step's ``step_init`` asks for it, in every process.
    Callers only read the returned mapping.
    """
    candidate = find_project_file(flow_dir)
    if candidate is None:
        return {}
    return read_yaml_mapping(str(candidate))


def read_yaml_mapping(path: str) -> dict:
    """A YAML file whose top level is a mapping (the project file, a ``--values``
    file); anything else is a one-line error naming the file, not a traceback."""
    import yaml

    try:
        with open(path) as handle:
            document = yaml.safe_load(handle) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f":{where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise NomadException(f"{path}{line}: not valid YAML ({problem}). Fix the file.") from None
    if not isinstance(document, dict):
        raise NomadException(f"{path}: expected a mapping at the top level.")
    return document


def find_project_file(flow_dir: str) -> Path | None:
    """``metaflow_nomad.yaml`` in the flow's directory or the nearest parent (up to
    the repository's root)."""
    for directory in (Path(flow_dir), *Path(flow_dir).parents):
        candidate = directory / PROJECT_FILE
        if candidate.is_file():
            return candidate
        if (directory / ".git").exists():
            break
    return None


def conda_environment_problem(step_name: str, decos, datastore_type: str) -> str | None:
    """Why a @pypi/@conda step cannot run on Nomad with this datastore, or None.

    Metaflow solves the environment on the launcher, caches its packages in the
    datastore and has each task fetch them with micromamba.  With the local
    datastore nothing is cached, so the task would fail late and obscurely.
    """
    envs = [d for d in decos if d.name in ("conda", "pypi") and not d.attributes.get("disabled")]
    if not envs or datastore_type != "local":
        return None
    return (
        f"Step '{step_name}': @{envs[0].name} with @nomad needs a remote datastore "
        "(--datastore=s3; S3-compatible endpoints work through METAFLOW_S3_ENDPOINT_URL). "
        "Metaflow caches the solved packages there and each Nomad task downloads them. "
        "The launcher also needs micromamba (on PATH, or reachable at micro.mamba.pm) and "
        "access to the package channels; the task's image or client node needs bash, "
        "Python with boto3, and micromamba on PATH or HTTPS access to micro.mamba.pm."
    )


def resolve_for_step(
    step_name: str,
    decos,
    nomad_deco,
    flow_dir: str,
    project_document: dict | None = None,
    config: dict | None = None,
) -> StepSettings:
    """Resolve settings for a step from its decorators and the current configuration."""
    resources = next((d for d in decos if d.name == "resources"), None)
    document = load_project_file(flow_dir) if project_document is None else project_document
    return resolve_step_settings(
        step_name,
        user_set_attributes(nomad_deco),
        user_set_attributes(resources) if resources else {},
        config=read_config() if config is None else config,
        project_defaults=project_defaults_for_step(document, step_name),
        standard_env=read_standard_env(),
    )


def check_step(step: str, decos) -> None:
    """What must hold before any task of this step is launched on Nomad: raises
    every problem found (``errors.raise_problems``), not only the first."""
    problems: list[NomadException] = []
    for deco in decos:
        if deco.name == "environment":
            problem = secret_env_problem(deco.attributes.get("vars") or {})
            if problem:
                problems.append(
                    NomadException(
                        f"Step '{step}': @environment sets a credential, but with @nomad there "
                        f"must be {problem}."
                    )
                )
            unsettable = inexact_names(deco.attributes.get("vars") or {})
            if unsettable:
                problems.append(
                    NomadException(
                        f"Step '{step}': @environment variable {unsettable[0]!r} has a value "
                        "that Nomad would change (it contains '${' or is not in Unicode NFC "
                        "form), and only a variable whose name is a shell name (letters, "
                        "digits, _) can be delivered exactly. Rename the variable."
                    )
                )
        if deco.name in CONFLICTING_DECORATORS:
            problems.append(
                NomadException(
                    f"Step '{step}': @nomad cannot be combined with @{deco.name}. "
                    "Remove one of them."
                )
            )
    raise_problems(problems)


def gather(problems: list[NomadException], check: Callable[..., T], *args: Any) -> T | None:
    """``check(*args)``, or None with its problems added to ``problems``: a step's
    checks all run, so that one run reports everything to fix."""
    try:
        return check(*args)
    except NomadException as error:
        problems.extend(problems_of(error))
        return None


def flow_settings_problems(flow, graph) -> list[NomadException]:
    """Every problem that would stop a run of ``flow``, for all of its @nomad steps
    in the graph's order: raised together (``errors.raise_problems``) before the
    run contacts the cluster, so that one run reports all of them.

    Each step's decorator found its problems in ``step_init``.  The datastore
    belongs to the flow, not to a step: its problem is listed once.
    """
    problems: list[NomadException] = []
    datastore_listed = False
    for name in graph.sorted_nodes:
        deco = find_nomad_decorator(flow, name)
        if deco is None:
            continue
        problems.extend(deco.problems)
        if deco.datastore_problem and not datastore_listed:
            problems.append(NomadException(deco.datastore_problem))
            datastore_listed = True
    return problems


def datastore_problem(step: str, flow_datastore, config: dict) -> str | None:
    """Why Nomad tasks could not use this datastore, or None.

    Kept apart from ``check_step``: a run must refuse it, but ``render`` (a dry run)
    shows the job anyway, with this as a warning.
    """
    if flow_datastore.TYPE != "local":
        return None
    if not is_truthy(config.get("NOMAD_SHARED_FILESYSTEM")):
        return (
            f"Step '{step}': @nomad with the local datastore needs the Nomad tasks to "
            "see the datastore root at the same absolute path. If they do (a local "
            "agent, or a shared filesystem), set METAFLOW_NOMAD_SHARED_FILESYSTEM=1. "
            "Otherwise use --datastore=s3 (S3-compatible endpoints work through "
            "METAFLOW_S3_ENDPOINT_URL)."
        )
    if not os.path.isabs(flow_datastore.datastore_root or ""):
        return f"Step '{step}': the local datastore root must be an absolute path."
    return None
