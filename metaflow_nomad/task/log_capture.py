"""What the one log-capture process of a Nomad task does (its entry: ``task.capture``).

It takes the step, started with its stdout and stderr on pipes, writes every
line to the task's mflog files (the format ``flow.py logs`` reads) and echoes
it to Nomad's own log.  With the local datastore the files are the datastore's
own log files, and this process never imports Metaflow; with a remote
datastore it uploads them while the step runs and once more when it ends.

It replaces what Metaflow's remote bootstrap (as ``@kubernetes`` uses it) runs
per task: two ``mflog.tee`` processes, the ``save_logs_periodically`` sidecar
and one ``save_logs`` interpreter per upload, each importing Metaflow.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

from metaflow_nomad.mflog_lines import decorate, poll_delay
from metaflow_nomad.model import EXIT_FILE_ENV, LOGS_IN_PLACE_ENV
from metaflow_nomad.task.lease_watch import LeaseWatch

TASK_LOG_SOURCE = b"task"  # metaflow.mflog.TASK_LOG_SOURCE


class LogFile:
    """An mflog file that reader threads append to and the uploader reads."""

    def __init__(self, path: str, echo):
        self.path = path
        self._echo = echo
        self._lock = threading.Lock()
        self.changed = threading.Event()

    def copy_lines(self, pipe) -> None:
        """Until EOF: each line from ``pipe`` to the file (decorated) and to ``echo``."""
        for line in iter(pipe.readline, b""):
            self.append(line)

    def append(self, line: bytes) -> None:
        """One line (ending in a newline) to the file and to ``echo``."""
        with self._lock, open(self.path, "ab", buffering=0) as out:
            out.write(decorate(TASK_LOG_SOURCE, line))
        self._echo.write(line)
        self._echo.flush()
        self.changed.set()

    def read(self) -> bytes:
        with self._lock:
            try:
                with open(self.path, "rb") as handle:
                    return handle.read()
            except FileNotFoundError:
                return b""


class Uploader:
    """Saves both mflog files to the task's datastore, as ``save_logs`` would."""

    def __init__(self, files: dict[str, LogFile]):
        self._files = files
        self._task_datastore = None

    def upload(self) -> None:
        try:
            data = {stream: log.read() for stream, log in self._files.items()}
            self._datastore().save_logs("task", data)
        except Exception as exc:
            sys.stderr.write(f"[metaflow-nomad] could not save the task's logs: {exc!r}\n")

    def _datastore(self):
        if self._task_datastore is None:
            from metaflow.datastore import FlowDataStore
            from metaflow.plugins import DATASTORES

            flow_name, run_id, step_name, task_id = os.environ["MF_PATHSPEC"].split("/")
            kind = os.environ["MF_DATASTORE"]
            storage = next(d for d in DATASTORES if kind == d.TYPE)
            root = os.environ.get("MF_DATASTORE_ROOT") or storage.get_datastore_root_from_config(
                lambda *args, **kwargs: None
            )
            flow_datastore = FlowDataStore(flow_name, None, storage_impl=storage, ds_root=root)
            self._task_datastore = flow_datastore.get_task_datastore(
                run_id, step_name, task_id, int(os.environ["MF_ATTEMPT"]), mode="w"
            )
        return self._task_datastore


def capture(step: subprocess.Popen) -> int:
    """Capture the started step's output until it ends; return its exit status."""
    files = {
        "stdout": LogFile(os.environ["MFLOG_STDOUT"], sys.stdout.buffer),
        "stderr": LogFile(os.environ["MFLOG_STDERR"], sys.stderr.buffer),
    }
    readers = [
        threading.Thread(target=files["stdout"].copy_lines, args=(step.stdout,), daemon=True),
        threading.Thread(target=files["stderr"].copy_lines, args=(step.stderr,), daemon=True),
    ]
    for reader in readers:
        reader.start()
    watch = LeaseWatch.from_environment(lambda silent: _stop_orphan(step, files["stderr"], silent))
    if watch is not None:
        watch.start()
    if os.environ.get(LOGS_IN_PLACE_ENV):
        step.wait()
        for reader in readers:
            reader.join()
    else:
        _upload_until_done(step, files, readers)
    if watch is not None:
        watch.stop()
    code = step.returncode
    status = 128 - code if code < 0 else code
    if os.environ.get(EXIT_FILE_ENV):
        record_exit_status(os.environ[EXIT_FILE_ENV], status)
    return status


def _stop_orphan(step: subprocess.Popen, stderr: LogFile, silent_s: float) -> None:
    """The run's launcher is gone: end the step as Nomad's kill would (its process
    group, of which this process ignores the signal), so that it never records
    success for a run nobody finishes."""
    stderr.append(
        f"[metaflow-nomad] The run's launcher has not renewed the run's lease for "
        f"{silent_s:.0f} s (METAFLOW_NOMAD_LEASE_TIMEOUT): it is gone. Stopping the step "
        "so that nothing runs without it; resume the run to finish it.\n".encode()
    )
    group = os.getpgid(step.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        step.wait(10)
        return
    for pid in _group_members(group):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _group_members(group: int) -> list[int]:
    """Every process of ``group`` but this one (Linux's /proc; none elsewhere)."""
    members = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:
            members.append(int(entry))
    return members


def record_exit_status(path: str, status: int) -> None:
    """Tell the launcher the step has ended, every line written: Nomad's client
    reports an allocation's end to the servers in batches (about 200 ms later)."""
    partial = f"{path}.partial"
    with open(partial, "w") as handle:
        handle.write(str(status))
    os.replace(partial, path)


def _upload_until_done(step: subprocess.Popen, files: dict[str, LogFile], readers) -> None:
    uploader = Uploader(files)
    started = time.monotonic()
    uploader.upload()  # the bootstrap's own lines ("Task is starting.") go up at once
    while step.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            step.wait(poll_delay(time.monotonic() - started))
        if any(log.changed.is_set() for log in files.values()):
            for log in files.values():
                log.changed.clear()
            uploader.upload()
    for reader in readers:
        reader.join()
    uploader.upload()
