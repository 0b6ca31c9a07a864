"""runtime.usage: Nomad's allocation stats in, one summary, line and metadata out.

The stats below are what Nomad 1.6.1 answered on this project's agents (docs/usage.md).
"""

from __future__ import annotations

import threading

import pytest

from metaflow_nomad.runtime.usage import (
    NO_SAMPLE,
    Requested,
    UsageSampler,
    UsageSummary,
    sample_from_stats,
    sample_times,
    summarize,
)

MB = 1024 * 1024


def raw_exec_stats(rss_mb: float, percent: float) -> dict:
    return {
        "ResourceUsage": {
            "CpuStats": {
                "Measured": ["System Mode", "User Mode", "Percent"],
                "Percent": percent,
                "ThrottledPeriods": 0,
                "ThrottledTime": 0,
                "TotalTicks": percent * 24.4,
            },
            "MemoryStats": {
                "Measured": ["RSS", "Swap"],
                "RSS": int(rss_mb * MB),
                "MaxUsage": 0,
                "Usage": 0,
            },
        }
    }


def docker_stats(rss_mb: float, usage_mb: float, percent: float, throttled_ns: int) -> dict:
    return {
        "ResourceUsage": {
            "CpuStats": {
                "Measured": ["Throttled Periods", "Throttled Time", "Percent"],
                "Percent": percent,
                "ThrottledPeriods": 3,
                "ThrottledTime": throttled_ns,
            },
            "MemoryStats": {
                "Measured": ["RSS", "Cache", "Swap", "Usage", "Max Usage"],
                "RSS": int(rss_mb * MB),
                "Usage": int(usage_mb * MB),
                "MaxUsage": int(usage_mb * MB),
            },
        }
    }


def test_a_raw_exec_sample_is_its_rss_and_percent():
    sample = sample_from_stats(raw_exec_stats(363, 96.4))
    assert sample.memory_bytes == 363 * MB
    assert sample.cpu_percent == pytest.approx(96.4)
    assert "RSS" in sample.measured and "Throttled Time" not in sample.measured


def test_a_docker_sample_is_its_rss_not_the_page_cache():
    sample = sample_from_stats(docker_stats(rss_mb=302, usage_mb=420, percent=50, throttled_ns=0))
    assert sample.memory_bytes == 302 * MB


def test_usage_without_rss_falls_back_to_the_cgroup_usage():
    stats = docker_stats(rss_mb=0, usage_mb=250, percent=10, throttled_ns=0)
    stats["ResourceUsage"]["MemoryStats"]["Measured"] = ["Usage", "Max Usage"]
    assert sample_from_stats(stats).memory_bytes == 250 * MB


@pytest.mark.parametrize(
    "stats",
    [
        None,
        {},
        # Nomad's answer before its first collection of the task: nothing measured.
        {"ResourceUsage": {"CpuStats": {"Measured": None}, "MemoryStats": {"Measured": None}}},
        raw_exec_stats(0, 0),
    ],
)
def test_an_answer_with_nothing_measured_is_no_sample(stats):
    assert sample_from_stats(stats) is None


def test_the_summary_is_peak_memory_mean_and_peak_cpu_and_the_newest_throttling():
    samples = [
        sample_from_stats(docker_stats(100, 120, 20, 1_000_000_000)),
        sample_from_stats(docker_stats(612, 700, 90, 2_500_000_000)),
        sample_from_stats(docker_stats(300, 320, 10, 3_000_000_000)),
    ]
    summary = summarize(samples)
    assert summary.samples == 3
    assert summary.peak_memory_mb == pytest.approx(612)
    assert summary.cpu_mean_cores == pytest.approx(0.4)
    assert summary.cpu_peak_cores == pytest.approx(0.9)
    assert summary.throttled_s == pytest.approx(3.0)
    requested = Requested(memory_mb=8000, cpu_cores=2)
    assert summary.line(requested) == (
        "Task used peak 612 MB of 8,000 MB, CPU 0.4 mean, 0.9 peak of 2 cores, "
        "throttled 3.0 s (3 Nomad samples)."
    )
    assert summary.metadata(requested) == {
        "nomad-usage-samples": "3",
        "nomad-usage-requested-memory-mb": "8000",
        "nomad-usage-requested-cpu-cores": "2",
        "nomad-usage-peak-memory-mb": "612",
        "nomad-usage-cpu-mean-cores": "0.40",
        "nomad-usage-cpu-peak-cores": "0.90",
        "nomad-usage-cpu-throttled-s": "3.0",
        "nomad-usage-cgroup-peak-mb": "700",
        "nomad-usage-measured": "RSS,Cache,Swap,Usage,Max Usage,Throttled Periods,"
        "Throttled Time,Percent",
    }


def test_raw_exec_has_no_throttling_figure_rather_than_a_zero():
    summary = summarize([sample_from_stats(raw_exec_stats(400, 50))])
    assert summary.throttled_s is None
    assert "nomad-usage-cpu-throttled-s" not in summary.metadata(Requested(1000, 1))
    assert summary.line(Requested(1000, 1)) == (
        "Task used peak 400 MB of 1,000 MB, CPU 0.5 mean, 0.5 peak of 1 core (1 Nomad sample)."
    )


def test_a_task_without_a_sample_says_so_and_records_no_number():
    summary = summarize([])
    assert summary == UsageSummary(samples=0)
    assert summary.line(Requested(1000, 1)) == f"Task {NO_SAMPLE}: no usage recorded."
    assert summary.metadata(Requested(1000, 1)) == {
        "nomad-usage-samples": "0",
        "nomad-usage-requested-memory-mb": "1000",
        "nomad-usage-requested-cpu-cores": "1",
    }


def test_a_60_s_task_is_sampled_at_most_three_times():
    assert sample_times(100.0, 160.0) == [105.0, 135.0]
    assert sample_times(100.0, 165.0) == [105.0, 135.0, 165.0]
    assert sample_times(100.0, 104.9) == []


def test_the_sampler_keeps_measured_samples_and_survives_failed_requests():
    answers = [None, RuntimeError("node gone"), raw_exec_stats(200, 50), raw_exec_stats(250, 150)]
    enough = threading.Event()

    def fetch():
        answer = answers.pop(0) if answers else raw_exec_stats(10, 0)
        if not answers:
            enough.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    sampler = UsageSampler(fetch, first_s=0.0, every_s=0.001).start()
    assert enough.wait(timeout=10)
    summary = sampler.stop()
    assert summary.samples >= 2
    assert summary.peak_memory_mb == pytest.approx(250)
    assert summary.cpu_peak_cores == pytest.approx(1.5)


def test_the_sampler_waits_for_its_first_sample_on_its_clock():
    now = [1000.0]
    waits: list[float] = []
    sampler = UsageSampler(lambda: raw_exec_stats(100, 10), clock=lambda: now[0], first_s=3.0)

    class Stop:
        def wait(self, timeout):
            waits.append(timeout)
            now[0] += timeout
            return len(waits) > 2

        def set(self):
            pass

        def is_set(self):
            return False

    sampler._stop = Stop()
    sampler.run()
    assert waits == [3.0, 30.0, 30.0]
    assert sampler.stop().samples == 2
