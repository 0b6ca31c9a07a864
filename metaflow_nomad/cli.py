"""``metaflow-nomad``: user commands that work without running a flow."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from .render_cli import render_main

    return render_main(argv if argv is not None else sys.argv[1:])
