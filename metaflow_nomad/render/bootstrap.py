"""Build what a Nomad task runs: the bootstrap script and its environment.

This is the only place that knows how Metaflow bootstraps a remote task (code
package download, mflog capture, save_logs); the result is a plain
``TaskLaunch`` that the template stage consumes.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence

from metaflow.metaflow_config_funcs import config_values
from metaflow.mflog import (
    BASH_FLUSH_LOGS,
    BASH_MFLOG,
    BASH_SAVE_LOGS,
    export_mflog_env_vars,
)

from metaflow_nomad.config import WORKLOAD_ENV
from metaflow_nomad.model import JobIdentity, TaskLaunch
from metaflow_nomad.render.shared_filesystem import (
    card_root_link_commands,
    shared_filesystem_env,
    shared_filesystem_package_commands,
)

LOGS_DIR = "$PWD/.logs"
STDOUT_PATH = LOGS_DIR + "/mflog_stdout"
STDERR_PATH = LOGS_DIR + "/mflog_stderr"
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


def task_environment(
    identity: JobIdentity,
    code_package: Mapping[str, str],
    datastore_type: str,
    user_env: Mapping[str, str],
    extra: Mapping[str, str],
    launcher_environ: Mapping[str, str],
    datastore_root: str | None = None,
) -> dict[str, str]:
    """The env every Metaflow task on Nomad gets; user @environment vars win.

    With the local datastore (on a shared filesystem) the task's local metadata
    root is pinned to the launcher's, so the client API and cards in the step see
    the run's metadata and write nowhere else.  With a remote datastore it is not
    set: the task keeps local metadata in its own directory, as on @kubernetes.
    """
    from metaflow import metaflow_config as mc

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
    for name in _FORWARDED_CONFIG:
        value = getattr(mc, name, None)
        if value not in (None, ""):
            env["METAFLOW_" + name] = value if isinstance(value, str) else json.dumps(value)
        elif launcher_environ.get("METAFLOW_" + name):
            env["METAFLOW_" + name] = launcher_environ["METAFLOW_" + name]
    for key, value in config_values():
        if key.startswith(("METAFLOW_CONDA_", "METAFLOW_DEBUG_")):
            env[key] = value
    env["METAFLOW_DEFAULT_DATASTORE"] = datastore_type
    if datastore_type == "local":
        env.update(shared_filesystem_env(datastore_root, mc.DATASTORE_SYSROOT_LOCAL))
    env.update(extra)
    env.update(user_env)
    return env


def build_task_launch(
    environment,
    identity: JobIdentity,
    step_cli: str,
    code_package: Mapping[str, str],
    datastore_type: str,
    datastore_root: str | None,
    env: Mapping[str, str],
    task_setup: Sequence[str] = (),
    after_step: Sequence[str] = (),
) -> TaskLaunch:
    """The bash script that bootstraps and runs one Metaflow task, with mflog capture.

    ``task_setup`` runs in the task's directory once the package is in place and
    before the step; ``after_step`` once the step (and every process it started)
    has ended, whatever its outcome.
    """
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
    if datastore_type == "local":
        fetch_cmds = shared_filesystem_package_commands(code_package)
        task_setup = [*card_root_link_commands(), *task_setup]
    else:
        fetch_cmds = environment.get_package_commands(
            code_package["url"], datastore_type, code_package["metadata"]
        )
    init_cmds = _cached_package_commands(fetch_cmds, code_package, task_setup)
    # Only Metaflow's bootstrap commands carry the extra quoting level; the step
    # command line is already quoted for bash and must reach it untouched.
    bootstrap = [
        _unquote_once(cmd)
        for cmd in environment.bootstrap_commands(identity.step_name, datastore_type)
    ]
    step = " && ".join([*bootstrap, step_cli])
    step_expr = f"{CAPTURE} bash -c {shlex.quote(_unquote_once(BASH_MFLOG) + '; ' + step)}"
    init_expr = f"mkdir -p {LOGS_DIR} && {mflog_expr} && {' && '.join(init_cmds)}"
    script = (
        'stop=\nchild=\nfor s in INT TERM HUP; do trap "stop=$s" $s; done\n'
        '${METAFLOW_INIT_SCRIPT:+eval "${METAFLOW_INIT_SCRIPT}"}\n'
        f"{init_expr}\n"
        f"c=$?\n{_forward_stop_signals(step_expr, after_step)}\n"
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


def _forward_stop_signals(step_expr: str, after_step: Sequence[str]) -> str:
    """Run the step so that Nomad's kill signal reaches it at once.

    Nomad signals only the task's main process (this bash), and bash defers a
    signal until its foreground child exits, so a stopped job would keep running
    for the whole kill_timeout.  A signal that arrives during the bootstrap is
    remembered and skips the step; afterwards the step runs as a background job in
    its own process group (``set -m``) and the traps forward the signal to that
    group.  ``after_step`` runs once the step has ended; the logs are saved
    either way.
    """
    return (
        'if [ -n "$stop" ]; then c=130\n'
        "elif [ $c -eq 0 ]; then\n"
        f"  set -m\n  ( {step_expr} ) &\n  child=$!\n  set +m\n"
        '  for s in INT TERM HUP; do trap "kill -$s -- -$child 2>/dev/null" $s; done\n'
        '  if [ -n "$stop" ]; then kill -"$stop" -- -"$child" 2>/dev/null; fi\n'
        '  wait "$child"; c=$?\n'
        '  while kill -0 "$child" 2>/dev/null; do wait "$child"; c=$?; done\n'
        + "".join(f"  {cmd}\n" for cmd in after_step)
        + "fi"
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


def _cached_package_commands(
    fetch_cmds: list[str], code_package: Mapping[str, str], task_setup: list[str]
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
    files, whose copy was 0.55 s of a 1.2 s no-op task) is a link to the cache
    entry.  The cache directory is ``$METAFLOW_NOMAD_PACKAGE_CACHE`` (default
    ``$TMPDIR`` or ``/tmp``).
    ``task_setup`` runs in the task's own copy, so nothing it makes is shared.
    """
    fetch = _unquote_once(
        " && ".join(c for c in fetch_cmds if c not in ("mflog 'Task is starting.'", "flush_mflogs"))
    )
    entry = (
        '"${METAFLOW_NOMAD_PACKAGE_CACHE:-${TMPDIR:-/tmp}/metaflow-nomad-packages}"/'
        + shlex.quote(code_package["sha"])
    )
    return [
        _unquote_once(BASH_MFLOG),
        _unquote_once(BASH_FLUSH_LOGS),
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
        *task_setup,
        # Uploaded by the capture process as soon as it starts.
        "mflog 'Task is starting.'",
    ]
