"""A local S3-compatible server (moto) and the settings that point Metaflow at it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from metaflow_nomad.testing.agent_process import AgentProcess
from metaflow_nomad.testing.local_agent import find_nomad_binary
from metaflow_nomad.testing.s3_server import BUCKET, S3Server, moto_s3

__all__ = [
    "BUCKET",
    "S3_TEMPLATES",
    "S3Server",
    "credentials_in_nomad_variables",
    "put_s3_credentials",
    "s3_server",
]

S3_TEMPLATES = Path(__file__).resolve().parents[1] / "s3_templates"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 on a free loopback port, with the test bucket created."""
    with moto_s3() as s3:
        yield s3


def put_s3_credentials(agent: AgentProcess, credentials: dict[str, str]) -> None:
    """`nomad var put nomad/jobs ...`: how an operator gives every job of a namespace
    its S3 credentials without writing them into a jobspec."""
    pairs = [f"{k}={v}" for k, v in credentials.items()]
    _nomad_var(agent, "put", "-force", "nomad/jobs", *pairs)


def _nomad_var(agent: AgentProcess, command: str, *args: str) -> None:
    subprocess.run(
        [find_nomad_binary(), "var", command, "-address", agent.address, *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )


@pytest.fixture()
def credentials_in_nomad_variables(nomad_agent, s3_server):
    """The S3 server's credentials in Nomad Variables, the way an operator would
    store them (``put_s3_credentials``), for the length of a test.

    Tasks rendered from ``S3_TEMPLATES`` read them into their environment.
    """
    put_s3_credentials(nomad_agent, s3_server.credentials)
    yield
    _nomad_var(nomad_agent, "purge", "nomad/jobs")
