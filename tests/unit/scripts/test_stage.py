"""scripts/stage.sh: one line per set-up stage, the whole output in a log, shown on failure."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

STAGE = Path(__file__).resolve().parents[3] / "scripts" / "stage.sh"


def stage(tmp_path: Path, label: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(STAGE), label, "bash", "-c", script],
        env={"PATH": "/usr/bin:/bin", "METAFLOW_NOMAD_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_stage_prints_one_line_and_logs_everything(tmp_path):
    noisy = "for i in $(seq 200); do echo go: downloading module$i; done; echo warn >&2"
    result = stage(tmp_path, "nomad", noisy + '; echo "cached: /x/nomad" > "$STAGE_STATUS_FILE"')
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert re.fullmatch(r"set-up  nomad +\d+\.\d s  cached: /x/nomad\n", result.stdout)
    log = (tmp_path / "logs" / "setup-nomad.log").read_text()
    assert "go: downloading module200" in log and "warn" in log


def test_a_stage_that_says_nothing_is_done(tmp_path):
    result = stage(tmp_path, "lint", "true")
    assert re.fullmatch(r"set-up  lint +\d+\.\d s  done\n", result.stdout)


def test_a_failed_stage_shows_its_output_and_keeps_its_exit_code(tmp_path):
    result = stage(tmp_path, "docker-image", "echo debootstrap: no mirror; exit 4")
    assert result.returncode == 4
    log = tmp_path / "logs" / "setup-docker-image.log"
    assert "docker-image   failed after" in result.stderr
    assert f"(exit 4); its output, from {log}:" in result.stderr
    assert "debootstrap: no mirror" in result.stderr
