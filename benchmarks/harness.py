"""What the benchmarks share: flow runs, process sampling, Nomad read-backs, a counting proxy.

Timings come from clocks outside the code under test wherever possible: the
kernel's process start times (psutil), Nomad's own ``SubmitTime`` and task-event
times, and the wall clock around whole ``flow.py run`` subprocesses.  The
benchmark never routes timed runs through its proxy, so the proxy's latency
cannot leak into any timing; it is used only to count API requests.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

from metaflow_nomad.model import TASK_NAME
from metaflow_nomad.runtime.plan import LAUNCHER_MODULE
from metaflow_nomad.testing.local_agent import interpreter_path

FLOWS = Path(__file__).resolve().parent / "flows"
SAMPLE_INTERVAL_S = 0.1


# -- statistics -------------------------------------------------------------------


def summarize(values: list[float]) -> dict:
    """Median, p95 and range; p95 is nearest-rank so it is a value actually observed."""
    ordered = sorted(values)
    if not ordered:
        return {"median": None, "p95": None, "min": None, "max": None, "n": 0}
    rank = max(0, min(len(ordered) - 1, round(0.95 * len(ordered) + 0.5) - 1))
    return {
        "median": statistics.median(ordered),
        "p95": ordered[rank],
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


def print_table(result: dict) -> None:
    rows = [("metric", "median", "p95", "min..max", "n", "target", "verdict")]
    for name, m in result["metrics"].items():

        def fmt(value):
            return "-" if value is None else f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"

        verdict = "" if "pass" not in m else ("PASS" if m["pass"] else "MISS")
        rows.append(
            (
                name,
                fmt(m["median"]) + " " + m["unit"],
                fmt(m["p95"]),
                f"{fmt(m['min'])}..{fmt(m['max'])}",
                str(m["n"]),
                m.get("target", ""),
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print()
    for name, m in result["metrics"].items():
        if m["note"]:
            print(f"  {name}: {m['note']}")
    breakdown = result["details"].get("api_breakdown")
    if breakdown:
        print()
        print("API requests by endpoint (one task per duration):")
        for duration, counts in breakdown.items():
            parts = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
            print(f"  {duration}: {parts}")
    print(
        "\nMachine-noise caveat: timings come from one run on a shared machine "
        f"({result['machine']['cpus']} CPUs); compare ratios within a run, not across runs."
    )


# -- processes --------------------------------------------------------------------


@dataclass
class ProcessRecord:
    """One Metaflow child process of a run, as seen from outside."""

    pid: int
    kind: str  # "trampoline" (a @nomad task's launcher) or "task" (a local `step`)
    argv: list[str]
    created: float
    last_seen: float
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0

    def option(self, name: str) -> str | None:
        if name in self.argv:
            index = self.argv.index(name)
            return self.argv[index + 1] if index + 1 < len(self.argv) else None
        return None

    @property
    def job_id(self) -> str | None:
        """A launcher's job: its plan file is named after it."""
        plans = [arg for arg in self.argv if arg.endswith(".json")]
        return os.path.basename(plans[0])[: -len(".json")] if plans else None

    @property
    def step_name(self) -> str | None:
        if "step" not in self.argv:
            return None
        index = self.argv.index("step")
        return self.argv[index + 1] if index + 1 < len(self.argv) else None


def _kind(argv: list[str]) -> str | None:
    """A @nomad task's launcher (the figures keep its old name, trampoline), or a
    local task's ``step`` process."""
    if LAUNCHER_MODULE in argv:
        return "trampoline"
    return "task" if "step" in argv else None


def _start_time(pid: int) -> float:
    """A process's start on the time.time() clock, to the kernel's 10 ms tick.

    psutil's create_time() adds the boot time, which /proc/stat rounds to a whole
    second, so it can be a second off time.time(); measuring back from the boot
    clock now avoids that rounding.
    """
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)


def _peak_rss_mb(pid: int) -> float:
    """VmHWM is the kernel's own high-water mark, so sampling cannot miss a peak."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class ProcessSampler:
    """Follows a flow run's process tree: start times, peak RSS and CPU of its step processes."""

    def __init__(self, root_pid: int):
        self.root_pid = root_pid
        self.records: dict[int, ProcessRecord] = {}
        # The most the whole launcher tree (runtime, trampolines, local tasks) held at once.
        self.peak_tree_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                children = root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            now = time.time()
            for child in children:
                self._sample(child, now)
            self._sample_tree(root, children)
            self._stop.wait(SAMPLE_INTERVAL_S)

    def _sample_tree(self, root: psutil.Process, children: list[psutil.Process]) -> None:
        total = 0
        for process in (root, *children):
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        self.peak_tree_rss_mb = max(self.peak_tree_rss_mb, total / 2**20)

    def _sample(self, process: psutil.Process, now: float) -> None:
        try:
            record = self.records.get(process.pid)
            if record is None:
                argv = process.cmdline()
                kind = _kind(argv)
                if kind is None:
                    return
                record = ProcessRecord(process.pid, kind, argv, _start_time(process.pid), now)
                self.records[process.pid] = record
            if process.status() == psutil.STATUS_ZOMBIE:
                # It has exited; only its parent (Metaflow's runtime) has yet to reap it.
                return
            times = process.cpu_times()
            record.cpu_s = times.user + times.system
            record.peak_rss_mb = max(record.peak_rss_mb, _peak_rss_mb(process.pid))
            record.last_seen = now
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, OSError):
            return

    def of_kind(self, kind: str) -> list[ProcessRecord]:
        return [r for r in self.records.values() if r.kind == kind]


# -- flow runs --------------------------------------------------------------------


@dataclass
class FlowRun:
    seconds: float
    run_id: str
    output: str
    processes: list[ProcessRecord] = field(default_factory=list)


class FlowRunner:
    """Runs flows as a user would (``python flow.py run``) against the benchmark's agent."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir = workdir
        self.env = env

    def prepare(self, name: str, source: str) -> Path:
        directory = self.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "flow.py").write_text(source)
        return directory

    def start(
        self, directory: Path, top: list[str], extra: list[str], env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen, Path]:
        """``top`` goes before ``run`` (e.g. ``--with=nomad``), ``extra`` after it."""
        run_id_file = directory / f"run-id-{time.monotonic_ns()}"
        proc = subprocess.Popen(
            [
                *(sys.executable, "flow.py", "--no-pylint", *top, "run"),
                *("--run-id-file", str(run_id_file), *extra),
            ],
            cwd=directory,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return proc, run_id_file

    def run(
        self,
        directory: Path,
        top: list[str],
        extra: list[str],
        timeout: float,
        env: dict[str, str] | None = None,
    ) -> FlowRun:
        started = time.perf_counter()
        proc, run_id_file = self.start(directory, top, extra, env)
        with ProcessSampler(proc.pid) as sampler:
            output = finish(proc, timeout)
        seconds = time.perf_counter() - started
        processes = list(sampler.records.values())
        return FlowRun(seconds, read_run_id(run_id_file, output), output, processes)

    def run_with_tree(
        self, directory: Path, top: list[str], extra: list[str], timeout: float, env: dict
    ) -> tuple[FlowRun, float]:
        """``run``, also returning the peak RSS of the whole process tree, in MB."""
        started = time.perf_counter()
        proc, run_id_file = self.start(directory, top, extra, env)
        with ProcessSampler(proc.pid) as sampler:
            output = finish(proc, timeout)
        seconds = time.perf_counter() - started
        run = FlowRun(
            seconds, read_run_id(run_id_file, output), output, list(sampler.records.values())
        )
        return run, sampler.peak_tree_rss_mb


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate(timeout=30)
        raise RuntimeError(f"flow run timed out after {timeout:g}s:\n{output[-4000:]}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"flow run failed ({proc.returncode}):\n{output[-4000:]}")
    return output


def read_run_id(run_id_file: Path, output: str) -> str:
    if run_id_file.exists():
        return run_id_file.read_text().strip()
    raise RuntimeError(f"the run wrote no run id:\n{output[-2000:]}")


# -- Nomad read-backs -------------------------------------------------------------


def nomad_get(address: str, path: str, params: dict | None = None):
    query = "?" + urllib.parse.urlencode(params) if params else ""
    with urllib.request.urlopen(f"{address}/v1/{path}{query}", timeout=30) as response:
        return json.load(response)


@dataclass
class JobTimes:
    """One task's life in Nomad's own clock (seconds since the epoch)."""

    job_id: str
    step_name: str
    task_id: str
    submitted: float
    started: float | None
    terminated: float | None


def job_times(address: str, job_prefix: str) -> list[JobTimes]:
    """SubmitTime of each job of a run, and its task's Started/Terminated event times."""
    result = []
    for stub in nomad_get(address, "jobs", {"prefix": job_prefix, "meta": "true"}):
        meta = stub.get("Meta") or {}
        allocs = nomad_get(address, f"job/{urllib.parse.quote(stub['ID'], safe='')}/allocations")
        started = terminated = None
        for alloc in allocs:
            events = ((alloc.get("TaskStates") or {}).get(TASK_NAME) or {}).get("Events") or []
            for event in events:
                if event.get("Type") == "Started" and started is None:
                    started = event["Time"] / 1e9
                if event.get("Type") == "Terminated":
                    terminated = event["Time"] / 1e9
        result.append(
            JobTimes(
                stub["ID"],
                meta.get("metaflow.step_name", ""),
                meta.get("metaflow.task_id", ""),
                stub["SubmitTime"] / 1e9,
                started,
                terminated,
            )
        )
    return result


# -- counting proxy ---------------------------------------------------------------

_JOB_IN_PATH = re.compile(r"/v1/job/([^/?]+)")
_JOB_IN_HCL = re.compile(r'job\s+"([^"]+)"')
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer"}


def _job_of(path: str, body: bytes) -> str | None:
    """Which job a request is about: from its path, or from the job it parses or registers."""
    match = _JOB_IN_PATH.search(path)
    if match:
        return urllib.parse.unquote(match.group(1))
    if not body:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if isinstance(document.get("Job"), dict):
        return document["Job"].get("ID")
    match = _JOB_IN_HCL.search(document.get("JobHCL") or "")
    return match.group(1) if match else None


def _endpoint(method: str, path: str) -> str:
    """A request's shape without IDs, for the per-endpoint breakdown."""
    route = urllib.parse.urlsplit(path)
    shape = re.sub(r"/v1/job/[^/]+", "/v1/job/<id>", route.path)
    shape = re.sub(r"/v1/(allocation|client/fs/logs)/[^/]+", r"/v1/\1/<id>", shape)
    blocking = "index=" in route.query and not re.search(r"(^|&)index=0(&|$)", route.query)
    return f"{method} {shape}{' (blocking)' if blocking else ''}"


class _QuietServer(ThreadingHTTPServer):
    """Keep-alive connections of launchers that have exited end in a reset while the
    handler waits for their next request: nothing was lost, so nothing to print."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class CountingProxy:
    """A loopback HTTP proxy in front of the agent that counts requests per job and endpoint.

    Counting at the wire is independent of the client library's own bookkeeping,
    so retries, error paths and requests made outside ``NomadClient`` all count.
    """

    def __init__(self, upstream: str):
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.by_job: dict[str, Counter] = defaultdict(Counter)
        self.unattributed = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy._count(self.command, self.path, body)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP_BY_HOP | {"content-length"}:
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    # A launcher that finished while its blocking query was open.
                    self.close_connection = True
                finally:
                    upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _count(self, method: str, path: str, body: bytes) -> None:
        job = _job_of(path, body)
        with self._lock:
            target = self.by_job[job] if job else self.unattributed
            target[_endpoint(method, path)] += 1

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def env_for_agent(address: str, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "METAFLOW_NOMAD_ADDRESS": address,
            "METAFLOW_NOMAD_DRIVER": "raw_exec",
            "METAFLOW_NOMAD_SHARED_FILESYSTEM": "1",
            "METAFLOW_HOME": str(home),
            "USER": os.environ.get("USER") or "bench",
            "PATH": interpreter_path(),
        }
    )
    return env
