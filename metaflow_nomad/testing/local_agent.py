"""Start and stop a real single-node Nomad agent on loopback.

Used by the test suite (pytest fixtures), the demo and the benchmarks.  The agent
is a server and a client in one process, with raw_exec enabled, on free ports,
with a temporary data dir (kept across ``restart()``).  ``AgentOptions`` selects
the secure variants production clusters run: ACLs (bootstrapped through the API,
with a management token and narrow per-namespace tokens) and mutual TLS
(``verify_https_client``) with a throw-away PKI from ``make_test_pki``.  The
process machinery is shared with the multi-agent test cluster (agent_process.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from metaflow_nomad.testing.agent_process import AgentOptions, AgentProcess

REPO_ROOT = Path(__file__).resolve().parents[2]


def interpreter_path() -> str:
    """PATH with this interpreter first: raw_exec tasks inherit the agent's PATH, so
    tasks run with the same Python and packages as the launcher."""
    return os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


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


class LocalAgent(AgentProcess):
    """A running ``nomad agent`` (server and client) with its own ports and data dir."""

    def __init__(self, binary: str | None = None, options: AgentOptions | None = None):
        super().__init__(binary or find_nomad_binary(), options or AgentOptions())

    def _role_config(self) -> str:
        return f"""server {{
  enabled          = true
  bootstrap_expect = 1
  job_gc_threshold = "1h"
}}
client {{
  enabled   = true
  node_pool = "{self.options.node_pool}"
  servers   = ["127.0.0.1:{self.ports["rpc"]}"]
  gc_max_allocs = 500
}}"""

    def _ready(self) -> str | None:
        """A leader is elected and this node is ready for allocations."""
        if not self._get("/v1/status/leader"):
            return "no leader"
        if self.options.acl:
            self.bootstrap_acl()
        nodes = self._get("/v1/nodes")
        if any(
            n["Status"] == "ready" and n["Drivers"].get("raw_exec", {}).get("Healthy")
            for n in nodes
        ):
            return None
        return "node not ready"

    def __enter__(self) -> LocalAgent:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
