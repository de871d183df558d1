"""The bench's authorization server for opaque tokens: an RFC 7662 introspection endpoint that
answers `active: true` (for the resource, with `mcp:read`) for the tokens it was told are live and
`{"active": false}` for every other, counting the calls it answers.

It runs in a thread of the bench process, behind the Envoy cluster `introspection`:

    with IntrospectionStub(live={"tok"}) as stub:
        stub.cluster()     # the STATIC Envoy cluster pointing here
        stub.calls         # introspection calls answered so far
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from harness.envoy import static_cluster

PATH = "/introspect"
INACTIVE = b'{"active":false}'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Envoy's pool reuses connections
    # The head and the body go out in two writes: with Nagle, the body waits for Envoy's
    # delayed ACK of the head (40 ms a call).
    disable_nagle_algorithm = True
    server: "_Server"

    def log_message(self, format, *args):  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        form = parse_qs(self.rfile.read(length).decode("ascii", "replace"))
        token = (form.get("token") or [""])[0]
        stub = self.server.stub
        body = stub.active_answer if self.path == PATH and token in stub.live else INACTIVE
        status = 200 if self.path == PATH else 404
        with stub.lock:
            stub.calls += 1
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    stub: "IntrospectionStub"


class IntrospectionStub:
    def __init__(self, live: set[str], *, issuer: str, resource: str):
        self.live = live
        self.lock = threading.Lock()
        self.calls = 0
        self.active_answer = json.dumps({
            "active": True, "iss": issuer, "aud": resource, "scope": "mcp:read", "sub": "bench-user",
            "client_id": "bench-client", "token_type": "Bearer", "exp": int(time.time()) + 30 * 24 * 3600,
        }, separators=(",", ":")).encode()
        self._server: _Server | None = None
        self.port = 0

    def start(self) -> "IntrospectionStub":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "IntrospectionStub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def count(self) -> int:
        with self.lock:
            return self.calls

    def cluster(self, name: str = "introspection") -> dict:
        return static_cluster(name, "127.0.0.1", self.port)
