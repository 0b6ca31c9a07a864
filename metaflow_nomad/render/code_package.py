"""How a task gets its code package: fetched once per node, cached, copied in.

Shared by the step's bootstrap (``render.bootstrap``) and the ``doctor --probe``
job (``render.probe_job``), so the probe tests exactly the path a step takes.  When
the package cannot be had, the task ends at once with one line on its stderr that
starts with ``metaflow-nomad: `` and says from where and what to check; the
launcher puts that line in its verdict.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from metaflow.mflog import BASH_FLUSH_LOGS, BASH_MFLOG

from metaflow_nomad.config import STEP_SPECS
from metaflow_nomad.render import s3_fetch

MARKER = s3_fetch.MARKER
# Where a node keeps its unpacked, compiled packages: the task reads the
# `package_cache` setting under its config name.
PACKAGE_CACHE_ENV = STEP_SPECS["package_cache"].metaflow_name
S3_FETCH_FUNCTION = "mfnomad_fetch_s3"
_S3_FETCH_DELIMITER = "MFNOMAD_S3_FETCH"


@dataclass(frozen=True)
class PackageSetup:
    """Bash function definitions (multi-line, for the top of the script) and the
    commands that leave the task in its own copy of the unpacked package."""

    definitions: str
    commands: list[str]


def code_package_setup(
    environment,
    code_package: Mapping[str, str],
    datastore_type: str,
    task_setup: Sequence[str] = (),
) -> PackageSetup:
    """The commands that fetch (or reuse), unpack and enter the code package, then
    ``task_setup``, which runs in the task's own copy so nothing it makes is shared."""
    definitions = ""
    if datastore_type == "local":
        fetch_cmds = _shared_filesystem_package_commands(code_package)
    else:
        fetch_cmds = environment.get_package_commands(
            code_package["url"], datastore_type, code_package["metadata"]
        )
        if datastore_type == "s3":
            fetch_cmds, replaced = _with_s3_fetch(fetch_cmds, code_package["url"])
            if replaced:
                definitions = _s3_fetch_definition()
    # An environment bootstrap (uv, pypi, conda) changes the package's own files.
    own_copy = getattr(environment, "TYPE", "local") != "local"
    commands = [*_cached_package_commands(fetch_cmds, code_package, own_copy), *task_setup]
    return PackageSetup(definitions, commands)


def unquote_once(expr: str) -> str:
    """Metaflow's bootstrap commands carry one level of double-quote escaping.

    They are written for ``@kubernetes``, which runs ``shlex.split('bash -c "<cmd>"')``
    (so ``\\"`` in BASH_MFLOG and the boto3 download one-liner become ``"``).  This
    script is run as is, so the same level is removed here.
    """
    return shlex.split(f'bash -c "{expr}"')[2]


def _with_s3_fetch(fetch_cmds: list[str], url: str) -> tuple[list[str], bool]:
    """Metaflow's commands with its six-tries download loop replaced by ``s3_fetch``.

    The loop is recognised by its shape; if a Metaflow version writes it another
    way, its commands are kept as they are (slower to fail, still correct).
    """
    loop = next((i for i, c in enumerate(fetch_cmds) if c.startswith("i=0; while")), None)
    if loop is None or loop + 1 >= len(fetch_cmds) or "-gt 5" not in fetch_cmds[loop + 1]:
        return fetch_cmds, False
    fetch = (
        "mflog 'Downloading code package...' && "
        f"{S3_FETCH_FUNCTION} {shlex.quote(url)} job.tar && mflog 'Code package downloaded.'"
    )
    return [*fetch_cmds[:loop], fetch, *fetch_cmds[loop + 2 :]], True


def _s3_fetch_definition() -> str:
    """A bash function that runs ``s3_fetch`` from its source, given in a here-document."""
    source = Path(s3_fetch.__file__).read_text()
    return (
        f"{S3_FETCH_FUNCTION}(){{ python - \"$@\" <<'{_S3_FETCH_DELIMITER}'\n"
        f"{source}{_S3_FETCH_DELIMITER}\n}}\n"
    )


def _post_extract_exports(code_package: Mapping[str, str]) -> list[str]:
    from metaflow.package import MetaflowPackage

    exports = []
    for key, value in MetaflowPackage.get_post_extract_env_vars(
        code_package["metadata"], dest_dir="$(pwd)"
    ).items():
        if key.endswith(":"):
            exports.append(f"export {key[:-1]}={value}")
        else:
            exports.append(f"export {key}={value}:${{{key}}}")
    return exports


def _cached_package_commands(
    fetch_cmds: list[str], code_package: Mapping[str, str], own_copy: bool
) -> list[str]:
    """Fetch and unpack the code package once per node, with compiled bytecode.

    Every task otherwise downloads and unpacks its own copy, and each of its
    Python processes compiles Metaflow from source again: most of a short task's
    time.  ``fetch_cmds`` (which leave the package in ``./metaflow``) run in a
    temporary directory next to the cache entry, which is then renamed into place
    atomically, so concurrent tasks on a node never see a half-made entry.  Each
    task gets its own copy of the user's files (``cp -a`` keeps the timestamps the
    bytecode was compiled against), so a step that writes into its flow directory
    cannot change another task's; Metaflow's library (``.mf_code``: 14 MB and 900
    files, whose copy was 0.55 s of a 1.2 s no-op task) is linked from the cache
    entry, one link per top-level package.  The cache directory is
    ``$METAFLOW_NOMAD_PACKAGE_CACHE`` (the ``package_cache`` setting; default
    ``$TMPDIR`` or ``/tmp``).
    """
    fetch = unquote_once(
        " && ".join(c for c in fetch_cmds if c not in ("mflog 'Task is starting.'", "flush_mflogs"))
    )
    entry = f'"${{{PACKAGE_CACHE_ENV}:-${{TMPDIR:-/tmp}}/metaflow-nomad-packages}}"/' + shlex.quote(
        code_package["sha"]
    )
    failed = shlex.quote(
        f"{MARKER}the task could not set up the code package from {code_package['url']} "
        "(see its output above)."
    )
    return [
        unquote_once(BASH_MFLOG),
        unquote_once(BASH_FLUSH_LOGS),
        f"pkg={entry}",
        # Owner-only: on a shared node, one user's code must not be readable by another.
        'if [ ! -d "$pkg" ]; then (umask 077 && mkdir -p "$(dirname "$pkg")") && '
        'tmp=$(mktemp -d "$pkg.tmp.XXXXXX") && '
        f'{{ (cd "$tmp" && {fetch}) && rm -f "$tmp/metaflow/job.tar" && '
        '{ python -m compileall -q -j 0 "$tmp/metaflow" >/dev/null 2>&1; '
        'mv -T "$tmp/metaflow" "$pkg" 2>/dev/null; }; rm -rf "$tmp"; }; fi',
        # A package that cannot be had ends the task at once, without saving logs:
        # that would need the same datastore, and could wait on it for a long time.
        f'{{ [ -d "$pkg" ] || {{ echo {failed} >&2; exit 1; }}; }}',
        # The task's own copy of the user's files; Metaflow's library (.mf_code: most
        # of the package and of its bytecode) is shared from the cache, read-only.
        'mkdir metaflow && (shopt -s dotglob nullglob; for f in "$pkg"/*; do '
        f'if [ "${{f##*/}}" = .mf_code ]; then {_LINK_OWN_MF_CODE if own_copy else _LINK_MF_CODE}; '
        'else cp -a "$f" metaflow/; fi; done)',
        "cd metaflow",
        *_post_extract_exports(code_package),
    ]


# .mf_code as one link to the cache entry: the fast path (a directory of links made
# the docker suite's foreach with @retry 39 s -> 90 s).
_LINK_MF_CODE = 'ln -s "$f" metaflow/.mf_code'
# With an environment bootstrap, .mf_code is a directory of links instead: Metaflow
# finds the package's other files (.mf_meta) at .mf_code/.., which must then be the
# task's own copy (uv's bootstrap moves uv.lock and pyproject.toml out of it).
_LINK_OWN_MF_CODE = (
    'mkdir metaflow/.mf_code && for m in "$f"/*; do ln -s "$m" metaflow/.mf_code/; done'
)


def _shared_filesystem_package_commands(code_package: Mapping[str, str]) -> list[str]:
    """Local datastore on a shared filesystem: extract the package from its path."""
    from metaflow.package import MetaflowPackage

    path = shlex.quote(code_package["url"])
    # No quote characters: this command goes through ``unquote_once``.
    missing = shlex.quote(
        f"{MARKER}the code package could not be fetched from {code_package['url']}: it is "
        "not on this node. METAFLOW_NOMAD_SHARED_FILESYSTEM=1 says that tasks see the "
        "local datastore at the same path as the launcher, and on this node they do not. "
        "Share that path with the client nodes, or use --datastore=s3."
    )
    return [
        "mflog 'Setting up task environment.'",
        f"{{ [ -f {path} ] || {{ echo {missing} >&2; exit 1; }}; }}",
        "mkdir metaflow",
        "cd metaflow",
        *MetaflowPackage.get_extract_commands(code_package["metadata"], path, dest_dir="."),
    ]
