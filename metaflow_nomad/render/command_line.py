"""The task's ``step`` command line, quoted for the bash that runs it.

Metaflow's runtime starts each step with an argv list, never through a shell,
so a tag, a ``--with`` string or a namespace may hold any character.  On Nomad
the command is a line of the task's bash script: every value is quoted here,
and only our own ``${VAR}`` references (``ShellExpr``) are left to bash.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from typing import Any

INPUT_PATHS_CHUNK = 30 * 1024


class ShellExpr(str):
    """A command-line value that bash must expand (our own ``${VAR}`` references)."""


def split_input_paths(input_paths: str | None) -> tuple[str | None, dict[str, str]]:
    """Large joins have huge --input-paths; ship them in env chunks, like @kubernetes."""
    if not input_paths:
        return input_paths, {}
    chunks = {
        "METAFLOW_INPUT_PATHS_%d" % (i // INPUT_PATHS_CHUNK): input_paths[i : i + INPUT_PATHS_CHUNK]
        for i in range(0, len(input_paths), INPUT_PATHS_CHUNK)
    }
    return ShellExpr("".join("${%s}" % name for name in chunks)), chunks


def shell_cli_options(params: Mapping[str, Any]) -> Iterable[str]:
    """Metaflow CLI options as shell words: Metaflow's option spelling, our quoting.

    ``metaflow.util.dict_to_cli_options`` leaves a value that starts with ``$``
    unquoted (a tag ``$HOME`` would be expanded by the task's bash) and is not
    meant for a shell; here every value is quoted except a ``ShellExpr``.
    """
    from metaflow.util import dict_to_cli_options, to_unicode

    for key, value in params.items():
        if value is None or value is False:
            continue
        if key in ("config", "config_value"):
            # Names only (--config-value NAME kv.NAME), in Metaflow's own form;
            # the runtime's CLIArgs holds them as (name, key) pairs.
            names = dict(value)
            yield from (shlex.quote(word) for word in dict_to_cli_options({key: names}))
            continue
        flag = "--" + ("with" if key == "decospecs" else key).replace("_", "-")
        for item in value if isinstance(value, (list, tuple, set)) else [value]:
            yield flag
            if isinstance(item, ShellExpr):
                yield f'"{item}"'
            elif not isinstance(item, bool):
                yield shlex.quote(to_unicode(item))


def step_command_line(
    executable: str,
    flow_file: str,
    top_level_params: Mapping[str, Any],
    step_name: str,
    step_options: Mapping[str, Any],
) -> str:
    """``<python> -u flow.py <top-level options> step <name> <step options>``."""
    return " ".join(
        [
            f"{executable} -u {shlex.quote(flow_file)}",
            *shell_cli_options(top_level_params),
            "step",
            shlex.quote(step_name),
            *shell_cli_options(step_options),
        ]
    )
