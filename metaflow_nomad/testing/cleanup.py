"""Leave no trace: processes and mounts that a stopped agent or engine left behind.

Nomad executors and raw_exec tasks may leave the agent's process group (setsid),
and a daemon running as root leaves mounts (task secrets, alloc dirs, nsfs)
under its directory.  Both are found by that directory, so that nothing else on
the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path


def kill_processes_under(directory: str | os.PathLike) -> int:
    """SIGKILL every process whose command line names ``directory`` or whose working
    directory is inside it; return how many."""
    root = str(Path(directory).resolve())
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if root in cmdline or cwd == root or cwd.startswith(root + "/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


def mounts_under(prefix: str) -> list[str]:
    """Mount points in /proc/mounts that start with ``prefix``."""
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    # /proc/mounts writes spaces and such as octal escapes (\\040).
    points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), p) for p in points]
    return [p for p in points if p.startswith(prefix)]


def unmount_under(directory: str | os.PathLike) -> None:
    """Lazily unmount everything mounted below ``directory``, deepest first."""
    root = str(Path(directory).resolve()) + "/"
    for point in sorted(mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
