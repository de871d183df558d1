"""A minimal HTTP/2 cleartext (prior knowledge) client, for what HTTP/1.1 cannot send.

Envoy's HTTP/1 codec folds repeated `Authorization` lines into one comma-joined value, so only
HTTP/2 delivers two separate `authorization` fields to the filter. This client also sends what
a body check must survive: a body in several DATA frames with pauses between them, and request
trailers (a HEADERS frame after the DATA, RFC 9113 §8.1).

    h2c.request(port, "POST", "/mcp", [("authorization", "Bearer ...")], body=b"{...}")
    h2c.request(port, "POST", "/mcp", headers, chunks=[b'{"jsonrpc"', b':"2.0"}'], delay=0.05,
                trailers=[("x-trailer", "1")])
    with h2c.Connection(port) as conn:      # many streams, one after the other, on one connection
        conn.request("GET", "/mcp", headers)

Requests go out as HPACK literals without indexing (no Huffman, no dynamic table: RFC 7541
§6.2.2), names lowercased, values and `:method` exactly as given. Responses are decoded in full
(RFC 7541: static and dynamic table, Huffman), so `H2Reply.headers` holds every response field.
Flow control is honoured both ways (RFC 9113 §5.2), frames are split at the peer's maximum
frame size, and every request gets a unique `x-test-id`, as with `wire.Client`.
"""
from __future__ import annotations

import select
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Sequence

from .upstream import TEST_ID_HEADER, EchoUpstream, RecordedRequest
from .wire import Answer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY_FRAME, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x1, 0x2, 0x4, 0x5
DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384

Field = tuple[str, str | bytes]


class StreamReset(ConnectionError):
    """The peer reset the request's stream (RST_STREAM); `code` is its error code."""

    def __init__(self, code: int):
        super().__init__(f"stream reset by the peer: RST_STREAM error code {code}")
        self.code = code


class GoAway(ConnectionError):
    """The peer closed the connection (GOAWAY); `code` is its error code."""

    def __init__(self, code: int, debug: bytes):
        super().__init__(f"connection closed by the peer: GOAWAY error code {code} {debug!r}")
        self.code = code
        self.debug = debug


@dataclass
class H2Reply(Answer):
    """One response: `:status`, the other header fields (decoded, in order), the body, any
    trailers, the request's `x-test-id`, and (given the echo upstream) what reached it with that
    id. `unsent_chunks` counts the request's DATA chunks and trailers not sent because the
    response had already ended. Like `wire.Reply`: `header()`, `json()`, `challenge()`."""

    status: int
    body: bytes
    test_id: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    elapsed: float = 0.0
    unsent_chunks: int = 0
    upstream_requests: list[RecordedRequest] = field(default_factory=list)

    def describe(self) -> str:
        return f"h2 {self.status} headers={self.headers} body={self.body[:500]!r}"


# ------------------------------------------------------------------------------------------
# HPACK (RFC 7541)

#: Appendix A, the static table (index 1..61).
STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)

# Appendix B: the code length of each symbol 0..256 (EOS), one letter each ('A' = 5 bits). The
# code is canonical (codes of one length are consecutive, in symbol order), so the lengths
# alone give every code.
_HUFFMAN_LENGTHS = (
    "ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCCCCCCCCCCCCCCCCCCCCDCDIOIJ"
    "BKABABABBBACCBBBABCBAABCCCCCKGJIXPRPPRRRSRSSSSSTSTTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQSRSSPRRRSRR"
    "SVVPORSRUVVVWWVTUOQVWWVWTQQVVXWWWPTPQRQQSRRUUTTVSVWVVWWWWWXWWWWWVZ"
)
EOS = 256


def _huffman_codes() -> dict[tuple[int, int], int]:
    """{(length, code): symbol}, built canonically from `_HUFFMAN_LENGTHS`."""
    lengths = [ord(letter) - ord("A") + 5 for letter in _HUFFMAN_LENGTHS]
    assert len(lengths) == EOS + 1
    table, code, previous = {}, -1, lengths and min(lengths)
    for symbol in sorted(range(EOS + 1), key=lambda s: (lengths[s], s)):
        code = (code + 1) << (lengths[symbol] - previous)
        previous = lengths[symbol]
        table[(previous, code)] = symbol
    return table


_HUFFMAN = _huffman_codes()
_HUFFMAN_ENCODE = {symbol: (length, code) for (length, code), symbol in _HUFFMAN.items()}


def huffman_decode(data: bytes) -> bytes:
    """RFC 7541 §5.2: a Huffman-coded string; raises ValueError on EOS or bad padding."""
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = (code << 1) | ((byte >> shift) & 1)
            length += 1
            symbol = _HUFFMAN.get((length, code))
            if symbol is not None:
                if symbol == EOS:
                    raise ValueError("EOS inside a Huffman-coded string")
                out.append(symbol)
                code = length = 0
            elif length > 30:
                raise ValueError("not a Huffman code")
    if length > 7 or code != (1 << length) - 1:
        raise ValueError("Huffman padding is not a prefix of EOS")
    return bytes(out)


def huffman_encode(data: bytes) -> bytes:
    """RFC 7541 §5.2 the other way (for tests of the decoder)."""
    bits = length = 0
    for byte in data:
        size, code = _HUFFMAN_ENCODE[byte]
        bits, length = (bits << size) | code, length + size
    pad = -length % 8
    bits, length = (bits << pad) | ((1 << pad) - 1), length + pad
    return bits.to_bytes(length // 8, "big")


def _int(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
    """RFC 7541 §5.1 integer with an N-bit prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value % 128) + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _read_int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


def _literal(name: str | bytes, value: str | bytes) -> bytes:
    """Literal header field without indexing, new name (RFC 7541 §6.2.2), no Huffman. A str is
    sent as UTF-8, bytes verbatim."""
    name_b, value_b = _bytes(name), _bytes(value)
    return b"\x00" + _int(len(name_b), 7) + name_b + _int(len(value_b), 7) + value_b


def encode_headers(fields: Sequence[Field]) -> bytes:
    """A header block of literals (what this client sends)."""
    return b"".join(_literal(name, value) for name, value in fields)


class Decoder:
    """An HPACK decoder with its dynamic table: one per connection, fed every header block in
    the order they arrive (RFC 7541 §2.2)."""

    def __init__(self, max_table_size: int = 4096):
        self.max_table_size = max_table_size  # what we allowed in SETTINGS_HEADER_TABLE_SIZE
        self.table_size = max_table_size
        self.dynamic: list[tuple[str, str]] = []  # newest first

    def _size(self) -> int:
        return sum(len(n.encode()) + len(v.encode()) + 32 for n, v in self.dynamic)

    def _evict(self) -> None:
        while self.dynamic and self._size() > self.table_size:
            self.dynamic.pop()

    def _entry(self, index: int) -> tuple[str, str]:
        if index <= 0:
            raise ValueError("HPACK index 0")
        if index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        if index - len(STATIC_TABLE) > len(self.dynamic):
            raise ValueError(f"HPACK index {index} beyond the dynamic table")
        return self.dynamic[index - len(STATIC_TABLE) - 1]

    @staticmethod
    def _string(block: bytes, pos: int) -> tuple[str, int]:
        huffman = bool(block[pos] & 0x80)
        length, pos = _read_int(block, pos, 7)
        raw = block[pos : pos + length]
        if len(raw) != length:
            raise ValueError("HPACK string runs past the header block")
        return (huffman_decode(raw) if huffman else raw).decode("latin-1"), pos + length

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        fields: list[tuple[str, str]] = []
        pos = 0
        while pos < len(block):
            first = block[pos]
            if first & 0x80:  # RFC 7541 §6.1 indexed
                index, pos = _read_int(block, pos, 7)
                fields.append(self._entry(index))
            elif first & 0xE0 == 0x20:  # RFC 7541 §6.3 dynamic table size update
                size, pos = _read_int(block, pos, 5)
                if size > self.max_table_size:
                    raise ValueError(f"table size update to {size} > {self.max_table_size}")
                self.table_size = size
                self._evict()
            else:  # RFC 7541 §6.2 literals: with incremental indexing (01), without (0000), never (0001)
                indexing = bool(first & 0x40)
                index, pos = _read_int(block, pos, 6 if indexing else 4)
                if index:
                    name = self._entry(index)[0]
                else:
                    name, pos = self._string(block, pos)
                value, pos = self._string(block, pos)
                fields.append((name, value))
                if indexing:
                    self.dynamic.insert(0, (name, value))
                    self._evict()
        return fields


def decode_status(block: bytes) -> int:
    """The `:status` of a response header block decoded on its own (no dynamic table state)."""
    for name, value in Decoder().decode(block):
        if name == ":status":
            return int(value)
    raise ValueError(f"no :status in {block[:16]!r}")


# ------------------------------------------------------------------------------------------
# Frames (RFC 9113 §4)


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        data += chunk
    return data


class _Stream:
    """What has arrived for the request in flight."""

    def __init__(self, stream_id: int):
        self.id = stream_id
        self.send_window = DEFAULT_WINDOW
        self.block = b""  # header block fragments until END_HEADERS
        self.block_ends_stream = False
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.body = b""
        self.ended = False


class Connection:
    """One h2c connection to 127.0.0.1:`port`; `request` runs one stream at a time (1, 3, 5...).

    `header_table_size` is the HPACK dynamic table we allow the peer (SETTINGS_HEADER_TABLE_SIZE);
    push is disabled. A GOAWAY raises `GoAway` and closes the connection; a reset of the stream
    raises `StreamReset` (the connection stays usable)."""

    def __init__(self, port: int, host: str = "127.0.0.1", *, timeout: float = 10.0, header_table_size: int = 4096,
                 upstream: EchoUpstream | None = None):
        self.port = port
        self.timeout = timeout
        self.upstream = upstream
        self.sock: socket.socket | None = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = Decoder(header_table_size)
        self.next_stream = 1
        self.send_window = DEFAULT_WINDOW  # the connection's
        self.initial_window = DEFAULT_WINDOW
        self.max_frame = DEFAULT_MAX_FRAME
        self.closed = False
        self._stream: _Stream | None = None
        self._other_block = b""  # a header block of an earlier stream, until its END_HEADERS
        self._deadline = time.monotonic() + timeout
        settings = b"".join(struct.pack(">HI", ident, value)
                            for ident, value in ((SETTINGS_HEADER_TABLE_SIZE, header_table_size), (SETTINGS_ENABLE_PUSH, 0)))
        # Frames not written yet: the preface goes out with the first request, and consecutive
        # frames in one write, as a client that has them all at once sends them.
        self._out = PREFACE + _frame(SETTINGS, 0, 0, settings)

    def close(self) -> None:
        self.closed = True
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- receiving ----------------------------------------------------------------------------

    def _read_frame(self) -> None:
        """Read and handle one frame (blocking until the deadline)."""
        assert self.sock is not None
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete HTTP/2 response in time")
        self.sock.settimeout(remaining)
        head = _recv_exact(self.sock, 9)
        length = int.from_bytes(head[:3], "big")
        kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = _recv_exact(self.sock, length)
        current = self._stream
        if kind == SETTINGS:
            if not flags & ACK:
                self._apply_settings(payload)
                self.sock.sendall(_frame(SETTINGS, ACK, 0, b""))
        elif kind == PING:
            if not flags & ACK:
                self.sock.sendall(_frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream == 0:
                self.send_window += increment
            elif current is not None and stream == current.id:
                current.send_window += increment
        elif kind == GOAWAY:
            code = int.from_bytes(payload[4:8], "big")
            self.close()
            raise GoAway(code, payload[8:])
        elif kind == RST_STREAM:
            if current is not None and stream == current.id and not current.ended:
                current.ended = True
                raise StreamReset(int.from_bytes(payload[:4], "big"))
        elif kind in (HEADERS, CONTINUATION):
            if kind == HEADERS:
                if flags & PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if flags & PRIORITY:
                    payload = payload[5:]
            if current is None or stream != current.id:
                # Another stream's (an earlier request's) block: decode it all the same, the
                # dynamic table depends on it.
                self._other_block += payload
                if flags & END_HEADERS:
                    self.decoder.decode(self._other_block)
                    self._other_block = b""
                return
            current.block += payload
            if kind == HEADERS:
                current.block_ends_stream = bool(flags & END_STREAM)
            if flags & END_HEADERS:
                self._header_block_done(current)
        elif kind == DATA:
            if flags & PADDED:
                body = payload[1 : len(payload) - payload[0]]
            else:
                body = payload
            if length:  # give the credit back (connection and stream) so large bodies flow
                credit = struct.pack(">I", length)
                out = _frame(WINDOW_UPDATE, 0, 0, credit)
                if current is not None and stream == current.id and not flags & END_STREAM:
                    out += _frame(WINDOW_UPDATE, 0, stream, credit)
                self.sock.sendall(out)
            if current is not None and stream == current.id:
                current.body += body
                if flags & END_STREAM:
                    current.ended = True

    def _apply_settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - 5, 6):
            ident, value = struct.unpack(">HI", payload[offset : offset + 6])
            if ident == SETTINGS_INITIAL_WINDOW_SIZE:
                if self._stream is not None:
                    self._stream.send_window += value - self.initial_window
                self.initial_window = value
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                self.max_frame = value

    def _header_block_done(self, current: _Stream) -> None:
        fields = self.decoder.decode(current.block)
        current.block = b""
        pseudo = dict((n, v) for n, v in fields if n.startswith(":"))
        regular = [(n, v) for n, v in fields if not n.startswith(":")]
        if ":status" in pseudo:
            status = int(pseudo[":status"])
            if 100 <= status < 200:
                return  # interim response (RFC 9113 §8.1): the real one follows
            current.status, current.headers = status, regular
        elif current.status is not None:
            current.trailers = regular
        else:
            raise ConnectionError(f"response header block without :status: {fields}")
        if current.block_ends_stream:
            current.ended = True

    def _flush(self) -> None:
        if self._out and self.sock is not None:
            self.sock.sendall(self._out)
        self._out = b""

    def _poll(self, seconds: float) -> None:
        """Handle whatever arrives within `seconds` (returns early once the response ended)."""
        assert self.sock is not None
        self._flush()
        until = time.monotonic() + seconds
        while self._stream is not None and not self._stream.ended:
            remaining = until - time.monotonic()
            readable, _, _ = select.select([self.sock], [], [], max(0.0, remaining))
            if not readable:
                return
            self._read_frame()

    # -- sending ------------------------------------------------------------------------------

    def _send_data(self, data: bytes, end_stream: bool) -> None:
        """DATA frames within the peer's maximum frame size and flow-control windows (queued in
        `_out`; written when a window is exhausted)."""
        assert self.sock is not None and self._stream is not None
        stream = self._stream
        if not data:
            self._out += _frame(DATA, END_STREAM if end_stream else 0, stream.id, b"")
            return
        pos = 0
        while pos < len(data):
            if min(self.send_window, stream.send_window) <= 0:
                self._flush()
            while min(self.send_window, stream.send_window) <= 0 and not stream.ended:
                self._read_frame()
            if stream.ended:
                return
            size = min(len(data) - pos, self.max_frame, self.send_window, stream.send_window)
            last = pos + size == len(data)
            self._out += _frame(DATA, END_STREAM if end_stream and last else 0, stream.id, data[pos : pos + size])
            self.send_window -= size
            stream.send_window -= size
            pos += size

    def _send_headers(self, block: bytes, end_stream: bool) -> None:
        """HEADERS, then CONTINUATION frames if the block exceeds the maximum frame size (queued)."""
        assert self.sock is not None and self._stream is not None
        pieces = [block[i : i + self.max_frame] for i in range(0, len(block), self.max_frame)] or [b""]
        for i, piece in enumerate(pieces):
            flags = END_HEADERS if i == len(pieces) - 1 else 0
            if i == 0:
                self._out += _frame(HEADERS, flags | (END_STREAM if end_stream else 0), self._stream.id, piece)
            else:
                self._out += _frame(CONTINUATION, flags, self._stream.id, piece)

    def request(
        self,
        method: str,
        path: str,
        headers: Sequence[Field] = (),
        *,
        authority: str = "127.0.0.1",
        body: bytes | None = None,
        chunks: Sequence[bytes] | None = None,
        delay: float = 0.0,
        trailers: Sequence[Field] | None = None,
        test_id: str | None = None,
        timeout: float | None = None,
    ) -> H2Reply:
        """One request on the next stream. See the module's `request` for the arguments."""
        if self.closed or self.sock is None:
            raise ConnectionError("connection closed")
        if body is not None and chunks is not None:
            raise ValueError("body or chunks, not both")
        test_id = test_id or uuid.uuid4().hex
        fields: list[Field] = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path),
                               (TEST_ID_HEADER, test_id), *((name.lower(), value) for name, value in headers)]
        if body is not None:
            fields.append(("content-length", str(len(body))))
        started = time.monotonic()
        self._deadline = started + (self.timeout if timeout is None else timeout)
        stream = self._stream = _Stream(self.next_stream)
        stream.send_window = self.initial_window
        self.next_stream += 2
        # After the HEADERS frame: DATA pieces, then the end of the request (END_STREAM on the
        # body's last DATA frame, on an empty DATA frame after the chunks, or on the trailers).
        steps: list[tuple[str, bytes]] = []
        if chunks is not None:
            steps = [("data", chunk) for chunk in chunks] + [("trailers" if trailers is not None else "end", b"")]
        elif body and trailers is None:
            steps = [("last", body)]
        elif body:
            steps = [("data", body), ("trailers", b"")]
        elif trailers is not None:
            steps = [("trailers", b"")]
        unsent = 0
        try:
            self._send_headers(encode_headers(fields), end_stream=not steps)
            for i, (what, piece) in enumerate(steps):
                if chunks is not None or what == "trailers":
                    self._poll(delay)
                if stream.ended:  # answered already (e.g. 413): stop sending
                    unsent = len(steps) - i
                    break
                if what == "trailers":
                    block = encode_headers([(name.lower(), value) for name, value in trailers or ()])
                    self._send_headers(block, end_stream=True)
                else:
                    self._send_data(piece, end_stream=what != "data")
            self._flush()
            while not stream.ended:
                self._read_frame()
        finally:
            self._stream = None
        if stream.status is None:
            raise ConnectionError("response ended without headers")
        seen = self.upstream.requests_with_test_id(test_id) if self.upstream else []
        return H2Reply(stream.status, stream.body, test_id, stream.headers, stream.trailers,
                       time.monotonic() - started, unsent, seen)


def request(
    port: int,
    method: str,
    path: str,
    headers: Sequence[Field] = (),
    *,
    authority: str = "127.0.0.1",
    body: bytes | None = None,
    chunks: Sequence[bytes] | None = None,
    delay: float = 0.0,
    trailers: Sequence[Field] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
    upstream: EchoUpstream | None = None,
) -> H2Reply:
    """One HTTP/2 request over a fresh h2c connection. Header pairs are sent as given (repeats
    stay separate fields; names lowercased); `:method` goes out verbatim (`pOST` stays `pOST`).

    - `body`: HEADERS, then the body in DATA frames (with `content-length`), END_STREAM on the
      last one; with `trailers`, END_STREAM moves to a trailing HEADERS frame.
    - `chunks`: HEADERS, then one DATA frame per chunk, `delay` seconds apart, none with
      END_STREAM (no `content-length` is added); then, `delay` later, the `trailers` in a
      HEADERS frame with END_STREAM, or without trailers an empty DATA frame with END_STREAM.
      Sending stops once the response has ended (counted in `unsent_chunks`).
    - neither: HEADERS with END_STREAM (or HEADERS, then the trailers).

    A unique `x-test-id` is added, as with `wire.Client`; given the echo `upstream`, the reply's
    `upstream_requests` are what reached it with that id."""
    with Connection(port, host, timeout=timeout, upstream=upstream) as connection:
        return connection.request(method, path, headers, authority=authority, body=body, chunks=chunks,
                                  delay=delay, trailers=trailers)
