"""A local S3-compatible server (moto) and the settings that point Metaflow at it."""

from __future__ import annotations

import logging
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metaflow_nomad.testing.local_agent import find_nomad_binary
from metaflow_nomad.testing.ports import free_port

BUCKET = "mf-nomad-test"
S3_TEMPLATES = Path(__file__).resolve().parents[1] / "s3_templates"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    @property
    def credentials(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def metaflow_env(self, prefix: str) -> dict[str, str]:
        """What a launcher needs for ``--datastore=s3`` against this server."""
        return {
            **self.credentials,
            "METAFLOW_DEFAULT_DATASTORE": "s3",
            "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{BUCKET}/{prefix}",
            "METAFLOW_S3_ENDPOINT_URL": self.endpoint,
            "METAFLOW_SKIP_INSTALL_DEPENDENCIES": "1",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 on a free loopback port, with the test bucket created."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # A random secret, so that finding it anywhere is meaningful.
    s3 = S3Server(
        endpoint=f"http://127.0.0.1:{port}",
        access_key="AKIA" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(30),
    )
    s3.client().create_bucket(Bucket=BUCKET)
    yield s3
    server.stop()


@pytest.fixture()
def credentials_in_nomad_variables(nomad_agent, s3_server):
    """`nomad var put nomad/jobs ...`, the way an operator would store them.

    Tasks rendered from ``S3_TEMPLATES`` read them into their environment.
    """
    pairs = [f"{k}={v}" for k, v in s3_server.credentials.items()]
    cli = [find_nomad_binary(), "var"]
    address = ["-address", nomad_agent.address]
    subprocess.run(
        [*cli, "put", *address, "-force", "nomad/jobs", *pairs],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    yield
    subprocess.run([*cli, "purge", *address, "nomad/jobs"], check=True, stdout=subprocess.DEVNULL)
