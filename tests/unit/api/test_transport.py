"""The standard-library transport against real HTTP servers on loopback: what it
sends, what it raises, and that it reuses a connection and survives one the
server closed while it was idle."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.transport import HttpError, NoAnswer, Transport
from metaflow_nomad.testing.ports import free_port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.seen.append(
            (self.path, self.headers.get("X-Nomad-Token"), self.client_address[1])
        )
        status = 404 if "missing" in self.path else 200
        body = json.dumps({"path": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        self.server.seen.append((self.path, json.loads(body), self.client_address[1]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.send_header("X-Nomad-Index", "42")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _transport(server, **settings) -> Transport:
    address = f"http://127.0.0.1:{server.server_address[1]}"
    return Transport(ConnectionSettings(address=address, **settings), timeout=5)


def test_token_namespace_and_region_go_where_nomad_reads_them(server):
    transport = _transport(server, token="s3cr3t", namespace="team-a", region="eu")
    transport.request("get", "v1/jobs", params={"prefix": "mf"})
    transport.request("get", "v1/status/leader")
    transport.request("get", "v1/jobs", params={"namespace": "other"})
    paths = [(path, token) for path, token, _ in server.seen]
    assert paths == [
        ("/v1/jobs?prefix=mf&namespace=team-a&region=eu", "s3cr3t"),
        ("/v1/status/leader?region=eu", "s3cr3t"),
        ("/v1/jobs?namespace=other&region=eu", "s3cr3t"),
    ]


def test_a_body_and_headers_round_trip(server):
    response = _transport(server).request("post", "v1/jobs", json={"Job": {"ID": "x"}})
    assert response.json() == {} and response.headers["X-Nomad-Index"] == "42"
    assert server.seen[0][1] == {"Job": {"ID": "x"}}


def test_connections_are_reused_and_one_closed_while_idle_is_replaced(server):
    transport = _transport(server)
    transport.request("get", "v1/a")
    transport.request("get", "v1/b")
    first, second = (port for _, _, port in server.seen)
    assert first == second
    for connection in transport._idle:
        # The connection breaks while it sits idle, as when the server closes it.
        connection.sock.shutdown(2)
    assert transport.request("get", "v1/c").json() == {"path": "/v1/c"}
    assert server.seen[-1][2] != first


def test_an_error_status_and_no_answer_are_told_apart(server):
    transport = _transport(server)
    with pytest.raises(HttpError) as error:
        transport.request("get", "v1/job/missing")
    assert error.value.response.status_code == 404
    closed = Transport(ConnectionSettings(address=f"http://127.0.0.1:{free_port()}"), 5)
    with pytest.raises(NoAnswer) as info:
        closed.request("get", "v1/status/leader")
    assert "Connection refused" in str(info.value) and not info.value.tls
