"""One allocation per attempt: a second allocation of the same attempt exits at once
and writes nothing (real bash for the local datastore's claim)."""

import os
import subprocess

from metaflow_nomad.model import CLAIMED_ELSEWHERE
from metaflow_nomad.render.bootstrap import claim_in_bash


def run_claimed(path, alloc_id: str) -> subprocess.CompletedProcess:
    """The claim, then what the bootstrap does next (here: write the attempt's file)."""
    script = f"{claim_in_bash(str(path))} && echo step-ran >> {path.parent}/0.task_stdout.log"
    env = {"NOMAD_ALLOC_ID": alloc_id, "PATH": os.environ["PATH"]}
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)


def test_the_first_allocation_claims_the_attempt_and_runs(tmp_path):
    done = run_claimed(tmp_path / "0.nomad_claim", "alloc-1")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "0.nomad_claim").read_text() == "alloc-1"
    assert (tmp_path / "0.task_stdout.log").read_text() == "step-ran\n"


def test_a_replacement_allocation_exits_without_writing_anything(tmp_path):
    run_claimed(tmp_path / "0.nomad_claim", "alloc-1")
    done = run_claimed(tmp_path / "0.nomad_claim", "alloc-2")
    assert done.returncode == CLAIMED_ELSEWHERE
    assert done.stderr.startswith(
        f"metaflow-nomad: this attempt already ran in allocation alloc-1 ({tmp_path}/0.nomad_claim)"
    )
    assert (tmp_path / "0.task_stdout.log").read_text() == "step-ran\n"
    assert (tmp_path / "0.nomad_claim").read_text() == "alloc-1"


def test_the_holder_itself_may_start_again(tmp_path):
    run_claimed(tmp_path / "0.nomad_claim", "alloc-1")
    assert run_claimed(tmp_path / "0.nomad_claim", "alloc-1").returncode == 0
