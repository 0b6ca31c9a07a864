"""A local S3-compatible server (moto) on loopback, for the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from metaflow_nomad.testing.ports import free_port

BUCKET = "mf-nomad-test"


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


@contextlib.contextmanager
def moto_s3() -> Iterator[S3Server]:
    """moto's S3 on a free loopback port, with ``BUCKET`` created; stopped on exit."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        # A random secret, so that finding it anywhere is meaningful.
        s3 = S3Server(
            endpoint=f"http://127.0.0.1:{port}",
            access_key="AKIA" + secrets.token_hex(8).upper(),
            secret_key=secrets.token_urlsafe(30),
        )
        s3.client().create_bucket(Bucket=BUCKET)
        yield s3
    finally:
        server.stop()
