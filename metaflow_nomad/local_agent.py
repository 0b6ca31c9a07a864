"""Start and stop a real single-node Nomad agent on loopback.

Used by the test suite (pytest fixtures), the demo and the benchmarks.  The agent
is a server and a client in one process, with raw_exec enabled, on free ports,
with a temporary data dir (kept across ``restart()``).  ``AgentOptions`` is the
extension point for ACL- and TLS-enabled variants.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def find_nomad_binary() -> str:
    """Return a Nomad binary, running the project's own build script if needed."""
    script = REPO_ROOT / "scripts" / "get_nomad.sh"
    if script.exists():
        out = subprocess.run(
            ["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True
        ).stdout
        return out.strip().splitlines()[-1]
    found = os.environ.get("NOMAD_BIN") or shutil.which("nomad")
    if not found:
        raise RuntimeError("No Nomad binary: set NOMAD_BIN or put nomad on PATH.")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AgentOptions:
    datacenter: str = "dc1"
    region: str = "global"
    node_pool: str = "default"
    extra_config: str = ""
    env: dict[str, str] = field(default_factory=dict)


class LocalAgent:
    """A running ``nomad agent`` with its own ports and data dir."""

    def __init__(self, binary: str | None = None, options: AgentOptions | None = None):
        self.binary = binary or find_nomad_binary()
        self.options = options or AgentOptions()
        self.data_dir = Path(tempfile.mkdtemp(prefix="mf-nomad-agent-"))
        self.ports = {"http": _free_port(), "rpc": _free_port(), "serf": _free_port()}
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "agent.log"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    def _config(self) -> str:
        o = self.options
        return f"""
name       = "mf-nomad-test"
region     = "{o.region}"
datacenter = "{o.datacenter}"
data_dir   = "{self.data_dir / "data"}"
bind_addr  = "127.0.0.1"
log_level  = "INFO"
ports {{
  http = {self.ports["http"]}
  rpc  = {self.ports["rpc"]}
  serf = {self.ports["serf"]}
}}
advertise {{
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}}
server {{
  enabled          = true
  bootstrap_expect = 1
  job_gc_threshold = "1h"
}}
client {{
  enabled   = true
  node_pool = "{o.node_pool}"
  servers   = ["127.0.0.1:{self.ports["rpc"]}"]
  gc_max_allocs = 500
}}
plugin "raw_exec" {{
  config {{
    enabled = true
  }}
}}
{o.extra_config}
"""

    def start(self, timeout: float = 60) -> LocalAgent:
        config_path = self.data_dir / "agent.hcl"
        config_path.write_text(self._config())
        env = dict(os.environ)
        env.update(self.options.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            [self.binary, "agent", "-config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def _get(self, path: str):
        with urllib.request.urlopen(self.address + path, timeout=5) as response:
            return json.load(response)

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until a leader is elected and this node is ready for allocations."""
        deadline = time.monotonic() + timeout
        last_error = "not started"
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"nomad agent exited early:\n{self.log_tail()}")
            try:
                if self._get("/v1/status/leader"):
                    nodes = self._get("/v1/nodes")
                    if any(
                        n["Status"] == "ready" and n["Drivers"].get("raw_exec", {}).get("Healthy")
                        for n in nodes
                    ):
                        return
                    last_error = "node not ready"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last_error = str(exc)
            time.sleep(0.2)
        raise RuntimeError(
            f"nomad agent not ready after {timeout}s ({last_error}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, cleanup: bool = True) -> None:
        """Stop the agent and every task process it started; remove its data dir."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            # Task executors run in the agent's session; make sure none survive it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None
        if cleanup:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self, timeout: float = 60) -> None:
        """Stop and start again on the same ports and data dir (state persists)."""
        self.stop(cleanup=False)
        self.start(timeout)

    def __enter__(self) -> LocalAgent:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
