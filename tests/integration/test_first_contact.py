"""Issue 12: first contact.  A run, ``nomad list``, ``nomad kill`` and ``render`` meet
an address where nothing answers and fail at once, with the address, where that
address came from and what to set; ``render`` works as a dry run with the default
local datastore.

Timing a whole ``python flow.py run`` includes Metaflow's start-up, which is not
the cluster check; so each unreachable command is timed against the same command
failing at the same point for another reason (a bad setting), and the difference
is what the cluster check costs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.preflight import check_cluster_for_run
from metaflow_nomad.errors import NomadPreflightError
from metaflow_nomad.testing.ports import free_port
from tests.support.flows import clean_environ, flow_env, flow_source, run_flow

pytestmark = pytest.mark.integration

FLOW = "nomad_flow.py"  # the user guide's example, unchanged
STEP = "compute_on_nomad"
FIX = (
    "Is the agent running there? To use another cluster, set METAFLOW_NOMAD_ADDRESS "
    "(or NOMAD_ADDR)."
)


def _refused(address: str, source: str) -> str:
    return f"Cannot reach Nomad at {address} (from {source}): connection refused. {FIX}"


@pytest.fixture()
def closed_address() -> str:
    """A loopback port where nothing listens: the connection is refused."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture()
def silent_address():
    """An address that neither accepts nor refuses: its listen backlog is full, so
    new connections hang like packets dropped by a firewall."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    for sock in (*fillers, server):
        sock.close()


def _timed(workdir, env, *args, **kwargs):
    started = time.monotonic()
    run = run_flow(FLOW, workdir, env, *args, timeout=120, **kwargs)
    return run, time.monotonic() - started


def _lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines()]


def _assert_consecutive(output: str, expected: list[str]) -> None:
    lines = _lines(output)
    start = lines.index(expected[0]) if expected[0] in lines else -1
    assert lines[start : start + len(expected)] == expected, output


def test_a_run_with_nothing_at_the_address_fails_at_once_and_says_what_to_set(
    tmp_path, closed_address
):
    env = flow_env(None, tmp_path / "run", {"NOMAD_ADDR": closed_address})
    run, elapsed = _timed(tmp_path / "run", env)
    baseline, baseline_s = _timed(tmp_path / "baseline", {**env, "METAFLOW_NOMAD_DRIVER": "podman"})
    print(
        f"run against {closed_address}: {elapsed:.2f}s; same run with a bad setting: "
        f"{baseline_s:.2f}s; the cluster check cost {elapsed - baseline_s:+.2f}s"
    )
    assert "setting 'driver' = 'podman'" in baseline.output  # failed at the same point
    assert run.returncode == 1
    _assert_consecutive(
        run.output,
        [
            "Nomad is not ready for this run (nothing was submitted):",
            _refused(closed_address, "NOMAD_ADDR"),
            "For a full check of the cluster and this flow's settings, run "
            "`python nomad_flow.py nomad doctor`.",
        ],
    )
    assert elapsed - baseline_s < 2.0
    for noise in ("Traceback", "Internal error", "Workflow starting", "Task is starting"):
        assert noise not in run.output


def test_the_check_gives_up_on_a_silent_address_in_under_two_seconds(silent_address):
    settings = ConnectionSettings(address=silent_address, address_source="METAFLOW_NOMAD_ADDRESS")
    started = time.monotonic()
    with pytest.raises(NomadPreflightError) as failed:
        check_cluster_for_run(settings, None, None, "python flow.py nomad doctor")
    elapsed = time.monotonic() - started
    print(f"preflight against a silent address gave up after {elapsed:.2f}s")
    assert str(failed.value).splitlines()[0] == (
        f"Cannot reach Nomad at {silent_address} (from METAFLOW_NOMAD_ADDRESS): the "
        f"connection timed out. {FIX}"
    )
    assert elapsed < 2.0
    # The normal client keeps its retry budget for a cluster that answered before.
    assert NomadClient(settings).min_retry_wait() > 20


@pytest.fixture()
def not_nomad():
    """An HTTP server that answers 404 to everything, like a proxy in the way."""
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (
            "http://no-such-host.invalid:4646",
            "Cannot reach Nomad at http://no-such-host.invalid:4646 (from NOMAD_ADDR): the "
            f"host name does not resolve. {FIX}",
        ),
        (
            "not-nomad",
            "Something at {address} (from NOMAD_ADDR) answered, but not as a Nomad agent does "
            "(HTTP 404): check the address, and if an HTTP proxy is in between, exclude the "
            "Nomad address with NO_PROXY.",
        ),
    ],
    ids=["unknown-host", "not-nomad"],
)
def test_the_check_names_other_first_contact_failures(request, address, expected):
    if address == "not-nomad":
        address = request.getfixturevalue("not_nomad")
    settings = ConnectionSettings(address=address, address_source="NOMAD_ADDR")
    started = time.monotonic()
    with pytest.raises(NomadPreflightError) as failed:
        check_cluster_for_run(settings, None, None, "python flow.py nomad doctor")
    assert str(failed.value).splitlines()[0] == expected.format(address=address)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "command",
    [("list", "--my-runs"), ("kill", "--my-runs"), ("render", STEP)],
    ids=["list", "kill", "render"],
)
def test_list_kill_and_render_fail_at_once_without_a_cluster(
    nomad_agent, tmp_path, closed_address, command
):
    env = flow_env(None, tmp_path / "down", {"METAFLOW_NOMAD_ADDRESS": closed_address})
    down, elapsed = _timed(tmp_path / "down", env, *command, command="nomad")
    up, up_s = _timed(
        tmp_path / "up", flow_env(nomad_agent.address, tmp_path / "up"), *command, command="nomad"
    )
    print(f"nomad {' '.join(command)}: {elapsed:.2f}s without a cluster, {up_s:.2f}s with one")
    assert up.returncode == 0, up.output
    assert down.returncode == 1
    _assert_consecutive(
        down.output,
        ["Nomad connection error:", _refused(closed_address, "METAFLOW_NOMAD_ADDRESS")],
    )
    assert "Traceback" not in down.output
    assert elapsed - up_s < 2.0


def _console() -> str:
    return os.path.join(os.path.dirname(sys.executable), "metaflow-nomad")


def _render(tmp_path, env, *options):
    (tmp_path / FLOW).write_text(flow_source(FLOW).read_text())
    return subprocess.run(
        [_console(), "render", FLOW, "--step", STEP, *options],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


LOCAL_DATASTORE_WARNING = (
    "# WARNING: a real run of this step would be refused: Step 'compute_on_nomad': @nomad "
    "with the local datastore needs the Nomad tasks to see the datastore root at the same "
    "absolute path. If they do (a local agent, or a shared filesystem), set "
    "METAFLOW_NOMAD_SHARED_FILESYSTEM=1. Otherwise use --datastore=s3 (S3-compatible "
    "endpoints work through METAFLOW_S3_ENDPOINT_URL)."
)


def test_offline_render_of_the_user_guide_example_needs_no_cluster_and_no_setup(tmp_path):
    """A new user's first dry run: no address, no datastore settings at all."""
    env = {**clean_environ(), "USER": "tester", "METAFLOW_HOME": str(tmp_path / "mfhome")}
    result = _render(tmp_path, env, "--offline")
    assert result.returncode == 0, result.stderr
    assert 'job "mf-nomadflow-render-preview-compute-on-nomad-1-0" {' in result.stdout
    assert 'driver = "docker"' in result.stdout
    assert result.stderr.splitlines()[-1] == LOCAL_DATASTORE_WARNING


def test_render_through_the_cluster_warns_about_the_datastore_too(nomad_agent, tmp_path):
    env = {
        **clean_environ(),
        "USER": "tester",
        "METAFLOW_HOME": str(tmp_path / "mfhome"),
        "METAFLOW_NOMAD_ADDRESS": nomad_agent.address,
    }
    result = _render(tmp_path, env, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert '"ID": "mf-nomadflow-render-preview-compute-on-nomad-1-0"' in result.stdout
    assert "was NOT submitted" in result.stderr
    assert result.stderr.splitlines()[-1] == LOCAL_DATASTORE_WARNING
