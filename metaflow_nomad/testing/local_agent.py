"""Start and stop a real single-node Nomad agent on loopback.

Used by the test suite (pytest fixtures), the demo and the benchmarks.  The agent
is a server and a client in one process, with raw_exec enabled, on free ports,
with a temporary data dir (kept across ``restart()``).  ``AgentOptions`` selects
the secure variants production clusters run: ACLs (bootstrapped through the API,
with a management token and narrow per-namespace tokens) and mutual TLS
(``verify_https_client``) with a throw-away PKI from ``make_test_pki``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.testing.cleanup import kill_processes_under, unmount_under
from metaflow_nomad.testing.pki import AgentPki
from metaflow_nomad.testing.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

# A line of the agent's log proper, as opposed to its "==> ..." start-up messages.
_LOG_LINE = re.compile(r"^\s+\d{4}-\d\d-\d\dT")
STARTUP_MESSAGE_LINES = 20


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


@dataclass
class AgentOptions:
    datacenter: str = "dc1"
    region: str = "global"
    node_pool: str = "default"
    extra_config: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # ACLs on; start() bootstraps them and keeps the management token.
    acl: bool = False
    # HTTP and RPC over TLS, with client certificates required on HTTPS.
    tls: AgentPki | None = None
    # The docker plugin's config (DockerEngine.nomad_plugin_config()): the docker driver
    # pointed at a private engine.  Without it the node has no docker driver.
    docker_plugin: str = ""


class LocalAgent:
    """A running ``nomad agent`` with its own ports and data dir."""

    def __init__(self, binary: str | None = None, options: AgentOptions | None = None):
        self.binary = binary or find_nomad_binary()
        self.options = options or AgentOptions()
        self.data_dir = Path(tempfile.mkdtemp(prefix="mf-nomad-agent-"))
        self.ports = {"http": free_port(), "rpc": free_port(), "serf": free_port()}
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "agent.log"
        self.management_token: str | None = None
        # Process groups of earlier runs whose tasks were left running by restart().
        self._old_groups: list[int] = []

    @property
    def address(self) -> str:
        scheme = "https" if self.options.tls else "http"
        return f"{scheme}://127.0.0.1:{self.ports['http']}"

    def connection_config(self, token: str | None = None) -> dict[str, str]:
        """What reaches this agent (management token by default), by config name.

        The one source of connection material for tests: ``connection_env`` gives
        it to a flow, ``connection_settings`` to a client in the test itself.
        """
        config = {"NOMAD_ADDRESS": self.address}
        token = token or self.management_token
        if token:
            config["NOMAD_TOKEN"] = token
        pki = self.options.tls
        if pki:
            config.update(
                {
                    "NOMAD_CACERT": str(pki.ca_file),
                    "NOMAD_CLIENT_CERT": str(pki.client_cert),
                    "NOMAD_CLIENT_KEY": str(pki.client_key),
                }
            )
        return config

    def connection_env(self, token: str | None = None) -> dict[str, str]:
        """``METAFLOW_NOMAD_*`` variables that reach this agent."""
        return {"METAFLOW_" + k: v for k, v in self.connection_config(token).items()}

    def connection_settings(self, token: str | None = None) -> ConnectionSettings:
        """Client settings that reach this agent."""
        return ConnectionSettings.from_config(self.connection_config(token))

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
{self._secure_config()}
{o.docker_plugin}
{o.extra_config}
"""

    def _secure_config(self) -> str:
        parts = []
        if self.options.acl:
            parts.append("acl {\n  enabled = true\n}")
        pki = self.options.tls
        if pki:
            parts.append(
                f"""tls {{
  http                   = true
  rpc                    = true
  ca_file                = "{pki.ca_file}"
  cert_file              = "{pki.server_cert}"
  key_file               = "{pki.server_key}"
  verify_server_hostname = true
  verify_https_client    = true
}}"""
            )
        return "\n".join(parts)

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
        try:
            self.wait_ready(timeout)
        except BaseException:
            # A caller whose start failed never reaches its stop(): leave nothing running.
            self.stop(cleanup=False)
            raise
        return self

    def _ssl_context(self) -> ssl.SSLContext | None:
        pki = self.options.tls
        if not pki:
            return None
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        return context

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        """One call to this agent's HTTP API (management token and client cert by default)."""
        raw = self._request(method, path, body, token)
        return json.loads(raw) if raw else None

    def api_text(self, path: str, token: str | None = None) -> str:
        """A GET whose answer is not JSON (e.g. task logs with ``plain=true``)."""
        return self._request("GET", path, None, token).decode("utf-8", errors="replace")

    def _request(self, method: str, path: str, body: dict | None, token: str | None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.address + path, data=data, method=method)
        token = token or self.management_token
        if token:
            request.add_header("X-Nomad-Token", token)
        with urllib.request.urlopen(request, timeout=5, context=self._ssl_context()) as response:
            return response.read()

    def _get(self, path: str):
        return self.api("GET", path)

    def _bootstrap_acl(self) -> None:
        """``POST /v1/acl/bootstrap`` once per data dir; the token survives restarts."""
        if self.management_token:
            return
        self.management_token = self.api("POST", "/v1/acl/bootstrap", {})["SecretID"]

    def create_namespace_token(
        self, namespace: str, policy: str = "write", name: str | None = None
    ) -> str:
        """Create ``namespace`` and a client token whose only right is ``policy`` in it."""
        if not self.management_token:
            raise RuntimeError("create_namespace_token needs an agent with acl=True")
        name = name or f"{namespace}-{policy}"
        self.api("POST", f"/v1/namespace/{namespace}", {"Name": namespace})
        rules = f'namespace "{namespace}" {{\n  policy = "{policy}"\n}}\n'
        self.api("POST", f"/v1/acl/policy/{name}", {"Name": name, "Rules": rules})
        token = self.api(
            "POST", "/v1/acl/token", {"Name": name, "Type": "client", "Policies": [name]}
        )
        return token["SecretID"]

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until a leader is elected and this node is ready for allocations."""
        deadline = time.monotonic() + timeout
        last_error = "not started"
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"nomad agent exited early:\n{self.log_tail()}")
            try:
                if self._get("/v1/status/leader"):
                    if self.options.acl:
                        self._bootstrap_acl()
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
        """The agent's start-up messages, then the last ``lines`` log lines.

        Nomad prints why it gave up ("Error starting http server: ...") among its
        start-up messages, before it flushes the log lines it held back until
        start-up, so a plain tail of a failed start shows only the shutdown.
        """
        try:
            log = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        head = list(itertools.takewhile(lambda line: not _LOG_LINE.match(line), log[:-lines]))
        return "\n".join(head[:STARTUP_MESSAGE_LINES] + log[-lines:])

    def pause(self) -> None:
        """SIGSTOP the agent process only: the API hangs, running tasks carry on."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, cleanup: bool = True, kill_tasks: bool = True) -> None:
        """Stop the agent; unless ``kill_tasks`` is False, every task process too.

        ``cleanup`` removes the data dir.  Task executors run in the agent's process
        group, so they are killed with it; a restart that should let tasks survive
        (as a real client restart does) leaves them and kills them at the final stop.
        """
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self._old_groups.append(self.process.pid)
        if kill_tasks:
            for group in self._old_groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            self._old_groups = []
            kill_processes_under(self.data_dir)
        self.process = None
        if cleanup:
            unmount_under(self.data_dir)
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self, timeout: float = 60, kill_tasks: bool = True) -> None:
        """Stop and start again on the same ports and data dir (state persists).

        With ``kill_tasks=False`` running tasks outlive the agent, and the restarted
        client must reattach to them.
        """
        self.stop(cleanup=False, kill_tasks=kill_tasks)
        self.start(timeout)

    def __enter__(self) -> LocalAgent:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
