"""Profiles Metaflow step processes with pyinstrument when BENCH_PROFILE_DIR is set.

Python imports ``sitecustomize`` before anything else, so the profile covers
the whole process, imports included, without touching the library or Metaflow.
Only ``flow.py ... step`` processes (trampolines and tasks) are profiled.
"""

import atexit
import os
import sys

_DIR = os.environ.get("BENCH_PROFILE_DIR")
if _DIR and "step" in sys.argv:
    from pyinstrument import Profiler

    _index = sys.argv.index("step")
    _kind = "trampoline" if sys.argv[_index - 1] == "nomad" else "task"
    _where = "nomad" if os.environ.get("NOMAD_ALLOC_ID") else "local"
    _profiler = Profiler(interval=0.001)
    _profiler.start()

    def _write() -> None:
        _profiler.stop()
        name = f"{_kind}-{_where}-{sys.argv[_index + 1]}-{os.getpid()}.txt"
        with open(os.path.join(_DIR, name), "w") as handle:
            handle.write(_profiler.output_text(unicode=True, color=False, show_all=False))

    atexit.register(_write)
