"""The start cost of the S3 attempt claim: what ``capture --claim`` adds before a task's step.

With a remote datastore a task's capture process claims the attempt
(``task.attempt_claim``: a conditional PUT, ``If-None-Match: *``) before it
starts the step; without the claim it starts the step first thing.  So all of
the claim lands on the task's start: importing the S3 client (botocore, and
Metaflow's ``s3util``, which imports Metaflow), creating the client, one PUT.

Timed against moto's S3 on loopback (the bench's own server), interleaved so
that drift hits both arms alike, a new attempt each time:

* the task's start path with and without the claim: spawn of ``python -m
  metaflow_nomad.task.capture [--claim URL] STEP`` to the step's first command
  (the step prints its own clock, bash's ``$EPOCHREALTIME``); the figures are
  their per-repetition difference and ratio;
* in a fresh interpreter (``--cold``, the way a capture process pays it): the
  claim's imports, a first claim (client and PUT), a second claim (a new client,
  as every call makes one) and a bare PUT on an existing client;
* the local datastore's claim (bash noclobber, ``render.bootstrap.claim_in_bash``)
  timed inside the bootstrap's bash itself.

A loopback PUT is CPU only: against AWS S3 add one request's latency (tens of ms
in-region).  Standalone: ``python benchmarks/claim_bench.py [--reps N]``;
``benchmarks/run.py`` runs it too (``--only claim``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

# Light imports only: ``--cold`` times the claim's imports in this very interpreter.
from metaflow_nomad.model import LOGS_IN_PLACE_ENV
from metaflow_nomad.task.capture import CLAIM_OPTION

CAPTURE = [sys.executable, "-m", "metaflow_nomad.task.capture"]
# The step: bash prints its own clock first thing (no process of its own).
STEP = ["bash", "-c", "echo $EPOCHREALTIME"]
Metric = Callable[..., None]


def _env(s3, workdir: Path, alloc_id: str) -> dict[str, str]:
    """A task's capture process with an S3 datastore; logs in place (no upload)."""
    return {
        **os.environ,
        **s3.credentials,
        "METAFLOW_S3_ENDPOINT_URL": s3.endpoint,
        "METAFLOW_HOME": str(workdir / "mfhome"),
        "NOMAD_ALLOC_ID": alloc_id,
        "MFLOG_STDOUT": str(workdir / f"{alloc_id}.out"),
        "MFLOG_STDERR": str(workdir / f"{alloc_id}.err"),
        LOGS_IN_PLACE_ENV: "1",
    }


def _start_to_step(s3, workdir: Path, url: str | None) -> float:
    """Seconds from spawning the capture process to the step's first command."""
    alloc_id = str(uuid.uuid4())
    claim = [CLAIM_OPTION, url] if url else []
    env = _env(s3, workdir, alloc_id)
    started = time.time()
    proc = subprocess.run(
        [*CAPTURE, *claim, *STEP], env=env, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"capture exited {proc.returncode}: {proc.stderr[-2000:]}")
    return float(proc.stdout.split()[-1]) - started


def _local_claim_s(workdir: Path) -> float:
    """The local datastore's claim, timed inside the bash that runs it."""
    from metaflow_nomad.render.bootstrap import claim_in_bash

    path = workdir / f"{uuid.uuid4()}.nomad_claim"
    script = f"a=$EPOCHREALTIME; {claim_in_bash(str(path))}; b=$EPOCHREALTIME; echo $a $b"
    env = {**os.environ, "NOMAD_ALLOC_ID": str(uuid.uuid4())}
    out = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0 or not path.exists():
        raise RuntimeError(f"local claim failed: {out.stderr}")
    before, after = (float(x) for x in out.stdout.split())
    return after - before


def _cold(s3, workdir: Path) -> dict[str, float]:
    """The claim's parts in a fresh interpreter (this file run with ``--cold``)."""
    env = _env(s3, workdir, str(uuid.uuid4()))
    url = f"s3://{_bucket()}/claims/cold/{uuid.uuid4()}"
    out = subprocess.run(
        [sys.executable, __file__, "--cold", url],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)


def _bucket() -> str:
    from metaflow_nomad.testing.s3_server import BUCKET

    return BUCKET


def cold_parts(url: str) -> dict[str, float]:
    """In this (fresh) interpreter: what one capture process's claim is made of."""
    started = time.perf_counter()
    # What claim_s3 imports (it imports lazily, so the task pays this only with S3).
    from botocore.exceptions import ClientError  # noqa: F401
    from metaflow.plugins.datatools.s3.s3util import get_s3_client

    from metaflow_nomad.task.attempt_claim import claim_s3

    imported = time.perf_counter()
    alloc_id = os.environ["NOMAD_ALLOC_ID"]
    assert claim_s3(url + "/0", alloc_id) is None
    first = time.perf_counter()
    assert claim_s3(url + "/1", alloc_id) is None
    second = time.perf_counter()
    client, _ = get_s3_client()
    bucket, _, key = url[len("s3://") :].partition("/")
    client.put_object(Bucket=bucket, Key=key + "/2", Body=b"x", IfNoneMatch="*")
    put_started = time.perf_counter()
    client.put_object(Bucket=bucket, Key=key + "/3", Body=b"x", IfNoneMatch="*")
    put = time.perf_counter()
    return {
        "import_s": imported - started,
        "first_claim_s": first - imported,
        "second_claim_s": second - first,
        "put_s": put - put_started,
    }


def measure(s3, workdir: Path, reps: int, metric: Metric) -> None:
    """Every figure, through ``metric(name, values, unit, note)`` (``Suite.metric``)."""
    # Untimed: the first start of each arm pays for a cold page cache.
    _start_to_step(s3, workdir, None)
    _start_to_step(s3, workdir, f"s3://{_bucket()}/claims/warmup")
    plain, claimed, added, ratios, local = [], [], [], [], []
    for rep in range(reps):
        url = f"s3://{_bucket()}/claims/Flow/{uuid.uuid4().hex}/start/{rep}/0.nomad_claim"
        # Alternate the order, so that neither arm always runs second.
        if rep % 2:
            with_claim = _start_to_step(s3, workdir, url)
            without = _start_to_step(s3, workdir, None)
        else:
            without = _start_to_step(s3, workdir, None)
            with_claim = _start_to_step(s3, workdir, url)
        plain.append(without)
        claimed.append(with_claim)
        added.append((with_claim - without) * 1000)
        ratios.append(with_claim / without)
        local.append(_local_claim_s(workdir) * 1000)
    colds = [_cold(s3, workdir) for _ in range(max(1, reps // 2))]
    metric("capture_to_step_s", plain, "s", "capture process spawn -> step's first command")
    metric("claim_capture_to_step_s", claimed, "s", "same, with --claim (S3, moto on loopback)")
    metric("claim_start_cost_ms", added, "ms", "per-repetition (with claim - without)")
    metric("claim_start_ratio", ratios, "x", "per-repetition (with claim / without)")
    notes = {
        "import_s": "fresh interpreter: the claim's imports (botocore, Metaflow's s3util)",
        "first_claim_s": "fresh interpreter: first claim_s3 (S3 client + PUT)",
        "second_claim_s": "fresh interpreter: second claim_s3 (a new client + PUT)",
        "put_s": "one conditional PUT on an existing client",
    }
    for key, note in notes.items():
        metric("claim_cold_" + key[:-2] + "_ms", [c[key] * 1000 for c in colds], "ms", note)
    metric("local_claim_ms", local, "ms", "local datastore: bash noclobber claim, in the bash")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=20, help="repetitions (default 20)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--cold", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold:
        json.dump(cold_parts(args.cold), sys.stdout)
        return 0
    from harness import print_table, summarize

    from metaflow_nomad.testing.s3_server import moto_s3

    metrics: dict[str, dict] = {}

    def metric(name: str, values: list[float], unit: str, note: str = "") -> None:
        metrics[name] = {**summarize(values), "unit": unit, "note": note}

    began = time.time()
    with moto_s3() as s3, tempfile.TemporaryDirectory(prefix="mf-nomad-claim-") as tmp:
        measure(s3, Path(tmp), args.reps, metric)
    result = {
        "mode": "claim",
        "repetitions": args.reps,
        "elapsed_s": time.time() - began,
        "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "metrics": metrics,
        "details": {},
    }
    print_table(result)
    added = metrics["claim_start_cost_ms"]["median"]
    base = metrics["capture_to_step_s"]["median"] * 1000
    print(f"The S3 claim adds {added:.0f} ms to a task's start ({base:.0f} ms without it).")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
