"""Build what a Nomad task runs: the bootstrap script and its environment.

This is the only place that knows how Metaflow bootstraps a remote task (code
package download, mflog capture, save_logs); the result is a plain
``TaskLaunch`` that the template stage consumes.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping

from metaflow.metaflow_config_funcs import config_values
from metaflow.mflog import (
    BASH_FLUSH_LOGS,
    BASH_MFLOG,
    BASH_SAVE_LOGS,
    export_mflog_env_vars,
)

from metaflow_nomad.config import WORKLOAD_ENV
from metaflow_nomad.model import JobIdentity, TaskLaunch

LOGS_DIR = "$PWD/.logs"
STDOUT_PATH = LOGS_DIR + "/mflog_stdout"
STDERR_PATH = LOGS_DIR + "/mflog_stderr"
INPUT_PATHS_CHUNK = 30 * 1024
# One process captures the step's output into mflog files and uploads them
# (metaflow_nomad/task/capture.py), in place of Metaflow's tee/sidecar/save_logs set.
CAPTURE = "python -m metaflow_nomad.task.capture"

# Metaflow settings a remote task needs to find the datastore and services.  They
# are forwarded only when set in the launcher.  Credentials are never in this list.
_FORWARDED_CONFIG = (
    "DEFAULT_METADATA",
    "DATASTORE_SYSROOT_S3",
    "DATASTORE_SYSROOT_AZURE",
    "DATASTORE_SYSROOT_GS",
    "DATATOOLS_S3ROOT",
    "CARD_S3ROOT",
    "S3_ENDPOINT_URL",
    "S3_SERVER_SIDE_ENCRYPTION",
    "S3_VERIFY_CERTIFICATE",
    "SERVICE_URL",
    "SERVICE_INTERNAL_URL",
    "SERVICE_HEADERS",
    "DEFAULT_SECRETS_BACKEND_TYPE",
    "OTEL_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "SKIP_INSTALL_DEPENDENCIES",
)


def split_input_paths(input_paths: str | None) -> tuple[str | None, dict[str, str]]:
    """Large joins have huge --input-paths; ship them in env chunks, like @kubernetes."""
    if not input_paths:
        return input_paths, {}
    chunks = {
        "METAFLOW_INPUT_PATHS_%d" % (i // INPUT_PATHS_CHUNK): input_paths[i : i + INPUT_PATHS_CHUNK]
        for i in range(0, len(input_paths), INPUT_PATHS_CHUNK)
    }
    return "".join("${%s}" % name for name in chunks), chunks


def task_environment(
    identity: JobIdentity,
    code_package: Mapping[str, str],
    datastore_type: str,
    user_env: Mapping[str, str],
    extra: Mapping[str, str],
    launcher_environ: Mapping[str, str],
) -> dict[str, str]:
    """The env every Metaflow task on Nomad gets; user @environment vars win."""
    env: dict[str, str] = {
        "METAFLOW_CODE_URL": code_package["url"],
        "METAFLOW_CODE_SHA": code_package["sha"],
        "METAFLOW_CODE_METADATA": code_package["metadata"],
        "METAFLOW_CODE_DS": datastore_type,
        "METAFLOW_USER": identity.user,
        "METAFLOW_RUN_ID": identity.run_id,
        "METAFLOW_RUNTIME_ENVIRONMENT": "nomad",
        WORKLOAD_ENV: "1",
    }
    env.update(forwarded_metaflow_config(launcher_environ))
    env["METAFLOW_DEFAULT_DATASTORE"] = datastore_type
    env.update(extra)
    env.update(user_env)
    return env


def forwarded_metaflow_config(launcher_environ: Mapping[str, str]) -> dict[str, str]:
    """The launcher's Metaflow settings a remote process needs (datastore, metadata,
    services, conda and debug switches); never credentials."""
    from metaflow import metaflow_config as mc

    env: dict[str, str] = {}
    for name in _FORWARDED_CONFIG:
        value = getattr(mc, name, None)
        if value not in (None, ""):
            env["METAFLOW_" + name] = value if isinstance(value, str) else json.dumps(value)
        elif launcher_environ.get("METAFLOW_" + name):
            env["METAFLOW_" + name] = launcher_environ["METAFLOW_" + name]
    for key, value in config_values():
        if key.startswith(("METAFLOW_CONDA_", "METAFLOW_DEBUG_")):
            env[key] = value
    return env


def build_task_launch(
    environment,
    identity: JobIdentity,
    step_cli: str,
    code_package: Mapping[str, str],
    datastore_type: str,
    datastore_root: str | None,
    env: Mapping[str, str],
) -> TaskLaunch:
    """The bash script that bootstraps and runs one Metaflow task, with mflog capture."""
    mflog_expr = export_mflog_env_vars(
        flow_name=identity.flow_name,
        run_id=identity.run_id,
        step_name=identity.step_name,
        task_id=identity.task_id,
        retry_count=identity.attempt,
        datastore_type=datastore_type,
        datastore_root=datastore_root if datastore_type == "local" else None,
        stdout_path=STDOUT_PATH,
        stderr_path=STDERR_PATH,
    )
    init_cmds = [
        _unquote_once(BASH_MFLOG),
        _unquote_once(BASH_FLUSH_LOGS),
        *package_setup_commands(environment, code_package, datastore_type),
        # Uploaded by the capture process as soon as it starts.
        "mflog 'Task is starting.'",
    ]
    step = _unquote_once(
        " && ".join([*environment.bootstrap_commands(identity.step_name, datastore_type), step_cli])
    )
    step_expr = f"{CAPTURE} bash -c {shlex.quote(_unquote_once(BASH_MFLOG) + '; ' + step)}"
    init_expr = f"mkdir -p {LOGS_DIR} && {mflog_expr} && {' && '.join(init_cmds)}"
    script = (
        STOP_SIGNAL_TRAPS + '${METAFLOW_INIT_SCRIPT:+eval "${METAFLOW_INIT_SCRIPT}"}\n'
        f"{init_expr}\n"
        f"c=$?\n{forward_stop_signals(step_expr)}\n"
        # The capture process saves the logs of a step that ran; the bootstrap's own
        # lines still need saving when the step never started.
        f'[ -n "$child" ] || {BASH_SAVE_LOGS}\nexit $c\n'
    )
    return TaskLaunch(script=script, env=dict(env))


def _unquote_once(expr: str) -> str:
    """Metaflow's bootstrap commands carry one level of double-quote escaping.

    They are written for ``@kubernetes``, which runs ``shlex.split('bash -c "<cmd>"')``
    (so ``\\"`` in BASH_MFLOG and the boto3 download one-liner become ``"``).  This
    script is run as is, so the same level is removed here.
    """
    return shlex.split(f'bash -c "{expr}"')[2]


STOP_SIGNAL_TRAPS = 'stop=\nchild=\nfor s in INT TERM HUP; do trap "stop=$s" $s; done\n'


def forward_stop_signals(step_expr: str) -> str:
    """Run the step so that Nomad's kill signal reaches it at once.

    Nomad signals only the task's main process (this bash), and bash defers a
    signal until its foreground child exits, so a stopped job would keep running
    for the whole kill_timeout.  A signal that arrives during the bootstrap is
    remembered and skips the step; afterwards the step runs as a background job in
    its own process group (``set -m``) and the traps forward the signal to that
    group.  The logs are saved either way.
    """
    return (
        'if [ -n "$stop" ]; then c=130\n'
        "elif [ $c -eq 0 ]; then\n"
        f"  set -m\n  ( {step_expr} ) &\n  child=$!\n  set +m\n"
        '  for s in INT TERM HUP; do trap "kill -$s -- -$child 2>/dev/null" $s; done\n'
        '  if [ -n "$stop" ]; then kill -"$stop" -- -"$child" 2>/dev/null; fi\n'
        '  wait "$child"; c=$?\n'
        '  while kill -0 "$child" 2>/dev/null; do wait "$child"; c=$?; done\n'
        "fi"
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
            exports.append(f"export {key}={value}:$(printenv {key})")
    return exports


def package_setup_commands(
    environment, code_package: Mapping[str, str], datastore_type: str
) -> list[str]:
    """Commands that leave the shell in an unpacked copy of the code package.

    They call the shell functions ``mflog`` and ``flush_mflogs``, which the
    caller defines (Metaflow's for a task; plain ones for the deployed runner).
    """
    if datastore_type == "local":
        fetch_cmds = _shared_filesystem_package_commands(code_package)
    else:
        fetch_cmds = environment.get_package_commands(
            code_package["url"], datastore_type, code_package["metadata"]
        )
    return _cached_package_commands(fetch_cmds, code_package)


def _cached_package_commands(fetch_cmds: list[str], code_package: Mapping[str, str]) -> list[str]:
    """Fetch and unpack the code package once per node, with compiled bytecode.

    Every task otherwise downloads and unpacks its own copy, and each of its
    Python processes compiles Metaflow from source again: most of a short task's
    time.  ``fetch_cmds`` (which leave the package in ``./metaflow``) run in a
    temporary directory next to the cache entry, which is then renamed into place
    atomically, so concurrent tasks on a node never see a half-made entry.  Each
    task gets its own copy of the user's files (``cp -a`` keeps the timestamps the
    bytecode was compiled against), so a step that writes into its flow directory
    cannot change another task's; Metaflow's library (``.mf_code``: 14 MB and 900
    files, whose copy was 0.55 s of a 1.2 s no-op task) is a link to the cache
    entry.  The cache directory is ``$METAFLOW_NOMAD_PACKAGE_CACHE`` (default
    ``$TMPDIR`` or ``/tmp``).
    """
    fetch = _unquote_once(
        " && ".join(c for c in fetch_cmds if c not in ("mflog 'Task is starting.'", "flush_mflogs"))
    )
    entry = (
        '"${METAFLOW_NOMAD_PACKAGE_CACHE:-${TMPDIR:-/tmp}/metaflow-nomad-packages}"/'
        + shlex.quote(code_package["sha"])
    )
    return [
        f"pkg={entry}",
        # Owner-only: on a shared node, one user's code must not be readable by another.
        'if [ ! -d "$pkg" ]; then (umask 077 && mkdir -p "$(dirname "$pkg")") && '
        'tmp=$(mktemp -d "$pkg.tmp.XXXXXX") && '
        f'{{ (cd "$tmp" && {fetch}) && rm -f "$tmp/metaflow/job.tar" && '
        '{ python -m compileall -q -j 0 "$tmp/metaflow" >/dev/null 2>&1; '
        'mv -T "$tmp/metaflow" "$pkg" 2>/dev/null; }; rm -rf "$tmp"; }; fi',
        # As with Metaflow's own bootstrap, a package that cannot be fetched ends
        # the task at once (saving logs would need the same unreachable datastore).
        '{ [ -d "$pkg" ] || exit 1; }',
        # The task's own copy of the user's files; Metaflow's library (.mf_code: most
        # of the package and of its bytecode) is shared from the cache, read-only.
        'mkdir metaflow && (shopt -s dotglob nullglob; for f in "$pkg"/*; do '
        'if [ "${f##*/}" = .mf_code ]; then ln -s "$f" metaflow/.mf_code; '
        'else cp -a "$f" metaflow/; fi; done)',
        "cd metaflow",
        *_post_extract_exports(code_package),
    ]


def _shared_filesystem_package_commands(code_package: Mapping[str, str]) -> list[str]:
    """Local datastore on a shared filesystem: extract the package from its path."""
    from metaflow.package import MetaflowPackage

    return [
        "mflog 'Setting up task environment.'",
        "mkdir metaflow",
        "cd metaflow",
        "mkdir .metaflow",
        *MetaflowPackage.get_extract_commands(
            code_package["metadata"], shlex.quote(code_package["url"]), dest_dir="."
        ),
    ]
