"""What a task used, from Nomad's own measurements of its allocation.

While the task runs, the launcher asks the task's node for the allocation's
stats (``NomadClient.allocation_stats``) a few times a minute: once
``FIRST_SAMPLE_S`` after the task started, then every ``SAMPLE_EVERY_S``.  The
samples become one ``UsageSummary``: peak memory, mean and peak CPU and the CPU
throttling, against what the task asked for.  It is recorded as task metadata
and said in one line at the task's end.  A task that ended before the first
sample has no numbers, and the line says so.

What Nomad 1.6.1 measures depends on the driver (its ``Measured`` lists, see
docs/usage.md): both give RSS, docker adds the cgroup's usage (with the page
cache) and CPU throttling; raw_exec's RSS counts Nomad's executor too.  The peak
is the highest RSS a sample saw: a spike between two samples is not seen.

The sampling logic is pure (samples in, summary out); ``UsageSampler`` is the
thread around it, with an injectable clock and wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# The first sample once the task has run this long (Nomad's client collects
# every second; a task younger than this has rarely done its real work yet).
FIRST_SAMPLE_S = 5.0
# Then one sample per this many seconds (the tracker's blocking-query wait): at
# most 3 requests for a 60 s task.
SAMPLE_EVERY_S = 30.0
MB = 1024 * 1024
NO_SAMPLE = "ended before Nomad's first usage sample"
# Metadata field names (each one is also its type, as the other nomad-* fields).
PEAK_MEMORY = "nomad-usage-peak-memory-mb"
REQUESTED_MEMORY = "nomad-usage-requested-memory-mb"
CPU_MEAN = "nomad-usage-cpu-mean-cores"
CPU_PEAK = "nomad-usage-cpu-peak-cores"
REQUESTED_CPU = "nomad-usage-requested-cpu-cores"
THROTTLED = "nomad-usage-cpu-throttled-s"
CGROUP_PEAK = "nomad-usage-cgroup-peak-mb"
SAMPLES = "nomad-usage-samples"
MEASURED = "nomad-usage-measured"


@dataclass(frozen=True)
class UsageSample:
    """One answer of ``/v1/client/allocation/:id/stats``, reduced to what we use."""

    memory_bytes: int
    cpu_percent: float
    # docker: the cgroup's own high-water mark, page cache included (0: not measured).
    max_usage_bytes: int
    throttled_ns: int
    measured: tuple[str, ...]


@dataclass(frozen=True)
class Requested:
    """What the task asked for: memory in MB, CPU in cores (MHz / MHz per vCPU)."""

    memory_mb: int | None = None
    cpu_cores: float | None = None


@dataclass(frozen=True)
class UsageSummary:
    samples: int
    peak_memory_mb: float | None = None
    cpu_mean_cores: float | None = None
    cpu_peak_cores: float | None = None
    throttled_s: float | None = None
    cgroup_peak_mb: float | None = None
    measured: tuple[str, ...] = ()

    def line(self, requested: Requested) -> str:
        """``used peak 612 MB of 8,000 MB, CPU 0.4 of 2 cores`` (or why there is none)."""
        if not self.samples:
            return f"Task {NO_SAMPLE}: no usage recorded."
        memory = f"used peak {self.peak_memory_mb:,.0f} MB"
        if requested.memory_mb:
            memory += f" of {requested.memory_mb:,} MB"
        cpu = f"CPU {self.cpu_mean_cores:.1f} mean, {self.cpu_peak_cores:.1f} peak"
        if requested.cpu_cores:
            cpu += f" of {requested.cpu_cores:g} core{'' if requested.cpu_cores == 1 else 's'}"
        else:
            cpu += " cores"
        throttled = ""
        if self.throttled_s:
            throttled = f", throttled {self.throttled_s:.1f} s"
        plural = "s" if self.samples != 1 else ""
        return f"Task {memory}, {cpu}{throttled} ({self.samples} Nomad sample{plural})."

    def metadata(self, requested: Requested) -> dict[str, str]:
        """The task metadata fields (values are strings, as Metaflow stores them)."""
        fields = {SAMPLES: str(self.samples)}
        if requested.memory_mb:
            fields[REQUESTED_MEMORY] = str(requested.memory_mb)
        if requested.cpu_cores:
            fields[REQUESTED_CPU] = f"{requested.cpu_cores:g}"
        if not self.samples:
            return fields
        fields[PEAK_MEMORY] = f"{self.peak_memory_mb:.0f}"
        fields[CPU_MEAN] = f"{self.cpu_mean_cores:.2f}"
        fields[CPU_PEAK] = f"{self.cpu_peak_cores:.2f}"
        if self.throttled_s is not None:
            fields[THROTTLED] = f"{self.throttled_s:.1f}"
        if self.cgroup_peak_mb is not None:
            fields[CGROUP_PEAK] = f"{self.cgroup_peak_mb:.0f}"
        fields[MEASURED] = ",".join(self.measured)
        return fields


def sample_from_stats(stats: dict | None) -> UsageSample | None:
    """The sample in one stats answer; None if Nomad had measured nothing yet."""
    usage = (stats or {}).get("ResourceUsage") or {}
    memory = usage.get("MemoryStats") or {}
    cpu = usage.get("CpuStats") or {}
    memory_measured = tuple(memory.get("Measured") or ())
    measured = memory_measured + tuple(cpu.get("Measured") or ())
    if "RSS" in memory_measured:
        # The task's own memory.  Usage (docker) adds the page cache the kernel
        # can reclaim (the code package, logs), and on cgroup v2 MaxUsage is the
        # current usage, not a peak.
        memory_bytes = int(memory.get("RSS") or 0)
    else:
        memory_bytes = max(int(memory.get("MaxUsage") or 0), int(memory.get("Usage") or 0))
    if not measured or not memory_bytes:
        # Nomad answers with zeros before its first collection of a task.
        return None
    return UsageSample(
        memory_bytes=memory_bytes,
        cpu_percent=float(cpu.get("Percent") or 0.0),
        max_usage_bytes=int(memory.get("MaxUsage") or 0) if "Max Usage" in memory_measured else 0,
        throttled_ns=int(cpu.get("ThrottledTime") or 0),
        measured=measured,
    )


def summarize(samples: list[UsageSample]) -> UsageSummary:
    """Peak memory, mean and peak CPU (Nomad's Percent: 100 = one core) and the
    throttled time (cumulative, so the newest sample's) over ``samples``."""
    if not samples:
        return UsageSummary(samples=0)
    cores = [s.cpu_percent / 100 for s in samples]
    measured = samples[-1].measured
    return UsageSummary(
        samples=len(samples),
        peak_memory_mb=max(s.memory_bytes for s in samples) / MB,
        cpu_mean_cores=sum(cores) / len(cores),
        cpu_peak_cores=max(cores),
        throttled_s=samples[-1].throttled_ns / 1e9 if "Throttled Time" in measured else None,
        cgroup_peak_mb=max(s.max_usage_bytes for s in samples) / MB
        if "Max Usage" in measured
        else None,
        measured=tuple(dict.fromkeys(measured)),
    )


def requested_from_job(
    job: dict | None, task_name: str, memory_mb: int | None, mhz_per_vcpu: float | None
) -> Requested:
    """What the task asked for: from the registered job when the plan holds it,
    else the plan's memory alone."""
    cpu_cores = None
    for group in (job or {}).get("TaskGroups") or []:
        for task in group.get("Tasks") or []:
            if task.get("Name") != task_name:
                continue
            resources = task.get("Resources") or {}
            memory_mb = resources.get("MemoryMB") or memory_mb
            if resources.get("Cores"):
                cpu_cores = float(resources["Cores"])
            elif resources.get("CPU") and mhz_per_vcpu:
                cpu_cores = resources["CPU"] / mhz_per_vcpu
    return Requested(memory_mb=memory_mb, cpu_cores=cpu_cores)


def sample_times(started: float, until: float) -> list[float]:
    """When samples are due for a task that started at ``started``, up to ``until``."""
    times = []
    due = started + FIRST_SAMPLE_S
    while due <= until:
        times.append(due)
        due += SAMPLE_EVERY_S
    return times


class UsageSampler:
    """Samples one allocation from a thread until stopped; ``summary()`` after."""

    def __init__(
        self,
        fetch: Callable[[], dict | None],
        clock: Callable[[], float] = time.monotonic,
        first_s: float = FIRST_SAMPLE_S,
        every_s: float = SAMPLE_EVERY_S,
    ):
        self._fetch = fetch
        self._clock = clock
        self._first_s = first_s
        self._every_s = every_s
        self._stop = threading.Event()
        self._samples: list[UsageSample] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> UsageSampler:
        self._thread = threading.Thread(target=self.run, name="nomad-usage", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        due = self._clock() + self._first_s
        while not self._stop.wait(max(0.0, due - self._clock())):
            self.take()
            due += self._every_s

    def take(self) -> None:
        try:
            sample = sample_from_stats(self._fetch())
        except Exception:  # a missed sample is only a sample; never the task's verdict
            return
        if sample is not None and not self._stop.is_set():
            with self._lock:
                self._samples.append(sample)

    def stop(self) -> UsageSummary:
        self._stop.set()
        with self._lock:
            return summarize(list(self._samples))
