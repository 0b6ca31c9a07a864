"""Find, load and render the Jinja HCL templates.

Lookup order for a job's template:

1. ``@nomad(template=...)``: a file path (absolute, or relative to the flow's
   directory) or a template name;
2. the project's ``nomad_templates/`` directory next to the flow file (or
   ``METAFLOW_NOMAD_TEMPLATES_DIR``), for a file named like the default
   (``base.nomad.hcl.j2`` for a step, ``runner.nomad.hcl.j2`` for a runner);
3. the packaged set (``nomad_templates/v1/`` in this distribution).

A step has one template whatever its features (gpu, mtls, service_auth,
registry_auth): the
features switch blocks on inside it (``Features``), so ``template=`` and project
overrides keep them.  Packaged templates are always reachable as
``metaflow_nomad/v1/<file>``, which is what an override should ``{% extends %}``.
The variant names of earlier releases (``plain``, ``gpu``, ``mtls``,
``gpu_mtls``) still resolve, to the one step template, with one deprecation line.

Every template declares the API version it targets in a header comment::

    {# metaflow-nomad-template-api: v1 #}

and a mismatch is an error rather than a silently broken job.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.runtime
from jinja2 import meta as jinja_meta
from jinja2 import nodes as jinja_nodes

from metaflow_nomad.errors import NomadTemplateError
from metaflow_nomad.render.hcl import HclRaw, quote, to_hcl

TEMPLATE_API_VERSION = "v1"
PACKAGED_ROOT = Path(__file__).resolve().parents[2] / "nomad_templates"
PACKAGED_PREFIX = "metaflow_nomad"
SUFFIX = ".nomad.hcl.j2"
STEP_TEMPLATE = "base"
RUNNER_TEMPLATE = "runner"
# The variant templates of earlier releases, one per combination of features.
LEGACY_VARIANTS = ("plain", "gpu", "mtls", "gpu_mtls")
_LEGACY_SHIM = (
    f"{{# metaflow-nomad-template-api: {TEMPLATE_API_VERSION} #}}\n"
    f'{{% extends "{PACKAGED_PREFIX}/{TEMPLATE_API_VERSION}/{STEP_TEMPLATE}{SUFFIX}" %}}\n'
)
_deprecations_shown: set = set()
_API_RE = re.compile(r"\{#-?\s*metaflow-nomad-template-api:\s*(\S+)\s*-?#\}")


@dataclass(frozen=True)
class LoadedTemplate:
    """A compiled template plus what a job records about it in ``Meta``."""

    name: str
    path: str
    api_version: str
    sha256: str
    template: jinja2.Template


@dataclass(frozen=True)
class Features:
    """The optional parts of a job, switched on in its template.

    Each feature is one small file, ``nomad_templates/v1/features/<name>.j2``,
    whose macros the base template (and, for ``service_auth``, the runner
    template) calls in its blocks when the feature is on.
    """

    gpu: bool = False
    mtls: bool = False
    service_auth: bool = False
    registry_auth: bool = False
    task_api: bool = False
    # A @parallel step's gang: count = N nodes, their port, service and discovery.
    parallel: bool = False

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    def legacy_variant(self) -> str:
        """The variant template earlier releases chose for these features (they had
        one per combination of gpu and mtls)."""
        names = [name for name in ("gpu", "mtls") if getattr(self, name)]
        return "_".join(names) or "plain"


def deprecated(message: str) -> None:
    """One line on stderr, once per process, for a name that still works but will go."""
    if message not in _deprecations_shown:
        _deprecations_shown.add(message)
        print(f"metaflow-nomad: deprecated: {message}", file=sys.stderr)


def _legacy_alias(name: str) -> str | None:
    """A packaged variant name of earlier releases: the one step template now."""
    prefix = f"{TEMPLATE_API_VERSION}/"
    variant = name[len(prefix) : -len(SUFFIX)] if name.endswith(SUFFIX) else None
    if not name.startswith(prefix) or variant not in LEGACY_VARIANTS:
        return None
    deprecated(
        f"the template {name!r} is now {prefix}{STEP_TEMPLATE}{SUFFIX}, whose blocks the "
        "step's features (gpu, mtls) switch on. Extend or name that instead."
    )
    return _LEGACY_SHIM


def template_dirs(flow_dir: str | None, templates_dir: str | None) -> tuple[str, ...]:
    """The project's override directories, highest priority first."""
    dirs = []
    if templates_dir:
        if not Path(templates_dir).is_dir():
            # Ignoring it would silently render the packaged templates instead.
            raise NomadTemplateError(
                f"METAFLOW_NOMAD_TEMPLATES_DIR is set to {templates_dir!r}, which is not a "
                "directory. Point it at your project's template directory, or unset it."
            )
        dirs.append(str(Path(templates_dir).resolve()))
    if flow_dir:
        project = Path(flow_dir).resolve() / "nomad_templates"
        if project.is_dir() and project.resolve() != PACKAGED_ROOT:
            dirs.append(str(project))
    return tuple(dirs)


def _hcl_raw(value: Any) -> HclRaw:
    return HclRaw(value)


class _HclContext(jinja2.runtime.Context):
    """``{{ super() }}`` outputs the parent block's HCL, which must not be re-quoted."""

    def super(self, name, current):
        reference = super().super(name, current)
        if isinstance(reference, jinja2.runtime.BlockReference):
            return lambda: HclRaw(reference())
        return reference


def _finalize(value: Any) -> str:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return to_hcl(value)


@lru_cache(maxsize=16)
def template_environment(search_dirs: tuple[str, ...]) -> jinja2.Environment:
    """One cached environment per search path: compiled templates are reused."""
    packaged = jinja2.ChoiceLoader(
        [jinja2.FileSystemLoader(str(PACKAGED_ROOT)), jinja2.FunctionLoader(_legacy_alias)]
    )
    loader = jinja2.ChoiceLoader(
        [
            jinja2.PrefixLoader({PACKAGED_PREFIX: packaged}),
            *(jinja2.FileSystemLoader(d) for d in search_dirs),
            packaged,
        ]
    )
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.context_class = _HclContext
    env.filters["hcl_raw"] = _hcl_raw
    env.filters["hcl_quote"] = lambda v: HclRaw(quote(str(v)))
    return env


def _resolve_name(
    requested: str | None, default: str, flow_dir: str | None, search_dirs: tuple[str, ...]
) -> tuple[str, tuple[str, ...]]:
    """Map a template request to a loader name (and maybe an extra search dir)."""
    if requested is None:
        return _project_or_packaged(f"{default}{SUFFIX}", search_dirs), search_dirs
    candidate = Path(requested)
    if not candidate.is_absolute() and flow_dir:
        candidate = Path(flow_dir) / candidate
    if candidate.is_file():
        candidate = candidate.resolve()
        return candidate.name, (str(candidate.parent), *search_dirs)
    packaged = str(PACKAGED_ROOT / TEMPLATE_API_VERSION)
    for name in (requested, requested + SUFFIX):
        for directory in search_dirs:
            if (Path(directory) / name).is_file():
                return name, search_dirs
        if (Path(packaged) / name).is_file():
            return f"{TEMPLATE_API_VERSION}/{name}", search_dirs
        if _legacy_alias(f"{TEMPLATE_API_VERSION}/{name}"):
            return f"{TEMPLATE_API_VERSION}/{STEP_TEMPLATE}{SUFFIX}", search_dirs
    looked = [*search_dirs, packaged]
    raise NomadTemplateError(
        f"Template {requested!r} was not found. Looked for it as a file relative to the flow "
        f"directory and as a name in: {', '.join(looked)}. Name an existing .nomad.hcl.j2 file."
    )


def _project_or_packaged(file_name: str, search_dirs: tuple[str, ...]) -> str:
    """The project's file of that name, else the packaged one."""
    if any((Path(directory) / file_name).is_file() for directory in search_dirs):
        return file_name
    return f"{TEMPLATE_API_VERSION}/{file_name}"


def default_step_template(features: Features, search_dirs: tuple[str, ...]) -> str | None:
    """A project override named like the variant earlier releases chose for these
    features (``gpu.nomad.hcl.j2``), when the project has no ``base`` override:
    still used, with one deprecation line.  None otherwise."""
    base = f"{STEP_TEMPLATE}{SUFFIX}"
    legacy = f"{features.legacy_variant()}{SUFFIX}"
    for directory in search_dirs:
        if (Path(directory) / base).is_file():
            return None
        if (Path(directory) / legacy).is_file():
            deprecated(
                f"{Path(directory) / legacy} is chosen for this step as a variant override; "
                f"rename it {base} (one override for every step: the step's features "
                "switch blocks on)."
            )
            return str(Path(directory) / legacy)
    return None


def load_template(
    requested: str | None,
    default: str,
    flow_dir: str | None = None,
    templates_dir: str | None = None,
) -> LoadedTemplate:
    """Find and compile a job's template, checking its declared API version.

    ``default`` (``STEP_TEMPLATE`` or ``RUNNER_TEMPLATE``) names the template used
    when nothing is requested.
    """
    search_dirs = template_dirs(flow_dir, templates_dir)
    name, search_dirs = _resolve_name(requested, default, flow_dir, search_dirs)
    return _load(name, search_dirs)


def load_step_template(
    requested: str | None,
    features: Features,
    flow_dir: str | None = None,
    templates_dir: str | None = None,
) -> LoadedTemplate:
    """A step's template: as ``load_template``, and a project's variant-named
    override of earlier releases still applies to the steps it was chosen for."""
    if requested is None:
        requested = default_step_template(features, template_dirs(flow_dir, templates_dir))
    return load_template(requested, STEP_TEMPLATE, flow_dir, templates_dir)


@lru_cache(maxsize=64)
def _load(name: str, search_dirs: tuple[str, ...]) -> LoadedTemplate:
    env = template_environment(search_dirs)
    try:
        template = env.get_template(name)
    except jinja2.TemplateSyntaxError as exc:
        raise NomadTemplateError(
            f"{exc.filename or exc.name}:{exc.lineno}: template syntax error: {exc.message}. "
            "Fix the template at that line."
        ) from None
    except jinja2.TemplateNotFound as exc:
        raise NomadTemplateError(
            f"Template {exc.name!r} (needed by {name!r}) was not found in: "
            f"{', '.join([*search_dirs, str(PACKAGED_ROOT)])}."
        ) from None
    source, digest = _source_and_digest(env, name, set())
    match = _API_RE.search(source)
    path = template.filename or name
    if not match:
        raise NomadTemplateError(
            f"{path}:1: the template does not declare the template API version it targets. "
            f"Add this first line: {{# metaflow-nomad-template-api: {TEMPLATE_API_VERSION} #}}"
        )
    if match.group(1) != TEMPLATE_API_VERSION:
        line = source[: match.start()].count("\n") + 1
        raise NomadTemplateError(
            f"{path}:{line}: the template targets template API {match.group(1)!r}, but this "
            f"metaflow-nomad provides {TEMPLATE_API_VERSION!r}. Port the template to "
            f"{TEMPLATE_API_VERSION} (see nomad_templates/README.md) or pin a matching "
            "metaflow-nomad version."
        )
    _check_blocks(env, path, source)
    return LoadedTemplate(
        name=name, path=path, api_version=match.group(1), sha256=digest, template=template
    )


def _check_blocks(env: jinja2.Environment, path: str, source: str) -> None:
    """Jinja silently drops a child block its parents lack; for us that is a typo."""
    ast = env.parse(source)
    extends = ast.find(jinja_nodes.Extends)
    if extends is None or not isinstance(extends.template, jinja_nodes.Const):
        return
    available = _blocks_of(env, extends.template.value)
    for block in ast.find_all(jinja_nodes.Block):
        if block.name not in available:
            raise NomadTemplateError(
                f"{path}:{block.lineno}: block {block.name!r} does not exist in "
                f"{extends.template.value!r}, so it would be ignored. Blocks you can "
                f"replace: {', '.join(sorted(available))}."
            )


def _blocks_of(env: jinja2.Environment, name: str) -> set:
    source, _, _ = env.loader.get_source(env, name)
    ast = env.parse(source)
    blocks = {b.name for b in ast.find_all(jinja_nodes.Block)}
    extends = ast.find(jinja_nodes.Extends)
    if extends is not None and isinstance(extends.template, jinja_nodes.Const):
        blocks |= _blocks_of(env, extends.template.value)
    return blocks


def _source_and_digest(env: jinja2.Environment, name: str, seen: set) -> tuple[str, str]:
    """The template's own source, and a hash over it and every template it pulls in."""
    source, _, _ = env.loader.get_source(env, name)
    hasher = hashlib.sha256(source.encode())
    seen.add(name)
    for ref in sorted(r for r in jinja_meta.find_referenced_templates(env.parse(source)) if r):
        if ref not in seen:
            hasher.update(_source_and_digest(env, ref, seen)[1].encode())
    return source, hasher.hexdigest()


def render_template(loaded: LoadedTemplate, context: Mapping[str, Any]) -> str:
    """Render; a missing variable or bad value names the template file and line."""
    try:
        return loaded.template.render(context)
    except (jinja2.TemplateError, TypeError, ValueError) as exc:
        where = _template_frame(sys.exc_info()[2]) or loaded.path
        raise NomadTemplateError(
            f"{where}: {exc}. See nomad_templates/README.md for the variables a template may use."
        ) from None


def _template_frame(tb) -> str | None:
    """The innermost traceback frame that belongs to a template (Jinja rewrites them)."""
    where = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where
