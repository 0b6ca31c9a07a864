"""One ``nomad agent`` process on loopback: its config, start, readiness wait, API,
log tail and stop, shared by every agent the suite runs.

``LocalAgent`` (local_agent.py) is a server and a client in one process; the
members of ``ProductionCluster`` (cluster.py) are server-only or client-only agents.
They differ in their ``server``/``client`` stanzas and in what "ready" means, so
those two are what a subclass supplies (``_role_config``, ``_ready``); ports, data
dir, the ACL and mTLS stanzas, the ACL bootstrap, the API calls and clean-up are
the same for all, here.
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
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.testing.cleanup import kill_processes_under, unmount_under
from metaflow_nomad.testing.pki import AgentPki
from metaflow_nomad.testing.ports import free_port
from metaflow_nomad.testing.processes import ServerProcess, stop_process

# A line of the agent's log proper, as opposed to its "==> ..." start-up messages.
_LOG_LINE = re.compile(r"^\s+\d{4}-\d\d-\d\dT")
STARTUP_MESSAGE_LINES = 20
# What a poll of an agent that is still starting may raise (HTTPError included).
NOT_YET = (urllib.error.URLError, OSError, ValueError)

Agent = TypeVar("Agent", bound="AgentProcess")


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
    # The agent's (and its node's) name; unique within a cluster.
    name: str = "mf-nomad-test"


class AgentProcess(ServerProcess):
    """A ``nomad agent`` with its own ports and data dir, started and stopped by us;
    ``pause()`` freezes the agent process only: its API hangs, its tasks carry on."""

    # Names the agent in errors ("nomad agent exited early: ...").
    label = "nomad agent"

    def __init__(self, binary: str, options: AgentOptions, data_dir: Path | None = None) -> None:
        """``data_dir`` (created if missing) holds the config, the log and Nomad's own
        ``data`` dir; by default a new temporary directory."""
        self.binary = binary
        self.options = options
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="mf-nomad-agent-"))
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.ports = {"http": free_port(), "rpc": free_port(), "serf": free_port()}
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "agent.log"
        self.management_token: str | None = None
        # Set by kill() until the next launch(): a waiter must not take the exit for a failure.
        self.killed = False
        # Process groups of earlier runs whose tasks were left running by restart().
        self._old_groups: list[int] = []
        # The bootstrap token's secret, chosen here so that a bootstrap whose answer
        # was lost can be retried (Nomad refuses a second bootstrap).
        self._bootstrap_secret = str(uuid.uuid4())

    @property
    def address(self) -> str:
        scheme = "https" if self.options.tls else "http"
        return f"{scheme}://127.0.0.1:{self.ports['http']}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

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
name       = "{o.name}"
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
{self._role_config()}
plugin "raw_exec" {{
  config {{
    enabled = true
  }}
}}
{self._secure_config()}
{o.docker_plugin}
{o.extra_config}
"""

    def _role_config(self) -> str:
        """The ``server`` and/or ``client`` stanzas: what this agent is."""
        raise NotImplementedError

    def _tls_files(self) -> tuple[Path, Path]:
        """This agent's certificate and key (for HTTPS, and for RPC in both directions)."""
        assert self.options.tls is not None
        return self.options.tls.server_cert, self.options.tls.server_key

    def _secure_config(self) -> str:
        parts = []
        if self.options.acl:
            parts.append("acl {\n  enabled = true\n}")
        pki = self.options.tls
        if pki:
            cert, key = self._tls_files()
            parts.append(
                f"""tls {{
  http                   = true
  rpc                    = true
  ca_file                = "{pki.ca_file}"
  cert_file              = "{cert}"
  key_file               = "{key}"
  verify_server_hostname = true
  verify_https_client    = true
}}"""
            )
        return "\n".join(parts)

    def launch(self) -> None:
        """Write the config and start the process; ``wait_ready`` says when it is usable."""
        config_path = self.data_dir / "agent.hcl"
        config_path.write_text(self._config())
        env = dict(os.environ)
        env.update(self.options.env)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "agent", "-config", str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.killed = False

    def start(self: Agent, timeout: float = 60) -> Agent:
        self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            # A caller whose start failed never reaches its stop(): leave nothing running.
            self.stop(cleanup=False)
            raise
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(self._ready, [self], timeout, self.label)

    def _ready(self) -> str | None:
        """None once the agent is usable, else what it still waits for."""
        raise NotImplementedError

    def raise_if_exited(self) -> None:
        """Fail a wait at once when the agent died on its own (not by ``kill()``)."""
        if self.process is not None and not self.killed and self.process.poll() is not None:
            raise RuntimeError(f"{self.label} exited early:\n{self.log_tail()}")

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

    def bootstrap_acl(self) -> str:
        """``POST /v1/acl/bootstrap`` once per cluster; return the management token.

        The token's secret is ours, so a retry after an answer that never came
        finds the bootstrap done and checks that the secret works.
        """
        if self.management_token:
            return self.management_token
        secret = self._bootstrap_secret
        try:
            self.api("POST", "/v1/acl/bootstrap", {"BootstrapSecret": secret})
        except urllib.error.HTTPError as exc:
            if exc.code != 400:
                raise
            self.api("GET", "/v1/acl/token/self", token=secret)  # 403 if not ours
        self.management_token = secret
        return secret

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

    def kill(self) -> None:
        """SIGKILL the agent and its process group (task executors, log shippers), as
        a crash would; tasks in sessions of their own survive (see ``stop``)."""
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.killed = True

    def stop(self, cleanup: bool = True, kill_tasks: bool = True) -> None:
        """Stop the agent; unless ``kill_tasks`` is False, every task process too.

        ``cleanup`` removes the data dir.  Task executors run in the agent's process
        group, so they are killed with it; a restart that should let tasks survive
        (as a real client restart does) leaves them and kills them at the final stop.
        """
        if self.process:
            stop_process(self.process, timeout=15, sig=signal.SIGINT)
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


def wait_until(
    check: Callable[[], str | None], agents: Sequence[AgentProcess], timeout: float, what: str
) -> None:
    """Poll ``check`` (None: done; else what is missing) until done or ``timeout``;
    fail at once, with its log, if one of ``agents`` exits on its own."""
    deadline = time.monotonic() + timeout
    last_error = "not started"
    while time.monotonic() < deadline:
        for agent in agents:
            agent.raise_if_exited()
        try:
            missing = check()
            if missing is None:
                return
            last_error = missing
        except NOT_YET as exc:
            last_error = str(exc)
        time.sleep(0.2)
    if len(agents) == 1:
        logs = agents[0].log_tail()
    else:
        logs = "\n".join(f"--- {a.label} ({a.log_path}):\n{a.log_tail(15)}" for a in agents)
    raise RuntimeError(f"{what} not ready after {timeout}s ({last_error}):\n{logs}")
