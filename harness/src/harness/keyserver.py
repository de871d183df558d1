"""A controllable authorization server for remote keys (README, Remote keys): JWKS and discovery
documents.

It stands behind the Envoy cluster the filter fetches through (`dispatch_http_call`), answers by
path whatever the Host, counts every request per path, and lets a test switch what a path does
while Envoy runs:

    with KeyServer() as keys:
        keys.serve_jwks("/jwks", ["rsa-a"], cache_control="max-age=60")
        keys.serve_json("/.well-known/oauth-authorization-server/tenant", {...})
        keys.fail("/jwks", status=500)        # or keys.garbage / empty_jwks / slow / close ...
        keys.then("/jwks", Answer(delay=1.5, ...))   # one-shot answers, used before the standing one
        keys.count("/jwks")                   # how many requests reached that path
        keys.paths()                          # every path requested, in arrival order
        keys.cluster("keyserver")             # the Envoy cluster (STATIC, HTTP/1.1) pointing here
        keys.go_down()                        # stop listening: connection refused from now on

Paths with no behaviour answer 404. Every request is logged (time, path, Host) under a lock.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable

from . import tokens


@dataclass(frozen=True)
class Answer:
    """What one request to a path gets.

    `delay` seconds before answering (interrupted when the server stops); `hold`, when given,
    is an Event the answer waits for (at most `hold_timeout` seconds) before the delay;
    `close` drops the connection without any response (connection reset, from the client's
    side)."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    hold: threading.Event | None = None
    hold_timeout: float = 10.0
    close: bool = False


@dataclass(frozen=True)
class Seen:
    """One request the key server received."""

    at: float  # time.monotonic() when it arrived
    method: str
    path: str
    host: str | None
    answered_at: float | None = None  # filled in by `log()` copies once the answer is sent


def jwks(key_names: Iterable[str]) -> dict:
    """A JWK set of the fixture public keys `key_names` (kid = name)."""
    return {"keys": [tokens.public_jwk(name) for name in key_names]}


def json_answer(doc, *, status: int = 200, cache_control: str | None = None, delay: float = 0.0, **kw) -> Answer:
    headers = [("content-type", "application/json")]
    if cache_control is not None:
        headers.append(("cache-control", cache_control))
    return Answer(status=status, body=json.dumps(doc).encode(), headers=tuple(headers), delay=delay, **kw)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are two writes: with Nagle the body would wait for the peer's delayed ACK.
    disable_nagle_algorithm = True
    server: "_Server"

    def log_message(self, format, *args):  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.owner._connected(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._disconnected(self.connection)

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        index, answer = self.server.owner._arrive(self.command, self.path, self.headers.get("host"))
        stop = self.server.owner._stopping
        if answer.hold is not None:
            deadline = time.monotonic() + answer.hold_timeout
            while not answer.hold.is_set() and not stop.is_set() and time.monotonic() < deadline:
                answer.hold.wait(0.05)
        if answer.delay and stop.wait(answer.delay):
            self.close_connection = True
            return
        if answer.close:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.server.owner._answered(index)
            return
        try:
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        finally:
            self.server.owner._answered(index)

    do_GET = do_POST = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "KeyServer"


class KeyServer:
    """See the module docstring. Thread-safe; one instance per test keeps counts clean."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self._lock = threading.Lock()
        self._standing: dict[str, Answer] = {}
        self._queued: dict[str, deque[Answer]] = {}
        self._log: list[Seen] = []
        self._answered_at: dict[int, float] = {}
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._down = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "KeyServer":
        self._server = _Server((self.host, 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def go_down(self) -> None:
        """Stop listening and drop every open connection (Envoy may keep some alive): from now
        on, connecting to `port` is refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            self._down = True
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self._stopping.set()
        self.go_down()

    def __enter__(self) -> "KeyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def cluster(self, name: str = "keyserver", connect_timeout: str = "0.5s") -> dict:
        """A STATIC Envoy cluster named `name` sending plain HTTP/1.1 to this server."""
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": connect_timeout,
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": self.host, "port_value": self.port}}}}]}
                ],
            },
        }

    # -- behaviour -----------------------------------------------------------------------------

    def set(self, path: str, answer: Answer | None) -> None:
        """The standing answer of `path` (None: 404). One-shot answers queued by `then` go first."""
        with self._lock:
            if answer is None:
                self._standing.pop(path, None)
            else:
                self._standing[path] = answer

    def then(self, path: str, *answers: Answer) -> None:
        """Queue one-shot answers for the next requests to `path`, before the standing one."""
        with self._lock:
            self._queued.setdefault(path, deque()).extend(answers)

    def serve_jwks(self, path: str, key_names: Iterable[str], *, cache_control: str | None = None, delay: float = 0.0) -> None:
        self.set(path, json_answer(jwks(key_names), cache_control=cache_control, delay=delay))

    def serve_json(self, path: str, doc, **kw) -> None:
        self.set(path, json_answer(doc, **kw))

    def fail(self, path: str, status: int = 500) -> None:
        self.set(path, Answer(status=status, body=b'{"error":"server_error"}', headers=(("content-type", "application/json"),)))

    def garbage(self, path: str) -> None:
        self.set(path, Answer(body=b"<html>\x00\xff this is not JSON {", headers=(("content-type", "application/json"),)))

    def empty_jwks(self, path: str) -> None:
        self.serve_json(path, {"keys": []})

    def slow(self, path: str, delay: float, key_names: Iterable[str] = ("rsa-a",)) -> None:
        """A good JWKS, but only after `delay` seconds (longer than the fetch timeout)."""
        self.serve_jwks(path, key_names, delay=delay)

    def close(self, path: str) -> None:
        self.set(path, Answer(close=True))

    # -- inspection ----------------------------------------------------------------------------

    def _connected(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)
            down = self._down
        if down:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _disconnected(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _arrive(self, method: str, path: str, host: str | None) -> tuple[int, Answer]:
        with self._lock:
            self._log.append(Seen(time.monotonic(), method, path, host))
            queue = self._queued.get(path)
            if self._down:
                answer = Answer(close=True)
            elif queue:
                answer = queue.popleft()
            else:
                answer = self._standing.get(path) or Answer(status=404, body=b"not found")
            return len(self._log) - 1, answer

    def _answered(self, index: int) -> None:
        with self._lock:
            self._answered_at[index] = time.monotonic()

    def log(self) -> list[Seen]:
        """Every request so far, in arrival order (with the time its answer was sent, if it was)."""
        with self._lock:
            return [
                Seen(s.at, s.method, s.path, s.host, self._answered_at.get(i)) for i, s in enumerate(self._log)
            ]

    def paths(self) -> list[str]:
        return [s.path for s in self.log()]

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for s in self._log if s.path == path)

    def wait_for_count(self, path: str, at_least: int, timeout: float) -> int:
        """Poll until `path` was requested `at_least` times (or `timeout`); returns the count."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.count(path)
            if n >= at_least or time.monotonic() >= deadline:
                return n
            time.sleep(0.02)
