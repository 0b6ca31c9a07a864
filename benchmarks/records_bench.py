"""What the launcher pays to record a task's metadata in the metadata service.

At each task's end the launcher records its usage and UI link
(``runtime.task_metadata``).  With ``--metadata=service`` it used to load
Metaflow's ``ServiceMetadataProvider`` for that (Metaflow's imports, a session);
it now sends one POST with the standard library.  Both are timed here in a fresh
interpreter per record, the way a launcher pays it, against a loopback HTTP
server that answers every request at once (the service's own work is the same
for both), interleaved so that drift hits both arms alike:

* wall time of the whole process (interpreter start, imports, the record);
* its peak memory (the kernel's VmHWM, read by the process just before it exits).

Standalone: ``python benchmarks/records_bench.py [--reps N]``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time

# One record, in a fresh interpreter; prints the process's peak RSS in kB.
RECORD = """
import sys
from metaflow_nomad.model import JobIdentity
from metaflow_nomad.runtime import task_metadata
from metaflow_nomad.runtime.plan import AttemptPlan

who = JobIdentity("BenchFlow", "17", "train", "4", 0, "bench")
fields = {"nomad-usage-samples": "2", "nomad-alloc-url": "http://127.0.0.1/ui/allocations/x"}
said = []
if sys.argv[1] == "metaflow":
    task_metadata._register_with_metaflow("service", who, fields)
else:
    plan = AttemptPlan(who, metadata_type="service", metadata_service_url=sys.argv[2])
    task_metadata.record_task_metadata(plan, fields, said.append)
assert not said, said
status = open("/proc/self/status").read()
print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
"""


class _Answering(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def _one(arm: str, url: str) -> tuple[float, int]:
    env = {
        **os.environ,
        "METAFLOW_SERVICE_URL": url,
        "METAFLOW_DEFAULT_METADATA": "service",
        "USER": os.environ.get("USER", "bench"),
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RECORD, arm, url], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{arm}: {proc.stderr[-2000:]}")
    return elapsed, int(proc.stdout.split()[-1])


def measure(reps: int) -> dict[str, float]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    times: dict[str, list[float]] = {"metaflow": [], "stdlib": []}
    peaks: dict[str, list[int]] = {"metaflow": [], "stdlib": []}
    try:
        for _ in range(reps):
            for arm in ("metaflow", "stdlib"):
                elapsed, peak_kb = _one(arm, url)
                times[arm].append(elapsed)
                peaks[arm].append(peak_kb)
    finally:
        server.shutdown()
        server.server_close()
    before, after = statistics.median(times["metaflow"]), statistics.median(times["stdlib"])
    return {
        "record_s_metaflow_provider": round(before, 3),
        "record_s_stdlib_post": round(after, 3),
        "record_time_ratio_stdlib_vs_provider": round(after / before, 2),
        "record_peak_mb_metaflow_provider": round(statistics.median(peaks["metaflow"]) / 1024, 1),
        "record_peak_mb_stdlib_post": round(statistics.median(peaks["stdlib"]) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    print(json.dumps(measure(parser.parse_args().reps), indent=2))


if __name__ == "__main__":
    main()
