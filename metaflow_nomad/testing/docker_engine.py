"""A private Docker engine for tests that run real ``docker`` driver tasks.

The machines the project runs on have Debian's ``docker.io`` (installed by
``scripts/get_docker.sh engine``) but no running daemon and no reachable registry.
``DockerEngine`` starts its own ``dockerd`` as a child process, with every piece of
state (data root, exec root, socket, pid file) in a temporary directory, so that it
cannot collide with another engine or leave the host changed: it creates no bridge,
no iptables rules and does not turn on IP forwarding.  Tasks therefore use
``network_mode = "host"``, which loopback tests need anyway to reach the Nomad API
and the S3 server.

The image (``python:3.11``, the name a user would write) is imported from a rootfs
tarball that ``scripts/get_docker.sh image`` builds once from Debian's packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from metaflow_nomad.testing.cleanup import kill_processes_under, unmount_under
from metaflow_nomad.testing.processes import stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
GET_DOCKER = REPO_ROOT / "scripts" / "get_docker.sh"
DEFAULT_TAGS = ("python:3.11", "metaflow-nomad-python:3.11")
# Metaflow's bootstrap runs ``python``: the image's venv must come first on PATH.
IMAGE_PATH = "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerUnavailable(RuntimeError):
    """Docker tasks cannot run here; the message says exactly what is missing."""


def get_docker(target: str) -> str:
    """Run ``get_docker.sh TARGET`` and return the path it prints."""
    if not GET_DOCKER.exists():
        raise DockerUnavailable(f"{GET_DOCKER} is missing")
    result = subprocess.run(["bash", str(GET_DOCKER), target], capture_output=True, text=True)
    if result.returncode != 0:
        raise DockerUnavailable(
            f"scripts/get_docker.sh {target} failed (exit {result.returncode}):\n"
            + "\n".join(result.stderr.strip().splitlines()[-20:])
        )
    return result.stdout.strip().splitlines()[-1]


class DockerEngine:
    """A ``dockerd`` of our own, on a private unix socket, stopped without a trace.

    The data root lives in the engine's temporary directory, so every ``start()``
    needs ``ensure_image()`` to import the cached rootfs again.  Measured on a
    2-core machine: the import of the 234 MB tarball takes about 4 s, the engine
    start 0.4 s.  A persistent data root would save those seconds at a price in
    fragility: only one daemon may use a data root at a time (concurrent test runs
    would block on its locks), and a daemon killed mid-run leaves its state to the
    next one.  So the data root is not cached; the tarball is.
    """

    def __init__(self, client: str | None = None) -> None:
        self.client = client or shutil.which("docker") or "docker"
        self.dir: Path | None = None
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None
        self._new_cgroups: list[Path] = []

    @property
    def endpoint(self) -> str:
        if self.dir is None:
            raise RuntimeError("DockerEngine is not started")
        return f"unix://{self.dir / 'docker.sock'}"

    @property
    def log_path(self) -> Path | None:
        return self.dir / "dockerd.log" if self.dir else None

    def start(self, timeout: float = 60) -> DockerEngine:
        """Install the engine if needed, start dockerd and wait until it answers."""
        dockerd = get_docker("engine")
        if not os.access(dockerd, os.X_OK):
            raise DockerUnavailable(f"no dockerd at {dockerd!r} after get_docker.sh engine")
        if shutil.which(self.client) is None:
            raise DockerUnavailable(f"no docker client {self.client!r} on PATH (package docker.io)")
        # Short path: the socket path must fit in a sockaddr_un (108 bytes).
        self.dir = Path(tempfile.mkdtemp(prefix="mf-docker-", dir="/tmp"))
        # An empty config file, so that a host /etc/docker/daemon.json changes nothing.
        (self.dir / "daemon.json").write_text("{}\n")
        args = [
            dockerd,
            f"--config-file={self.dir / 'daemon.json'}",
            f"--data-root={self.dir / 'data'}",
            f"--exec-root={self.dir / 'exec'}",
            f"--pidfile={self.dir / 'dockerd.pid'}",
            f"--host={self.endpoint}",
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
        ]
        self._new_cgroups = [p for p in _docker_cgroups() if not p.exists()]
        with open(self.dir / "dockerd.log", "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = self.process.pid
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()  # a caller whose start failed never reaches its stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise DockerUnavailable(f"dockerd exited early:\n{self.log_tail()}")
            if self.docker("info", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.2)
        raise DockerUnavailable(f"dockerd not answering after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def docker(
        self, *args: str, check: bool = True, timeout: float | None = 300, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run the docker client against this engine (output captured as text).

        ``stdin`` feeds a secret (``login --password-stdin``) without putting it on a
        command line.
        """
        result = subprocess.run(
            [self.client, "-H", self.endpoint, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def ensure_image(self, tags: tuple[str, ...] = DEFAULT_TAGS) -> str:
        """Make ``tags`` name the Python 3.11 + Metaflow image here; return its id.

        Tags should not be ``latest``: Nomad's docker driver always tries to pull those.
        """
        present = [self.docker("image", "inspect", "-f", "{{.Id}}", t, check=False) for t in tags]
        if all(r.returncode == 0 for r in present) and len({r.stdout for r in present}) == 1:
            return present[0].stdout.strip()
        tarball = get_docker("image")
        result = self.docker("import", "--change", f"ENV PATH={IMAGE_PATH}", tarball, check=False)
        if result.returncode != 0:
            raise DockerUnavailable(f"docker import {tarball} failed: {result.stderr.strip()}")
        image_id = result.stdout.strip()
        for tag in tags:
            self.docker("tag", image_id, tag)
        return image_id

    def running_containers(self) -> list[str]:
        return self.docker("ps", "-q").stdout.split()

    def nomad_plugin_config(self, volumes: bool = True, shared: bool = False) -> str:
        """The ``plugin "docker"`` block for a Nomad agent that uses this engine.

        Image GC is off: with Nomad's default, the imported image is deleted 3 minutes
        after its last task and cannot be pulled back.  Volumes are enabled for bind
        mounts (e.g. a local datastore mounted at the same path) unless ``volumes`` is
        False, Nomad's default.

        ``shared`` is for several Nomad clients on this one engine (a test cluster):
        each client's driver would otherwise remove the others' containers as
        "dangling" (not its own) after five minutes, and each container is labelled
        with its node's name and ID, so that the containers of a node that "dies" can
        be killed.
        """
        labels = '\n    extra_labels = ["node_name", "node_id"]' if shared else ""
        dangling = (
            "\n      dangling_containers {\n        enabled = false\n      }" if shared else ""
        )
        return f"""plugin "docker" {{
  config {{
    endpoint = "{self.endpoint}"{labels}
    gc {{
      image = false{dangling}
    }}
    volumes {{
      enabled = {str(volumes).lower()}
    }}
    allow_privileged = false
  }}
}}
"""

    def stop(self, timeout: float = 20) -> None:
        """Kill containers, stop dockerd, unmount what it left, remove its directory.

        Safe to call twice, and after a failed start.
        """
        if self.process and self.process.poll() is None:
            with contextlib.suppress(Exception):
                ids = self.docker("ps", "-q", timeout=20).stdout.split()
                if ids:
                    self.docker("kill", *ids, check=False, timeout=30)
            # On a timeout, SIGKILL to the group: dockerd's own containerd is in the
            # session we started it in.
            stop_process(self.process, timeout, group=True)
        self.process = None
        if self.dir is not None:
            # A dockerd that died on its own leaves its containerd and shims running,
            # and an nsfs mount (overlays too, if killed) under its roots.
            kill_processes_under(self.dir)
            unmount_under(self.dir)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        # The "docker" parent cgroups dockerd created; rmdir only succeeds when empty.
        for cgroup in self._new_cgroups:
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        self._new_cgroups = []

    def __enter__(self) -> DockerEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _docker_cgroups() -> list[Path]:
    """Where dockerd (cgroupfs driver) puts its containers' parent cgroup."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # cgroup v2
        return [base / "docker"]
    return [d / "docker" for d in base.iterdir() if d.is_dir() and not d.is_symlink()]


def start_engine_or_explain(say) -> DockerEngine | None:
    """A started engine with the image, or None after telling ``say`` why there is none
    (the demo and the benchmarks then fall back to raw_exec)."""
    engine = DockerEngine()
    try:
        engine.start()
        engine.ensure_image()
        return engine
    except DockerUnavailable as exc:
        engine.stop()
        say(f"Docker is not available here, so docker tasks are left out: {exc}")
        return None
