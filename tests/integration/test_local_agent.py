"""The suite's own agent fixture says why an agent could not start."""

from __future__ import annotations

import socket

import pytest

from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent
from metaflow_nomad.testing.pki import make_test_pki

pytestmark = pytest.mark.integration


def test_an_agent_whose_http_port_is_taken_reports_the_bind_error_and_leaves_nothing(tmp_path):
    """The ACL+mTLS agent logs more than a tail's worth after the reason it gave up."""
    agent = LocalAgent(options=AgentOptions(acl=True, tls=make_test_pki(tmp_path)))
    try:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", agent.ports["http"]))
            squatter.listen()
            with pytest.raises(RuntimeError) as failure:
                agent.start(timeout=30)
        message = str(failure.value)
        assert "nomad agent exited early" in message
        assert "Error starting http server" in message
        assert "address already in use" in message
        assert agent.process is None
    finally:
        agent.stop()
    assert not agent.data_dir.exists()
