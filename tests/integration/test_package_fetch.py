"""Issue 12: a task that cannot fetch its code package fails at once and says from
where and what to check, instead of retrying for a minute (Metaflow's own download
loop) and printing six tracebacks.  Real S3 (moto), real agent; the task gets no
credentials, as when an operator forgot the Nomad Variable."""

from __future__ import annotations

import re
import time

import pytest

from metaflow_nomad.api.lookup import find_jobs
from tests.support.flows import flow_source

pytestmark = pytest.mark.integration

FLOW = "nomad_flow.py"


def test_a_task_without_datastore_credentials_fails_at_once(run_flow, nomad_client, s3_server):
    # A code package of its own: a package cached on the node would start.
    (run_flow.workdir / FLOW).write_text(flow_source(FLOW).read_text() + f"# {run_flow.workdir}\n")
    started = time.monotonic()
    result = run_flow(FLOW, env=s3_server.metaflow_env("no-creds"), copy=False)
    elapsed = time.monotonic() - started
    print(f"run with a task that cannot fetch its code package ended after {elapsed:.1f}s")
    assert result.returncode != 0
    [stub] = find_jobs(nomad_client, "NomadFlow", result.run_id, include_dead=True)
    url = re.search(r"could not be fetched from (s3://\S+):", result.output).group(1)
    assert url.startswith("s3://mf-nomad-test/no-creds/NomadFlow/data/")
    [verdict] = [line for line in result.output.splitlines() if "Step failed on Nomad" in line]
    assert re.search(
        re.escape(f"Step failed on Nomad (job {stub['ID']}, allocation ")
        + r"\w{8}, http://127\.0\.0\.1:\d+/ui/allocations/[\w-]{36}"
        + re.escape(
            f"): the task exited with code 1: the code package could not be fetched from {url}: "
            "the task has no AWS credentials. Credentials reach a task through a Nomad "
            "Variable or Vault template, or the node's environment or credentials file (see "
            "docs/s3.md)."
        )
        + "$",
        verdict,
    ), verdict
    # Nothing reached the datastore's log, so Nomad's raw output is shown: it adds the
    # bootstrap's progress lines, and the reason is not repeated there.
    lines = [line.rsplit("] ", 1)[-1] for line in result.output.splitlines()]
    header = lines.index("--- stdout from nomad alloc logs, not in the task's log above ---")
    assert lines[header + 1 : header + 3] == [
        "Setting up task environment.",
        "Downloading code package...",
    ]
    assert result.output.count("could not be fetched from") == 1
    assert "Traceback" not in result.output
    assert elapsed < 30  # Metaflow's own download loop alone takes over a minute
