"""Build what a Nomad task runs: the bootstrap script and its environment.

This is the only place that knows how Metaflow bootstraps a remote task (code
package download, mflog capture, save_logs); the result is a plain
``TaskLaunch`` that the template stage consumes.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from metaflow.metaflow_config_funcs import config_values
from metaflow.mflog import BASH_SAVE_LOGS, export_mflog_env_vars

from metaflow_nomad.config import WORKLOAD_ENV
from metaflow_nomad.model import (
    CLAIMED_ELSEWHERE,
    EXIT_FILE_ENV,
    LOGS_IN_PLACE_ENV,
    TRIGGERS_ENV,
    JobIdentity,
    TaskLaunch,
    TaskLogs,
    claim_refusal,
)
from metaflow_nomad.render.code_package import code_package_setup
from metaflow_nomad.render.environment_setup import step_shell
from metaflow_nomad.render.shared_filesystem import card_root_link_commands, shared_filesystem_env

LOGS_DIR = "$PWD/.logs"
STDOUT_PATH = LOGS_DIR + "/mflog_stdout"
STDERR_PATH = LOGS_DIR + "/mflog_stderr"
# One process captures the step's output into mflog files and uploads them
# (metaflow_nomad/task/capture.py, log_capture.py), in place of Metaflow's
# tee/sidecar/save_logs set.
CAPTURE = "python -m metaflow_nomad.task.capture"

# Metaflow settings a remote task needs to find the datastore and services.  They
# are forwarded only when set in the launcher.  Credentials are never in this list:
# the metadata service's headers (METAFLOW_SERVICE_HEADERS, or the x-api-key Metaflow
# makes of METAFLOW_SERVICE_AUTH_KEY) reach tasks from a Nomad Variable instead
# (template feature service_auth, docs/metadata-service.md).
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
    "DEFAULT_SECRETS_BACKEND_TYPE",
    "OTEL_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "SKIP_INSTALL_DEPENDENCIES",
)
# A deployed run's namespace (``production:<token>``), set in its runner's environment.
# Not a credential: Metaflow derives a deployment's first token from its name alone,
# tags every run of the deployment with it, and Argo Workflows sets it in every step's
# container; here it is also in the runner job's Meta.
PRODUCTION_TOKEN_ENV = "METAFLOW_PRODUCTION_TOKEN"


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
    env.update(forwarded_metaflow_config(launcher_environ))
    env["METAFLOW_DEFAULT_DATASTORE"] = datastore_type
    if datastore_type == "local":
        env.update(shared_filesystem_env(datastore_root, mc.DATASTORE_SYSROOT_LOCAL))
    env.update(extra)
    env.update(user_env)
    return env


def forwarded_metaflow_config(launcher_environ: Mapping[str, str]) -> dict[str, str]:
    """The launcher's Metaflow settings a remote process needs (datastore, metadata,
    services, conda and debug switches); never credentials.

    A remote process reaches the metadata service where the cluster does: at
    ``METAFLOW_SERVICE_INTERNAL_URL`` when it is set (as ``@kubernetes`` pods do).  A
    deployed run's production token (``launcher_environ`` is then the runner's) goes to
    every task, so that the tasks, their cards and their client calls see the run in its
    namespace, as Argo Workflows' steps do; so do the events that started it, from which
    each task builds ``current.trigger``.
    """
    from metaflow import metaflow_config as mc

    env: dict[str, str] = {}
    for name in _FORWARDED_CONFIG:
        value = getattr(mc, name, None)
        if value not in (None, ""):
            env["METAFLOW_" + name] = value if isinstance(value, str) else json.dumps(value)
        elif launcher_environ.get("METAFLOW_" + name):
            env["METAFLOW_" + name] = launcher_environ["METAFLOW_" + name]
    if env.get("METAFLOW_SERVICE_INTERNAL_URL"):
        env["METAFLOW_SERVICE_URL"] = env["METAFLOW_SERVICE_INTERNAL_URL"]
    for name in (PRODUCTION_TOKEN_ENV, TRIGGERS_ENV):
        if launcher_environ.get(name):
            env[name] = launcher_environ[name]
    for key, value in config_values():
        if key.startswith(("METAFLOW_CONDA_", "METAFLOW_DEBUG_")):
            env[key] = value
    return env


@dataclass(frozen=True)
class TaskScript:
    """What one task's bootstrap script is made of: the options of ``build_task_launch``.

    ``task_setup`` runs in the task's directory once the package is in place and
    before the step; ``after_step`` once the step (and every process it started)
    has ended, whatever its outcome.  With the local datastore, ``logs`` names the
    task's log files in it: every line is written there directly, so nothing is
    uploaded and no Metaflow interpreter starts for the logs.
    """

    identity: JobIdentity
    step_cli: str
    code_package: Mapping[str, str]
    datastore_type: str
    datastore_root: str | None
    env: Mapping[str, str] = field(default_factory=dict)
    task_setup: Sequence[str] = ()
    after_step: Sequence[str] = ()
    logs: TaskLogs | None = None


def build_task_launch(environment, task: TaskScript) -> TaskLaunch:
    """The bash script that bootstraps and runs one Metaflow task, with mflog capture
    (``environment`` is Metaflow's, which knows the step's own bootstrap commands)."""
    identity, logs = task.identity, task.logs
    datastore_type, datastore_root = task.datastore_type, task.datastore_root
    task_setup = task.task_setup
    in_place = logs is not None and datastore_type == "local"
    stdout_path, stderr_path = (
        (shlex.quote(logs.stdout_url), shlex.quote(logs.stderr_url))
        if in_place
        else (STDOUT_PATH, STDERR_PATH)
    )
    mflog_expr = export_mflog_env_vars(
        flow_name=identity.flow_name,
        run_id=identity.run_id,
        step_name=identity.step_name,
        task_id=identity.task_id,
        retry_count=identity.attempt,
        datastore_type=datastore_type,
        datastore_root=datastore_root if datastore_type == "local" else None,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )
    logs_dir = shlex.quote(os.path.dirname(logs.stdout_url)) if in_place else LOGS_DIR
    if in_place:
        mflog_expr += f" {LOGS_IN_PLACE_ENV}=1"
        if logs.exit_file:
            mflog_expr += f" {EXIT_FILE_ENV}={shlex.quote(logs.exit_file)}"
    claim, claim_option = [], ""
    if logs is not None and logs.claim_url:
        if in_place:
            claim = [claim_in_bash(logs.claim_url)]
        else:
            claim_option = f" --claim {shlex.quote(logs.claim_url)}"
    if datastore_type == "local":
        task_setup = [*card_root_link_commands(datastore_root), *task_setup]
    setup = code_package_setup(environment, task.code_package, datastore_type, task_setup)
    # Uploaded by the capture process as soon as it starts.
    init_cmds = [*setup.commands, *claim, "mflog 'Task is starting.'"]
    step_command = shlex.quote(
        step_shell(environment, identity.step_name, datastore_type, task.step_cli)
    )
    step_expr = f"{CAPTURE}{claim_option} bash -c {step_command}"
    init_expr = f"mkdir -p {logs_dir} && {mflog_expr} && {' && '.join(init_cmds)}"
    script = (
        STOP_SIGNAL_TRAPS + '${METAFLOW_INIT_SCRIPT:+eval "${METAFLOW_INIT_SCRIPT}"}\n'
        f"{setup.definitions}"
        f"{init_expr}\n"
        f"c=$?\n{forward_stop_signals(step_expr, task.after_step)}\n"
        # The capture process saves the logs of a step that ran; the bootstrap's own
        # lines still need saving when the step never started.
         + ("" if in_place else f'[ -n "$child" ] || {BASH_SAVE_LOGS}\n') + "exit $c\n"
    )
    return TaskLaunch(script=script, env=dict(task.env))


def claim_in_bash(path: str) -> str:
    """Claim the attempt for this allocation before anything of it is written
    (``task.attempt_claim``): ``set -C`` makes the create exclusive.  Another
    allocation's claim ends the task with ``CLAIMED_ELSEWHERE``."""
    file = shlex.quote(path)
    message = shlex.quote(claim_refusal(path.replace("%", "%%"), "%s") + "\n")
    return (
        f'{{ (set -C; printf %s "$NOMAD_ALLOC_ID" > {file}) 2>/dev/null'
        f' || [ "$(cat {file})" = "$NOMAD_ALLOC_ID" ]'
        f' || {{ printf {message} "$(cat {file})" >&2; (exit {CLAIMED_ELSEWHERE}); }}; }}'
    )


STOP_SIGNAL_TRAPS = 'stop=\nchild=\nfor s in INT TERM HUP; do trap "stop=$s" $s; done\n'


def forward_stop_signals(step_expr: str, after_step: Sequence[str] = ()) -> str:
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
