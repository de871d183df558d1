"""An echo upstream that records every request reaching it.

It stands where the MCP server would be: whatever it records is what got past the filter.
Tests tag each request with a unique `x-test-id` header and then ask `requests_with_test_id`
to prove that a denied request never arrived, or to see exactly what an allowed one carried.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TEST_ID_HEADER = "x-test-id"


class HeaderList:
    """Lookup over a `headers` list of `(lowercased name, value)` pairs."""

    headers: list[tuple[str, str]]

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def header(self, name: str) -> str | None:
        """The first value of header `name`, or None."""
        values = self.header_values(name)
        return values[0] if values else None


@dataclass(frozen=True)
class RecordedRequest(HeaderList):
    """One request as the upstream received it (header names lowercased, in arrival order)."""

    method: str
    path: str  # including the query string, exactly as on the request line
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)  # after a chunked body's last chunk

    def trailer_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.trailers if key == name]

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "path": self.path,
            "headers": [list(pair) for pair in self.headers],
            "body": self.body.decode("utf-8", "replace"),
            "trailers": [list(pair) for pair in self.trailers],
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def _read_body(self) -> tuple[bytes, list[tuple[str, str]]]:
        """The body and, after a chunked one, its trailer fields (RFC 9112 §7.1.2)."""
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            chunks, trailers = [], []
            while True:
                size_line = self.rfile.readline().split(b";", 1)[0].strip()
                size = int(size_line or b"0", 16)
                if size == 0:
                    while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                        name, _, value = line.decode("latin-1").partition(":")
                        trailers.append((name.strip().lower(), value.strip()))
                    return b"".join(chunks), trailers
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return (self.rfile.read(length) if length else b""), []

    def _handle(self) -> None:
        body, trailers = self._read_body()
        recorded = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=[(key.lower(), value) for key, value in self.headers.items()],
            body=body,
            trailers=trailers,
        )
        self.server.record(recorded)
        payload = json.dumps(recorded.to_json()).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address):
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.recorded: list[RecordedRequest] = []

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.recorded.append(request)


class EchoUpstream:
    """HTTP/1.1 echo server on 127.0.0.1 (port chosen by the OS); a context manager.

    Answers every request 200 `application/json` describing what it got:
    `{"method", "path", "headers": [[name, value], ...], "body", "trailers": [[name, value], ...]}`.
    """

    def __init__(self, host: str = "127.0.0.1"):
        self._server = _Server((host, 0))
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> "EchoUpstream":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="echo-upstream", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "EchoUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order (a copy)."""
        with self._server.lock:
            return list(self._server.recorded)

    def requests_with_test_id(self, test_id: str) -> list[RecordedRequest]:
        """The requests whose `x-test-id` header contains `test_id`."""
        return [r for r in self.requests if any(test_id in v for v in r.header_values(TEST_ID_HEADER))]

    def clear(self) -> None:
        with self._server.lock:
            self._server.recorded.clear()
