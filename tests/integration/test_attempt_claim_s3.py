"""The S3 datastore's attempt claim against a real S3-compatible server (moto): the
capture process of a second allocation exits before it starts the step."""

import os
import subprocess
import sys

import pytest

from metaflow_nomad.model import CLAIMED_ELSEWHERE
from tests.support.s3 import BUCKET

pytestmark = pytest.mark.integration


def capture(s3_server, tmp_path, alloc_id: str, url: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **s3_server.credentials,
        "METAFLOW_S3_ENDPOINT_URL": s3_server.endpoint,
        "NOMAD_ALLOC_ID": alloc_id,
        "MFLOG_STDOUT": str(tmp_path / f"{alloc_id}.out"),
        "MFLOG_STDERR": str(tmp_path / f"{alloc_id}.err"),
        "METAFLOW_NOMAD_LOGS_IN_PLACE": "1",
    }
    command = ["sh", "-c", f"echo ran > {tmp_path}/{alloc_id}.step"]
    return subprocess.run(
        [sys.executable, "-m", "metaflow_nomad.task.capture", "--claim", url, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_only_the_first_allocation_of_an_attempt_runs_its_step(s3_server, tmp_path):
    url = f"s3://{BUCKET}/claims/Flow/1/start/2/0.nomad_claim"
    first = capture(s3_server, tmp_path, "alloc-1", url)
    again = capture(s3_server, tmp_path, "alloc-1", url)
    second = capture(s3_server, tmp_path, "alloc-2", url)
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert second.returncode == CLAIMED_ELSEWHERE
    assert "this attempt already ran in allocation alloc-1" in second.stderr
    assert (tmp_path / "alloc-1.step").exists()
    assert not (tmp_path / "alloc-2.step").exists()
    held = s3_server.client().get_object(Bucket=BUCKET, Key="claims/Flow/1/start/2/0.nomad_claim")
    assert held["Body"].read() == b"alloc-1"
