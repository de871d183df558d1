"""A minimal HTTP/2 cleartext (prior knowledge) client, for what HTTP/1.1 cannot send.

Envoy's HTTP/1 codec folds repeated `Authorization` lines into one comma-joined value, so only
HTTP/2 delivers two separate `authorization` fields to the filter. This client sends one request
on stream 1 (HPACK literals, no Huffman, no dynamic table) and reads back the status and body.
It decodes just enough HPACK for the `:status` (static table entries and literal digits,
Huffman-coded or not); other response headers are not decoded.
"""
from __future__ import annotations

import socket
import struct
import uuid
from dataclasses import dataclass

from .upstream import TEST_ID_HEADER

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20

_STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}
# RFC 7541 Appendix B: Huffman codes of the ASCII digits, enough for a :status value.
_HUFFMAN_DIGITS = {
    (0b00000, 5): "0", (0b00001, 5): "1", (0b00010, 5): "2", (0b011001, 6): "3", (0b011010, 6): "4",
    (0b011011, 6): "5", (0b011100, 6): "6", (0b011101, 6): "7", (0b011110, 6): "8", (0b011111, 6): "9",
}


@dataclass
class H2Reply:
    status: int
    body: bytes
    test_id: str


def _int(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
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


def _literal(name: str, value: str) -> bytes:
    """Literal header field without indexing, new name (RFC 7541 §6.2.2), no Huffman."""
    name_b, value_b = name.encode(), value.encode()
    return b"\x00" + _int(len(name_b), 7) + name_b + _int(len(value_b), 7) + value_b


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


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


def _huffman_digits(data: bytes) -> str:
    bits = "".join(f"{byte:08b}" for byte in data)
    out, pos = [], 0
    while pos < len(bits):
        for (code, length), digit in _HUFFMAN_DIGITS.items():
            if bits[pos : pos + length] == f"{code:0{length}b}" and pos + length <= len(bits):
                out.append(digit)
                pos += length
                break
        else:
            break  # EOS padding (all ones)
    return "".join(out)


def decode_status(block: bytes) -> int:
    """The `:status` of a response header block (Envoy sends it first)."""
    first = block[0]
    if first & 0x80:
        index, _ = _read_int(block, 0, 7)
        return _STATIC_STATUS[index]
    prefix = 6 if first & 0x40 else 4
    index, pos = _read_int(block, 0, prefix)
    if index not in _STATIC_STATUS:
        raise ValueError(f"first response header is not :status: {block[:16]!r}")
    huffman = bool(block[pos] & 0x80)
    length, pos = _read_int(block, pos, 7)
    raw = block[pos : pos + length]
    return int(_huffman_digits(raw) if huffman else raw.decode())


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        data += chunk
    return data


def request(
    port: int,
    method: str,
    path: str,
    headers: list[tuple[str, str]] = (),
    *,
    authority: str = "127.0.0.1",
    body: bytes | None = None,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
) -> H2Reply:
    """One HTTP/2 request over a fresh h2c connection; header pairs are sent as given (repeats
    stay separate fields). A unique `x-test-id` is added, as with `wire.Client`."""
    test_id = uuid.uuid4().hex
    fields = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path),
              (TEST_ID_HEADER, test_id), *((name.lower(), value) for name, value in headers)]
    if body is not None:
        fields.append(("content-length", str(len(body))))
    block = b"".join(_literal(name, value) for name, value in fields)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        out = PREFACE + _frame(SETTINGS, 0, 0, b"")
        out += _frame(HEADERS, END_HEADERS | (0 if body else END_STREAM), 1, block)
        if body:
            out += _frame(DATA, END_STREAM, 1, body)
        sock.sendall(out)
        status, data = None, b""
        while True:
            head = _recv_exact(sock, 9)
            length = int.from_bytes(head[:3], "big")
            kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = _recv_exact(sock, length)
            if kind == SETTINGS and not flags & ACK:
                sock.sendall(_frame(SETTINGS, ACK, 0, b""))
            elif kind == PING and not flags & ACK:
                sock.sendall(_frame(PING, ACK, 0, payload))
            elif kind == GOAWAY or (kind == RST_STREAM and stream == 1):
                raise ConnectionError(f"stream ended by frame type {kind}: {payload!r}")
            elif stream == 1 and kind in (HEADERS, DATA):
                if flags & PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if kind == HEADERS:
                    if flags & PRIORITY:
                        payload = payload[5:]
                    if status is None:
                        status = decode_status(payload)
                else:
                    data += payload
                if flags & END_STREAM:
                    if status is None:
                        raise ConnectionError("response without headers")
                    return H2Reply(status, data, test_id)
