"""Every bad setting of every @nomad step in one run, before anything contacts Nomad.

The run is given the address of a plain TCP listener that counts connections: a
run that reported its settings one step at a time (or checked the cluster for a
valid step first) would connect to it.  No agent is needed, and nothing can be
submitted when nothing connects.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from metaflow_nomad.settings import DECORATOR_ATTRIBUTES
from tests.support.flows import flow_env, run_flow

pytestmark = pytest.mark.integration

CPU = (
    "a positive number: below 100 it counts vCPUs (e.g. cpu=2), 100 or more is MHz (e.g. cpu=4000)"
)
MEMORY = "a whole number of MB >= 10"
DRIVER = "one of: docker, exec, raw_exec"
NOISE = ("Traceback", "Internal error", "Workflow starting", "Task is starting")


class CountingListener:
    """A TCP port that accepts and closes every connection, counting them."""

    def __init__(self) -> None:
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()


@pytest.fixture()
def listener():
    server = CountingListener()
    yield server
    server.close()


def problem(step: str, setting: str, value: object, source: str, accepted: str) -> str:
    return (
        f"Step '{step}': setting '{setting}' = {value!r} (from {source}) is not valid. "
        f"Expected {accepted}."
    )


def run_against(listener: CountingListener, workdir, flow_file: str, *args: str, env=None):
    started = time.monotonic()
    run = run_flow(flow_file, workdir, flow_env(listener.address, workdir, env), *args, timeout=120)
    elapsed = time.monotonic() - started
    print(f"{flow_file} {' '.join(args)}: exit {run.returncode} after {elapsed:.2f}s")
    print(run.output)
    return run


def assert_one_report(output: str, expected: list[str]) -> None:
    """The headline, then exactly the expected problems, one per line, in this order."""
    lines = [line.strip() for line in output.splitlines()]
    start = lines.index("Invalid @nomad settings:")
    assert lines[start + 1 : start + 1 + len(expected) + 1] == [*expected, ""], output
    for noise in NOISE:
        assert noise not in output


def test_three_bad_values_in_two_steps_are_reported_in_one_run_without_contacting_nomad(
    tmp_path, listener
):
    run = run_against(listener, tmp_path, "bad_settings_flow.py")
    assert listener.connections == 0
    assert run.returncode == 1
    assert_one_report(
        run.output,
        [
            problem("prepare", "cpu", -1, "@nomad", CPU),
            problem("prepare", "memory", "lots", "@nomad", MEMORY),
            problem("train", "driver", "podman", "@nomad", DRIVER),
        ],
    )


def test_each_problem_names_its_source_with_with_config_and_project_file(tmp_path, listener):
    (tmp_path / "metaflow_nomad.yaml").write_text(
        "defaults:\n  memroy: 1\nsteps:\n  end:\n    disk: -1\n"
    )
    run = run_against(
        listener,
        tmp_path,
        "bad_input_flow.py",
        "--with",
        "nomad:memory=lots",
        env={"METAFLOW_NOMAD_DRIVER": "podman"},
    )
    assert run.returncode == 1
    unknown = "one of: " + ", ".join(DECORATOR_ATTRIBUTES)
    expected = []
    for step in ("start", "end"):
        expected += [
            problem(step, "memroy", 1, "metaflow_nomad.yaml", unknown),
            problem(step, "driver", "podman", "METAFLOW_NOMAD_DRIVER", DRIVER),
            problem(step, "memory", "lots", "@nomad", MEMORY),
        ]
    expected.append(problem("end", "disk", -1, "metaflow_nomad.yaml", "a whole number of MB > 0"))
    assert_one_report(run.output, expected)
    assert listener.connections == 0
