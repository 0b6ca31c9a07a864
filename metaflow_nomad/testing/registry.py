"""A private Docker registry for tests: TLS, a password, and an image Nomad must pull.

Production Nomad clients pull task images from a registry that wants credentials,
over TLS signed by the organisation's CA.  ``Registry`` runs Debian's
``docker-registry`` (Docker's distribution registry 2.x, installed by
``scripts/get_docker.sh registry``) the same way: HTTPS on a free loopback port with
a certificate from the test PKI (``pki.make_test_pki``), and htpasswd (bcrypt) basic
auth for one user with a random password.  Its storage, config and log live in one
temporary directory.

A Docker engine trusts a registry's CA only through ``/etc/docker/certs.d/<host:port>/
ca.crt``: dockerd reads no other directory (except rootless ones) and has no flag
for it, and ``--insecure-registry`` would test nothing about TLS.  So ``start()``
writes the CA there, under this registry's own ``127.0.0.1:<port>`` (no other
registry can have that name while this one holds the port), and ``stop()`` removes
it: that file is the only thing outside the temporary directory.

``push()`` logs an engine in (with a client config of the registry's own, not the
user's ``~/.docker``), pushes an image and removes the local tag, so that a task
using the reference makes Nomad pull it; ``manifest_pulls()`` reads the pulls from
the registry's access log.  For "registry down" faults: ``pause()``/``resume()``
(SIGSTOP: connections hang) and ``stop(cleanup=False)`` then ``start()`` (refused,
then back on the same port with the same images).
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from metaflow_nomad.testing.cleanup import kill_processes_under
from metaflow_nomad.testing.docker_engine import DockerEngine, DockerUnavailable, get_docker
from metaflow_nomad.testing.pki import AgentPki, make_test_pki
from metaflow_nomad.testing.ports import free_port
from metaflow_nomad.testing.processes import ServerProcess, stop_process

DOCKER_CERTS_D = Path("/etc/docker/certs.d")
# bcrypt's cost: the registry checks the password on every request of a push or pull,
# and on two busy cores cost 12 (the default) takes a noticeable part of a second.
BCRYPT_ROUNDS = 8


@dataclass(frozen=True)
class RegistryCredentials:
    """What a ``docker login`` or a Nomad docker task's ``auth {}`` block needs."""

    username: str
    password: str


def htpasswd_line(credentials: RegistryCredentials) -> str:
    """``user:bcrypt-hash``, the one password format the registry accepts."""
    import bcrypt

    salt = bcrypt.gensalt(rounds=BCRYPT_ROUNDS)
    hashed = bcrypt.hashpw(credentials.password.encode(), salt).decode()
    return f"{credentials.username}:{hashed}"


class Registry(ServerProcess):
    """A running ``docker-registry serve`` with TLS and htpasswd auth on loopback."""

    def __init__(
        self, pki: AgentPki | None = None, directory: Path | None = None, username: str = "mf-test"
    ) -> None:
        """``pki`` signs the registry's certificate (a new one of its own by default);
        ``directory`` holds everything (a new temporary directory by default)."""
        self.dir = Path(directory or tempfile.mkdtemp(prefix="mf-registry-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.credentials = RegistryCredentials(username, secrets.token_urlsafe(18))
        self.pki = pki
        self.process: subprocess.Popen | None = None
        # The certs.d directory start() made for this registry, and whether it made
        # certs.d itself (stop() removes only what start() made).
        self._trusted: Path | None = None
        self._made_certs_d = False

    @property
    def address(self) -> str:
        """``host:port``, the prefix of this registry's image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    @property
    def log_path(self) -> Path:
        return self.dir / "registry.log"

    @property
    def ca_file(self) -> Path:
        if self.pki is None:
            raise RuntimeError("the registry has no PKI before start()")
        return self.pki.ca_file

    def reference(self, repository: str, tag: str) -> str:
        """The image reference a task uses: ``127.0.0.1:<port>/<repository>:<tag>``."""
        return f"{self.address}/{repository}:{tag}"

    def start(self, timeout: float = 30) -> Registry:
        """Start (or, after ``stop(cleanup=False)``, restart) the registry and wait
        until it answers; on failure nothing is left running."""
        binary = get_docker("registry")
        config = self.dir / "config.yml"
        if not config.exists():
            config.write_text(self._config())
        self._trust()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [binary, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _config(self) -> str:
        """The registry's YAML config (written as JSON, which YAML reads as is)."""
        if self.pki is None:
            self.pki = make_test_pki(self.dir / "pki")
        cert, key = self.pki.issue("registry", ["localhost"])
        htpasswd = self.dir / "htpasswd"
        htpasswd.write_text(htpasswd_line(self.credentials) + "\n")
        htpasswd.chmod(0o600)
        config = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.dir / "storage")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.address,
                "secret": secrets.token_hex(16),
                "tls": {"certificate": str(cert), "key": str(key)},
            },
            "auth": {"htpasswd": {"realm": "metaflow-nomad-test", "path": str(htpasswd)}},
        }
        return json.dumps(config, indent=2) + "\n"

    def _trust(self) -> None:
        """Make every Docker engine on this host trust the registry's CA (certs.d)."""
        target = DOCKER_CERTS_D / self.address
        self._made_certs_d = self._made_certs_d or not DOCKER_CERTS_D.exists()
        try:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.ca_file, target / "ca.crt")
        except OSError as exc:
            raise DockerUnavailable(
                f"cannot install the registry's CA in {target} (dockerd reads it only "
                f"there; run as root): {exc}"
            ) from exc
        self._trusted = target

    def _wait_ready(self, timeout: float) -> None:
        """Until ``GET /v2/`` answers 401: TLS is up and the password is required."""
        deadline = time.monotonic() + timeout
        last_error = "not started"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise DockerUnavailable(f"docker-registry exited early:\n{self.log_tail()}")
            try:
                last_error = f"status {self.status()}"
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return
                last_error = f"status {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.1)
        raise DockerUnavailable(
            f"docker-registry not ready after {timeout}s ({last_error}):\n{self.log_tail()}"
        )

    def status(self, credentials: RegistryCredentials | None = None) -> int:
        """The status of ``GET /v2/`` (the registry's "are you there and who am I"),
        over TLS checked against the test CA; raises ``HTTPError`` for 4xx/5xx."""
        request = urllib.request.Request(self.url + "/v2/")
        if credentials:
            pair = f"{credentials.username}:{credentials.password}".encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def push(self, engine: DockerEngine, source: str, reference: str) -> str:
        """Push ``source`` (an image in ``engine``) as ``reference`` and remove the local
        tag, so that the engine has to pull ``reference`` to run it; return its digest."""
        docker_config = str(self.dir / "docker-config")
        engine.docker(
            "--config",
            docker_config,
            "login",
            "--username",
            self.credentials.username,
            "--password-stdin",
            self.address,
            stdin=self.credentials.password,
        )
        engine.docker("tag", source, reference)
        engine.docker("--config", docker_config, "push", reference, timeout=600)
        digest = engine.docker("image", "inspect", "-f", "{{index .RepoDigests 0}}", reference)
        engine.docker("rmi", reference)
        return digest.stdout.strip()

    def manifest_pulls(self, reference: str) -> list[str]:
        """Access-log lines of successful ``GET``s of a manifest of ``reference``'s
        repository: pulls (an engine ``HEAD``s the tag, then ``GET``s the manifest by
        digest; a push only ``HEAD``s and ``PUT``s manifests)."""
        repository = reference[len(self.address) + 1 :].rsplit(":", 1)[0]
        request = f'"GET /v2/{repository}/manifests/'
        try:
            log = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in log if request in line and '" 200 ' in line]

    def stop(self, cleanup: bool = True) -> None:
        """Stop the registry; with ``cleanup`` also remove its directory (images
        included) and the CA it installed.  Safe to call twice, and after a failed start."""
        if self.process is not None:
            stop_process(self.process, timeout=10)
            self.process = None
        if not cleanup:
            return
        kill_processes_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._trusted is not None:
            shutil.rmtree(self._trusted, ignore_errors=True)
            if self._made_certs_d:
                # Only once empty: another registry of the suite may have its CA there.
                with contextlib.suppress(OSError):
                    self._trusted.parent.rmdir()
            self._trusted = None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
