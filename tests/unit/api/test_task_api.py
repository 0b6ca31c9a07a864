"""The client over a Unix socket (Nomad's Task API), against a real HTTP server on one."""

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.connection import ConnectionSettings


class _Handler(BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("X-Nomad-Token")))
        body = json.dumps("127.0.0.1:4647").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _UnixHTTPServer(socketserver.UnixStreamServer):
    def get_request(self):
        request, _ = super().get_request()
        return request, ("local", 0)


def test_requests_go_to_the_socket_with_the_identity_as_token(tmp_path):
    path = str(tmp_path / "api.sock")
    server = _UnixHTTPServer(path, _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = NomadClient(ConnectionSettings(address=f"unix://{path}", token="jwt-abc"))
        assert client.leader() == "127.0.0.1:4647"
        assert client.leader() == "127.0.0.1:4647"
    finally:
        server.shutdown()
        server.server_close()
    assert _Handler.seen == [("/v1/status/leader", "jwt-abc")] * 2
