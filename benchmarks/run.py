"""The metaflow-nomad benchmark suite: ``make bench`` (full) or ``make bench-quick`` (CI).

It starts its own local Nomad agent (raw_exec, plus the docker driver on a private
engine where one can start: ``--no-docker`` to skip it), runs every benchmark several
times, and prints one table whose ratios are all taken against a baseline
measured in the same run, because absolute timings on a shared 2-core machine
move from minute to minute.  See docs/scaling.md for how the figures are read.

What is timed where (so each figure can be checked):

* step overhead: wall time of ``python flow.py run`` of a two-step no-op flow
  with ``--with nomad`` (both steps on Nomad) against the same flow run locally,
  interleaved local/Nomad so drift hits both arms alike, and the same flow on
  docker tasks in the same repetition (``docker_*`` figures, and ``docker_cached_*``
  with the node's package cache mounted into the containers);
* submit to start: Nomad's own ``SubmitTime`` of the job and the ``Started``
  task event (both from Nomad's clock); the trampoline's start is the kernel's
  process start time (psutil), on the same machine clock;
* fan-out: a foreach of N one-second tasks, ``@nomad`` on the foreach body only;
* render: in-process rates, plus a fresh interpreter for what one trampoline pays;
* API efficiency: requests counted at the wire by a loopback proxy between the
  trampolines and the agent (only these runs go through the proxy);
* memory: the kernel's VmHWM of every trampoline process;
* the S3 attempt claim: what ``capture --claim`` adds to a task's start, against
  the bench's own moto S3 (``claim_bench.py``, which also runs standalone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import claim_bench
from harness import (
    FLOWS,
    CountingProxy,
    FlowRun,
    FlowRunner,
    env_for_agent,
    finish,
    job_times,
    print_table,
    read_run_id,
    summarize,
)
from render_bench import fixture, rate

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.model import run_job_prefix
from metaflow_nomad.render.code_package import PACKAGE_CACHE_ENV
from metaflow_nomad.render.context import template_context
from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.jobspec import job_template, render_job, step_request
from metaflow_nomad.render.templates import STEP_TEMPLATE, render_template
from metaflow_nomad.testing.docker_engine import start_engine_or_explain
from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent, interpreter_path
from metaflow_nomad.testing.s3_server import moto_s3

# Issue 14's targets (docs/scaling.md); the stretch goals are 1.5x and 1.4x.
TARGETS = {
    "step_overhead_ratio": ("<=", 2.0),
    "register_to_start_s": ("<=", 0.5),
    "task_on_nomad_s": ("<=", 0.35),
    "task_end_to_trampoline_exit_s": ("<=", 0.05),
    "fanout_ratio": ("<=", 2.5),
    "render_per_s": (">=", 2000),
    "api_requests_60s_task": ("<=", 15),
    "trampoline_peak_rss_mb": ("<=", 25),
}
NOMAD_MARKER = "    # <nomad>\n"
DOCKER_ENV = {"METAFLOW_NOMAD_DRIVER": "docker", "METAFLOW_NOMAD_NETWORK_MODE": "host"}
# Small enough that --max-workers tasks fit on one 2-core node at once: Nomad
# reserves what a task asks for (1 vCPU and 4 GB by default), local runs do not.
FANOUT_DECORATOR = "    @nomad(cpu=100, memory=256)\n"


class Suite:
    """Holds the agent, the flow runner and every figure measured so far."""

    def __init__(self, agent: LocalAgent, workdir: Path, quick: bool, docker: bool = False):
        self.agent = agent
        self.workdir = workdir
        self.quick = quick
        # With an engine, step overhead is also measured with the docker driver.
        self.docker = docker
        self.env = env_for_agent(agent.address, workdir / "mfhome")
        # The docker arms: as configured by default, and with the node's package
        # cache mounted into the containers (the `package_cache` setting).
        self.docker_arms = {
            "docker": DOCKER_ENV,
            "docker_cached": {
                **DOCKER_ENV,
                PACKAGE_CACHE_ENV: str(workdir / "node-package-cache"),
            },
        }
        self.runner = FlowRunner(workdir, self.env)
        self.metrics: dict[str, dict] = {}
        self.details: dict[str, object] = {}
        self.trampolines: list = []
        self.timeout = 600

    def metric(self, name: str, values: list[float], unit: str, note: str = "") -> None:
        entry = summarize(values)
        entry.update(unit=unit, note=note)
        if name in TARGETS:
            op, bound = TARGETS[name]
            entry["target"] = f"{op} {bound:g}"
            median = entry["median"]
            entry["pass"] = median is not None and (
                median <= bound if op == "<=" else median >= bound
            )
        self.metrics[name] = entry

    def jobs_of(self, flow: str, run: FlowRun) -> list:
        return job_times(self.agent.address, run_job_prefix(flow, run.run_id))

    # -- step overhead and submit-to-start ----------------------------------------

    def step_overhead(self, reps: int) -> None:
        directory = self.runner.prepare("noop", (FLOWS / "noop_flow.py").read_text())
        local, nomad, ratios = [], [], []
        local_tasks, local_task_cpu = [], []
        phases: dict[str, list[float]] = {
            "trampoline_to_submit_s": [],
            "register_to_start_s": [],
            "trampoline_to_start_s": [],
            "task_on_nomad_s": [],
            "task_end_to_trampoline_exit_s": [],
            "trampoline_lifetime_s": [],
            "trampoline_cpu_s": [],
        }
        docker_ratios: dict[str, list[float]] = {arm: [] for arm in self.docker_arms}
        docker_phases: dict[str, dict[str, list[float]]] = {
            arm: {"register_to_start_s": [], "task_on_nomad_s": []} for arm in self.docker_arms
        }
        for _ in range(reps):
            base = self.runner.run(directory, [], [], self.timeout)
            run = self.runner.run(directory, ["--with=nomad"], [], self.timeout)
            local.append(base.seconds)
            nomad.append(run.seconds)
            ratios.append(run.seconds / base.seconds)
            for arm, arm_env in self.docker_arms.items() if self.docker else ():
                docker = self.runner.run(directory, ["--with=nomad"], [], self.timeout, arm_env)
                docker_ratios[arm].append(docker.seconds / base.seconds)
                for name, values in self._task_phases("NoopFlow", docker).items():
                    if name in docker_phases[arm]:
                        docker_phases[arm][name].extend(values)
            for task in (p for p in base.processes if p.kind == "task"):
                local_tasks.append(task.last_seen - task.created)
                local_task_cpu.append(task.cpu_s)
            for name, values in self._task_phases("NoopFlow", run).items():
                phases[name].extend(values)
        steps = 2
        self.metric("local_run_s", local, "s", "2-step no-op flow, local")
        self.metric("nomad_run_s", nomad, "s", "same flow, --with nomad (both steps)")
        self.metric("step_overhead_ratio", ratios, "x", "per-repetition nomad/local wall time")
        self.metric(
            "step_overhead_s_per_step",
            [(n - b) / steps for n, b in zip(nomad, local)],
            "s",
            "(nomad - local) / 2 steps",
        )
        self.metric("local_task_process_s", local_tasks, "s", "a local task process, start to exit")
        self.metric("local_task_cpu_s", local_task_cpu, "s", "CPU of a local task process")
        notes = {
            "trampoline_to_submit_s": "launcher start -> SubmitTime (after planning)",
            "register_to_start_s": "Nomad SubmitTime -> task Started event",
            "trampoline_to_start_s": "trampoline start -> task Started event",
            "task_on_nomad_s": "Started -> Terminated (bootstrap + Metaflow task process)",
            "task_end_to_trampoline_exit_s": "Terminated -> trampoline gone (+-0.1 s sampling)",
            "trampoline_lifetime_s": "trampoline start -> exit (+-0.1 s sampling)",
            "trampoline_cpu_s": "CPU of one trampoline process",
        }
        for name, values in phases.items():
            self.metric(name, values, "s", notes[name])
        arm_notes = {"docker": "docker driver", "docker_cached": "docker, package_cache set"}
        for arm in self.docker_arms if self.docker else ():
            self.metric(
                f"{arm}_step_overhead_ratio",
                docker_ratios[arm],
                "x",
                f"same flow on docker tasks (python:3.11, host network) / local, "
                f"same repetition ({arm_notes[arm]})",
            )
            for name, values in docker_phases[arm].items():
                self.metric(f"{arm}_{name}", values, "s", f"{notes[name]}, {arm_notes[arm]}")

    def _task_phases(self, flow: str, run: FlowRun) -> dict[str, list[float]]:
        """Per task: where the time goes, joining kernel process times to Nomad's clock."""
        trampolines = {p.job_id: p for p in run.processes if p.kind == "trampoline"}
        self.trampolines.extend(trampolines.values())
        out: dict[str, list[float]] = {
            k: []
            for k in (
                "trampoline_to_submit_s",
                "register_to_start_s",
                "trampoline_to_start_s",
                "task_on_nomad_s",
                "task_end_to_trampoline_exit_s",
                "trampoline_lifetime_s",
                "trampoline_cpu_s",
            )
        }
        for job in self.jobs_of(flow, run):
            if job.started is None:
                continue
            out["register_to_start_s"].append(job.started - job.submitted)
            if job.terminated is not None:
                out["task_on_nomad_s"].append(job.terminated - job.started)
            tramp = trampolines.get(job.job_id)
            if tramp is None:
                continue
            out["trampoline_to_submit_s"].append(job.submitted - tramp.created)
            out["trampoline_to_start_s"].append(job.started - tramp.created)
            out["trampoline_lifetime_s"].append(tramp.last_seen - tramp.created)
            out["trampoline_cpu_s"].append(tramp.cpu_s)
            if job.terminated is not None:
                out["task_end_to_trampoline_exit_s"].append(tramp.last_seen - job.terminated)
        return out

    # -- fan-out --------------------------------------------------------------------

    def fanout(self, width: int, workers: int, reps: int) -> None:
        source = (FLOWS / "fanout_flow.py").read_text()
        assert NOMAD_MARKER in source
        local_dir = self.runner.prepare("fanout-local", source)
        nomad_dir = self.runner.prepare(
            "fanout-nomad", source.replace(NOMAD_MARKER, FANOUT_DECORATOR)
        )
        args = ["--width", str(width), "--max-workers", str(workers)]
        local, nomad, ratios, register_to_start = [], [], [], []
        for _ in range(reps):
            base = self.runner.run(local_dir, [], args, self.timeout)
            run = self.runner.run(nomad_dir, [], args, self.timeout)
            local.append(base.seconds)
            nomad.append(run.seconds)
            ratios.append(run.seconds / base.seconds)
            phases = self._task_phases("FanoutFlow", run)
            register_to_start.extend(phases["register_to_start_s"])
        label = f"{width} x 1 s tasks, --max-workers {workers}"
        self.metric("fanout_local_s", local, "s", label + ", local")
        self.metric("fanout_nomad_s", nomad, "s", label + ", @nomad on the foreach body")
        self.metric("fanout_ratio", ratios, "x", "per-repetition nomad/local wall time")
        self.metric(
            "fanout_register_to_start_s",
            register_to_start,
            "s",
            f"SubmitTime -> Started with {workers} trampolines at once",
        )

    def wide(self, width: int, workers: int) -> None:
        """One wide foreach, local then on Nomad through the counting proxy: how much
        memory the launcher machine needs and how hard the API is driven."""
        source = (FLOWS / "fanout_flow.py").read_text()
        local_dir = self.runner.prepare("wide-local", source)
        nomad_dir = self.runner.prepare(
            "wide-nomad", source.replace(NOMAD_MARKER, FANOUT_DECORATOR)
        )
        args = ["--width", str(width), "--max-workers", str(workers)]
        args += ["--max-num-splits", str(width)]
        base = self.runner.run(local_dir, [], args, self.timeout * 4)
        with CountingProxy(self.agent.address) as proxy:
            env = {"METAFLOW_NOMAD_ADDRESS": proxy.address}
            run, tree_mb = self.runner.run_with_tree(nomad_dir, [], args, self.timeout * 4, env)
            requests = sum(sum(c.values()) for c in proxy.by_job.values())
            requests += sum(proxy.unattributed.values())
        label = f"{width} x 1 s tasks, --max-workers {workers}"
        self.metric("wide_local_s", [base.seconds], "s", label + ", local")
        self.metric("wide_nomad_s", [run.seconds], "s", label + ", on Nomad")
        self.metric("wide_ratio", [run.seconds / base.seconds], "x", "nomad/local wall time")
        self.metric(
            "wide_launcher_peak_mb", [tree_mb], "MB", "RSS of the launcher tree at its peak"
        )
        self.metric(
            "wide_launcher_mb_per_worker", [tree_mb / workers], "MB", "that peak / --max-workers"
        )
        self.metric(
            "wide_api_requests_per_s", [requests / run.seconds], "req/s", "all API requests / wall"
        )

    # -- render ---------------------------------------------------------------------

    def render(self, reps: int, window_s: float) -> None:
        settings, identity, launch = fixture()
        request, inputs = step_request(settings, identity, launch), RenderInputs()
        loaded = job_template(request, inputs, STEP_TEMPLATE)
        context = template_context(request, loaded, inputs).as_template_vars()
        client = NomadClient(ConnectionSettings(address=self.agent.address))
        hcl_bytes = len(render_template(loaded, context))
        self.metric(
            "render_per_s",
            [rate(lambda: render_template(loaded, context), window_s) for _ in range(reps)],
            "1/s",
            f"render_template, warm, {hcl_bytes} bytes of HCL",
        )
        self.metric(
            "render_job_per_s",
            [
                rate(lambda: render_job(step_request(settings, identity, launch), inputs), window_s)
                for _ in range(reps)
            ],
            "1/s",
            "render_job (template lookup + context + render), warm",
        )
        self.metric(
            "render_parse_per_s",
            [
                rate(lambda: client.parse(render_job(request, inputs).hcl), window_s)
                for _ in range(reps)
            ],
            "1/s",
            "render_job + POST /v1/jobs/parse round trip, one connection",
        )
        script = Path(__file__).resolve().parent / "render_bench.py"
        colds = [
            json.loads(
                subprocess.run(
                    [sys.executable, str(script)],
                    check=True,
                    stdout=subprocess.PIPE,
                    text=True,
                    timeout=120,
                ).stdout
            )
            for _ in range(reps)
        ]
        notes = {
            "import_s": "fresh interpreter: import metaflow_nomad.jobspec (Jinja)",
            "first_render_s": "fresh interpreter: first render_job (compiles the template)",
            "warm_render_s": "fresh interpreter: second render_job",
        }
        for key, note in notes.items():
            self.metric("cold_render_" + key, [c[key] for c in colds], "s", note)

    # -- API efficiency ---------------------------------------------------------------

    def api(self, durations: list[float]) -> None:
        """Each duration is its own run, all at once, each task's requests counted by job."""
        directory = self.runner.prepare("api", (FLOWS / "api_flow.py").read_text())
        with CountingProxy(self.agent.address) as proxy:
            env = {"METAFLOW_NOMAD_ADDRESS": proxy.address}
            started = [
                (seconds, *self.runner.start(directory, [], ["--seconds", str(seconds)], env))
                for seconds in durations
            ]
            runs = [
                (seconds, read_run_id(run_id_file, finish(proc, self.timeout)))
                for seconds, proc, run_id_file in started
            ]
        unattributed = sum(proxy.unattributed.values())
        share = unattributed / len(runs)
        per_duration: dict[float, list[float]] = {}
        breakdown: dict[str, dict] = {}
        for seconds, run_id in runs:
            prefix = run_job_prefix("ApiFlow", run_id)
            jobs = [job for job in proxy.by_job if job.startswith(prefix)]
            if len(jobs) != 1:
                raise RuntimeError(f"expected one job for run {run_id}, saw {jobs}")
            counts = proxy.by_job[jobs[0]]
            per_duration.setdefault(seconds, []).append(sum(counts.values()) + share)
            breakdown[f"{seconds:g}s"] = dict(counts)
        for seconds, values in per_duration.items():
            self.metric(
                f"api_requests_{seconds:g}s_task",
                values,
                "requests",
                f"all requests of one {seconds:g} s task, counted at a proxy",
            )
        self.details["api_breakdown"] = breakdown
        self.details["api_unattributed_requests"] = dict(proxy.unattributed)

    # -- the S3 attempt claim ------------------------------------------------------------

    def claim(self, reps: int) -> None:
        """What the S3 attempt claim adds to a task's start (claim_bench.py)."""
        directory = self.workdir / "claim"
        directory.mkdir()
        with moto_s3() as s3:
            claim_bench.measure(s3, directory, reps, self.metric)
        task = self.metrics.get("task_on_nomad_s", {}).get("median")
        if task:
            added_s = self.metrics["claim_start_cost_ms"]["median"] / 1000
            self.metric(
                "claim_vs_task_on_nomad",
                [added_s / task],
                "x",
                "claim_start_cost_ms / task_on_nomad_s (medians, this run): the claim's "
                "share of a no-op task",
            )

    def memory(self) -> None:
        self.metric(
            "trampoline_peak_rss_mb",
            [t.peak_rss_mb for t in self.trampolines if t.peak_rss_mb > 0],
            "MB",
            "VmHWM of every trampoline of the step-overhead and fan-out runs",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: small fan-out, 1 s tasks")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--reps", type=int, help="repetitions per benchmark (default 5, quick 2)")
    parser.add_argument(
        "--only",
        help="comma-separated subset: render,step,fanout,api,claim (memory follows step/fanout)",
    )
    parser.add_argument(
        "--wide", action="store_true", help="also 256 tasks at --max-workers 64 (make bench)"
    )
    parser.add_argument(
        "--no-docker", action="store_true", help="raw_exec only, even where an engine can start"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    reps = args.reps or (2 if quick else 5)
    began = time.time()
    path = interpreter_path()
    engine = start_engine_or_explain(lambda m: print(m, flush=True)) if not args.no_docker else None
    plugin = engine.nomad_plugin_config() if engine else ""
    agent = LocalAgent(options=AgentOptions(env={"PATH": path}, docker_plugin=plugin))
    print(f"Starting a local Nomad agent ({agent.binary})...", flush=True)
    try:
        agent.start()
        with tempfile.TemporaryDirectory(prefix="mf-nomad-bench-") as tmp:
            suite = Suite(agent, Path(tmp), quick, docker=engine is not None)
            steps = [
                ("render", "render", lambda: suite.render(reps, 0.5 if quick else 1.0)),
                ("step overhead", "step", lambda: suite.step_overhead(reps)),
                (
                    "fan-out",
                    "fanout",
                    lambda: suite.fanout(*((8, 4, 1) if quick else (64, 16, max(2, reps // 2)))),
                ),
                (
                    "API efficiency",
                    "api",
                    lambda: suite.api([1] if quick else [1, 1, 30, 30, 60, 60]),
                ),
                ("S3 attempt claim", "claim", lambda: suite.claim(reps if quick else 4 * reps)),
                ("memory", "memory", suite.memory),
            ]
            if args.wide:
                steps.append(("wide fan-out", "wide", lambda: suite.wide(256, 64)))
            chosen = set(args.only.split(",")) | {"memory", "wide"} if args.only else None
            for label, key, step in steps:
                if chosen is not None and key not in chosen:
                    continue
                print(f"[{time.time() - began:6.0f}s] {label}...", flush=True)
                step()
            result = {
                "mode": "quick" if quick else "full",
                "repetitions": reps,
                "elapsed_s": time.time() - began,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "metrics": suite.metrics,
                "details": suite.details,
            }
    finally:
        agent.stop()
        if engine:
            engine.stop()
    print()
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
