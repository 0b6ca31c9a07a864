"""Which template line produced each rendered line: the error path's source map.

When the cluster's parser rejects a rendered job, the user needs the template
file and line to fix, not the line of a file they never wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from metaflow_nomad.render.templates import LoadedTemplate


def render_origins(loaded: LoadedTemplate, context: Mapping[str, Any]) -> list[str]:
    """For each rendered line, the ``file:line`` of the template that produced it.

    Jinja keeps no source map, so this re-renders while watching which template
    each output chunk comes from and roughly where (Jinja's compiled debug info),
    then pins literal text to the exact source line that contains it.  It is only
    used on the error path.
    """
    env = loaded.template.environment
    debug_by_file: dict[str, list[tuple[int, int]]] = {}
    sources: dict[str, list[str]] = {}

    def approximate_line(frame) -> tuple[str, int]:
        filename = frame.f_code.co_filename
        if filename not in debug_by_file:
            template = next(
                (t for t in _templates_by_filename(env) if t.filename == filename), None
            )
            debug_by_file[filename] = sorted(
                (code, tpl) for tpl, code in (template.debug_info if template else [])
            )
        best = 1
        for code_line, tpl_line in debug_by_file[filename]:
            if code_line > frame.f_lineno:
                break
            best = tpl_line
        return filename, best

    def exact_line(filename: str, approx: int, text: str) -> int:
        """The source line holding this literal text, nearest at or after ``approx``."""
        if filename not in sources:
            try:
                sources[filename] = Path(filename).read_text().splitlines()
            except OSError:
                sources[filename] = []
        needle = text.strip()
        lines = sources[filename]
        hits = [n for n, line in enumerate(lines, 1) if line.strip().startswith(needle)]
        hits = hits or [n for n, line in enumerate(lines, 1) if needle in line]
        if not needle or not hits:
            return approx
        return min(hits, key=lambda n: (n < approx, abs(n - approx)))

    ctx = loaded.template.new_context(dict(context))
    generator = loaded.template.root_render_func(ctx)
    origins: list[str] = []
    current: str | None = None  # origin of the first non-blank text on the current line
    for chunk in generator:
        innermost = generator
        while getattr(innermost, "gi_yieldfrom", None) is not None:
            innermost = innermost.gi_yieldfrom
        frame = innermost.gi_frame
        filename, approx = approximate_line(frame) if frame else (loaded.path, 1)
        for index, piece in enumerate(chunk.split("\n")):
            if index > 0:
                origins.append(current or f"{filename}:{approx}")
                current = None
            if current is None and piece.strip():
                current = f"{filename}:{exact_line(filename, approx, piece)}"
    origins.append(current or loaded.path)
    return origins


def _templates_by_filename(env: jinja2.Environment):
    cache = env.cache or {}
    return [t for t in cache.values() if t is not None]
