"""Exact requests on the wire, and the parsing needed to judge the answers.

`Client` sends each request on a fresh HTTP/1.1 connection, so the path goes out byte for byte
(`//mcp`, `/%6Dcp` are not normalized) and repeated headers really repeat. It tags every
request with a unique `x-test-id` and, given the echo upstream, returns what reached the
upstream with that id. `Client.request` goes through `http.client`; `Client.raw_request` writes
the request itself on a socket, for what `http.client` will not send: a chunked body written
chunk by chunk with pauses and trailer fields after the last chunk (RFC 9112 §7.1), headers
then a pause then the body, headers announcing a body that never comes, header values as raw
bytes. Both return a `Reply`.

`parse_www_authenticate` implements the RFC 7235 §4.1 / §2.1 grammar (challenges of
`auth-scheme [ token68 / #auth-param ]`, params `name=token` or `name="quoted \\" string"`),
keeping parameter order.
"""
from __future__ import annotations

import http.client
import json
import select
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .upstream import TEST_ID_HEADER, EchoUpstream, HeaderList, RecordedRequest

# ------------------------------------------------------------------------------------------
# WWW-Authenticate (RFC 7235)

_TCHAR = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68_EXTRA = set("-._~+/")


@dataclass
class Challenge:
    """One challenge: its scheme, its auth-params in order (names lowercased), or a token68."""

    scheme: str
    params: list[tuple[str, str]] = field(default_factory=list)
    token68: str | None = None

    def param_names(self) -> list[str]:
        return [name for name, _ in self.params]

    def get(self, name: str) -> str | None:
        values = [value for key, value in self.params if key == name.lower()]
        if len(values) > 1:
            raise ValueError(f"auth-param {name!r} repeated in challenge: {self.params}")
        return values[0] if values else None

    def as_dict(self) -> dict[str, str]:
        return dict(self.params)


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def eof(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1

    def token(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in _TCHAR:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted_string(self) -> str:
        if self.peek() != '"':
            raise ValueError(f"expected '\"' at {self.pos} in {self.text!r}")
        self.pos += 1
        out = []
        while True:
            ch = self.peek()
            if not ch:
                raise ValueError(f"unterminated quoted-string in {self.text!r}")
            self.pos += 1
            if ch == '"':
                return "".join(out)
            if ch == "\\":
                escaped = self.peek()
                if not escaped:
                    raise ValueError(f"dangling backslash in {self.text!r}")
                self.pos += 1
                out.append(escaped)
            else:
                out.append(ch)

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise ValueError(f"expected {ch!r} at {self.pos} in {self.text!r}")
        self.pos += 1

    def skip_commas(self) -> int:
        """Skip OWS and empty list elements; returns how many commas were passed."""
        commas = 0
        while True:
            self.skip_ows()
            if self.peek() == ",":
                self.pos += 1
                commas += 1
            else:
                return commas

    def lookahead_is_param(self) -> bool:
        """At a token: is it `name =` (an auth-param) rather than a new challenge's scheme?"""
        saved = self.pos
        try:
            if not self.token():
                return False
            self.skip_ows()
            if self.peek() != "=":
                return False
            self.pos += 1
            self.skip_ows()
            return self.peek() == '"' or (self.peek() != "=" and self.peek() in _TCHAR)
        finally:
            self.pos = saved


def parse_www_authenticate(value: str | Iterable[str]) -> list[Challenge]:
    """Every challenge in one `WWW-Authenticate` value (or several values, joined).

    Raises ValueError on anything outside the RFC 7235 grammar, so a malformed header fails the
    test that reads it.
    """
    if not isinstance(value, str):
        value = ", ".join(value)
    scan = _Scanner(value)
    challenges: list[Challenge] = []
    scan.skip_commas()
    while not scan.eof():
        scheme = scan.token()
        if not scheme:
            raise ValueError(f"expected auth-scheme at {scan.pos} in {value!r}")
        challenge = Challenge(scheme=scheme)
        challenges.append(challenge)
        if scan.peek() not in (" ", "\t", ",", ""):
            raise ValueError(f"unexpected {scan.peek()!r} after scheme in {value!r}")
        scan.skip_ows()
        if not scan.eof() and scan.peek() != "," and not scan.lookahead_is_param():
            begin = scan.pos
            while scan.peek() and (scan.peek().isalnum() or scan.peek() in _TOKEN68_EXTRA):
                scan.pos += 1
            while scan.peek() == "=":
                scan.pos += 1
            challenge.token68 = value[begin : scan.pos]
            scan.skip_ows()
            if not challenge.token68 or scan.peek() not in (",", ""):
                raise ValueError(f"bad token68 at {begin} in {value!r}")
            scan.skip_commas()
            continue
        # #auth-param
        while True:
            scan.skip_ows()
            if scan.eof() or not scan.lookahead_is_param():
                break
            name = scan.token().lower()
            scan.skip_ows()
            scan.expect("=")
            scan.skip_ows()
            param_value = scan.quoted_string() if scan.peek() == '"' else scan.token()
            challenge.params.append((name, param_value))
            scan.skip_ows()
            if scan.eof():
                break
            if scan.skip_commas() == 0:
                raise ValueError(f"expected ',' at {scan.pos} in {value!r}")
        scan.skip_commas()
    return challenges


def split_header_list(values: str | Iterable[str]) -> list[str]:
    """A comma-separated list header (`access-control-allow-headers`) as lowercased items."""
    if isinstance(values, str):
        values = [values]
    return [item.strip().lower() for value in values for item in value.split(",") if item.strip()]


# ------------------------------------------------------------------------------------------
# Requests


class Answer(HeaderList):
    """What HTTP/1.1 and HTTP/2 replies share: the JSON body, the challenges, what the upstream
    got (`status`, `headers`, `body`, `upstream_requests` are the subclass's fields)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    upstream_requests: list[RecordedRequest]

    def json(self) -> Any:
        return json.loads(self.body)

    def challenges(self) -> list[Challenge]:
        return parse_www_authenticate(self.header_values("www-authenticate"))

    def challenge(self) -> Challenge:
        """The single challenge of `WWW-Authenticate` (asserts there is exactly one)."""
        values = self.header_values("www-authenticate")
        assert values, f"no WWW-Authenticate in {self.status} response: {self.headers}"
        challenges = parse_www_authenticate(values)
        assert len(challenges) == 1, f"expected one challenge, got {challenges}"
        return challenges[0]

    @property
    def upstream_saw(self) -> bool:
        return bool(self.upstream_requests)


@dataclass
class Reply(Answer):
    """A response from the proxy, and what the upstream received for the same request."""

    status: int
    reason: str
    headers: list[tuple[str, str]]  # names lowercased, in order
    body: bytes
    test_id: str
    upstream_requests: list[RecordedRequest]
    elapsed: float = 0.0  # seconds from the first byte sent to the whole response read
    unsent_chunks: int = 0  # raw_request: pieces not sent because the answer came first

    def describe(self) -> str:
        return f"{self.status} {self.reason} headers={self.headers} body={self.body[:500]!r}"


Headers = Sequence[tuple[str, str | bytes]] | dict[str, str]


def _field_line(name: str, value: str | bytes) -> bytes:
    """`name: value` for a raw request; a str value as UTF-8, bytes verbatim."""
    return name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())


class Client:
    """Sends requests to the proxy at 127.0.0.1:`port`; one fresh connection per request."""

    def __init__(self, port: int, upstream: EchoUpstream | None = None, host: str = "127.0.0.1", timeout: float = 10.0):
        self.host = host
        self.port = port
        self.upstream = upstream
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: Headers = (),
        body: bytes | str | None = None,
        host_header: str | None = None,
    ) -> Reply:
        """Send `method path` verbatim. `token` adds `Authorization: Bearer <token>`; `headers`
        (pairs may repeat) are sent in order; `host_header` replaces the default Host."""
        header_list = list(headers.items()) if isinstance(headers, dict) else list(headers)
        if token is not None:
            header_list.append(("Authorization", f"Bearer {token}"))
        test_id = uuid.uuid4().hex
        started = time.monotonic()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", host_header or f"{self.host}:{self.port}")
            conn.putheader(TEST_ID_HEADER, test_id)
            for name, value in header_list:
                conn.putheader(name, value)
            payload = body.encode() if isinstance(body, str) else body
            if payload is not None:
                conn.putheader("Content-Length", str(len(payload)))
            conn.endheaders(payload)
            resp = conn.getresponse()
            data = resp.read()
            reply_headers = [(key.lower(), value) for key, value in resp.getheaders()]
            status, reason = resp.status, resp.reason
        finally:
            conn.close()
        return Reply(status, reason, reply_headers, data, test_id, self._seen(test_id), time.monotonic() - started)

    def _seen(self, test_id: str) -> list[RecordedRequest]:
        return self.upstream.requests_with_test_id(test_id) if self.upstream else []

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def raw_request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: Headers = (),
        body: bytes | str | None = None,
        pause: float = 0.0,
        chunks: Sequence[bytes] | None = None,
        delay: float = 0.02,
        trailers: Sequence[tuple[str, str | bytes]] = (),
        content_length: int | None = None,
        host_header: str | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """Write `method path HTTP/1.1` and the headers on a fresh socket (one write, TCP_NODELAY),
        then one of:

        - `chunks`: `Transfer-Encoding: chunked`, each chunk its own write, `delay` seconds
          before each; then (after `delay`) the last chunk `0`, the `trailers` fields, CRLF;
        - `body`: `Content-Length: len(body)`, then after `pause` seconds the body in one write;
        - `content_length` alone: that `Content-Length`, and no body ever (the connection
          stays open until the answer or `timeout`);
        - nothing: no body, no framing header.

        Framing headers given in `headers` replace the ones added (to send both
        `Content-Length` and `Transfer-Encoding`, or a wrong length). Before each write after
        the headers, sending stops if an answer is already readable (`unsent_chunks` counts
        the pieces left out, the last chunk included). `token` adds `Authorization: Bearer`;
        header values may be bytes, sent verbatim (CR, LF, NUL included). The answer is read
        with `http.client` (raises TimeoutError after `timeout`, default the client's;
        ConnectionError when the connection is closed without one)."""
        if body is not None and chunks is not None:
            raise ValueError("body or chunks, not both")
        header_list = list(headers.items()) if isinstance(headers, dict) else list(headers)
        if token is not None:
            header_list.append(("Authorization", f"Bearer {token}"))
        payload = body.encode() if isinstance(body, str) else body
        framing = {name.lower() for name, _ in header_list} & {"content-length", "transfer-encoding"}
        if not framing:
            if chunks is not None:
                header_list.append(("Transfer-Encoding", "chunked"))
            elif payload is not None:
                header_list.append(("Content-Length", str(len(payload) if content_length is None else content_length)))
            elif content_length is not None:
                header_list.append(("Content-Length", str(content_length)))
        test_id = uuid.uuid4().hex
        lines = [f"{method} {path} HTTP/1.1".encode(), f"Host: {host_header or f'{self.host}:{self.port}'}".encode(),
                 f"{TEST_ID_HEADER}: {test_id}".encode()]
        lines += [_field_line(name, value) for name, value in header_list]
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        # What follows the headers: (seconds to wait first, bytes).
        pieces: list[tuple[float, bytes]] = []
        if chunks is not None:
            pieces = [(delay, f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") for chunk in chunks]
            last = b"".join(_field_line(name, value) + b"\r\n" for name, value in trailers)
            pieces.append((delay, b"0\r\n" + last + b"\r\n"))
        elif payload is not None:
            pieces = [(pause, payload)]
        timeout = self.timeout if timeout is None else timeout
        started = time.monotonic()
        unsent = 0
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(head)
            for i, (wait, data) in enumerate(pieces):
                readable, _, _ = select.select([sock], [], [], wait)
                if readable:  # answered early (401, 413, ...): stop sending, read the answer
                    unsent = len(pieces) - i
                    break
                try:
                    sock.sendall(data)
                except (BrokenPipeError, ConnectionResetError):
                    unsent = len(pieces) - i
                    break
            sock.settimeout(max(0.001, started + timeout - time.monotonic()))
            resp = http.client.HTTPResponse(sock, method=method)
            try:
                resp.begin()
                data = resp.read()
            finally:
                resp.close()
        reply_headers = [(key.lower(), value) for key, value in resp.getheaders()]
        return Reply(resp.status, resp.reason, reply_headers, data, test_id, self._seen(test_id),
                     time.monotonic() - started, unsent)
