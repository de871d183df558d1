"""`tools/list` answers filtered by the token's scopes (resource field `filter_tools_list`,
default on for a resource with `tool_scopes`), on the wire: the real .wasm in a real Envoy
(concurrency 2), judged by the exact bytes the client reads.

Upstreams:
- the real Python MCP SDK server (`peers/mcp_server.py`, `MCPServer`, streamable HTTP, a session
  opened with `initialize` through Envoy), in JSON-response mode and in SSE mode (parametrized),
  with the tools of `tool_scopes` registered beside its own (`add`, `echo`, `whoami`, and
  `list_dir`, named nowhere in the configuration); what it answers directly (bypassing Envoy)
  is the reference every kept tool object must equal;
- the same server whose `tools/list` handler sends a log notification on the request's stream
  and waits 2 s before answering (the streaming order);
- the same server with resumable streams whose `tools/list` closes its stream before answering
  (SSE polling, MCP 2025-11-25: the result comes on the stream the client resumes with `GET` +
  `Last-Event-ID`), and the same server on MCP 2024-11-05's HTTP+SSE transport (every answer
  on the `GET /mcp/sse` stream);
- a scripted HTTP/1.1 upstream in this module (`ScriptedUpstream`), writing exact bytes, chunked
  or not, with pauses between chunks: batches (the SDK's server refuses them), answers that
  cannot be parsed, larger than `max_body_bytes`, compressed, SSE events split across chunks
  with CRLF, CR or LF line ends, multi-line `data:`.

One Envoy serves them all (a module fixture; `reference` is what the servers list directly):
the header `x-upstream` picks the upstream (routes), the path picks
the resource: `/mcp` (tool_scopes, filtering on by default), `/off` (the same tool_scopes,
`filter_tools_list: false`), `/plain` (no tool_scopes: filtering off by default).

Every answer is read by hand from the socket (`raw_exchange`): the framing is checked (a
`content-length` must equal the body the client gets), and each read is timestamped.
The real clients (the Python SDK's `list_tools`, the TypeScript SDK's `listTools`) run through
`peers/py_client.py --list-tools` / `peers/ts-client.mjs --list-tools` against a stack with the
oidc-provider authorization server, like `test_mcp_clients.py`, with the plain SSE server and
with the polling one (where the list reaches them only on a resumed stream).
"""
from __future__ import annotations

import bisect
import copy
import gzip
import http.server
import itertools
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import pytest

import scenario
from harness import Envoy, h2c
from harness.envoy import static_cluster
from harness.peers import PY2, AuthServer, FilterEnvoy, McpServer, peers_installed, plugin_config, \
    py_client_command, run_client, ts_client_command
from scenario import HOLD_HEADERS, MCP, SCOPE_IMPLIES

# ------------------------------------------------------------------------------------------
# The configuration

OFF = "https://mcp.example.com/off"
PLAIN = "https://mcp.example.com/plain"
#: max_body_bytes of this module's configuration: the real server's list (8 tools, ~3 KB)
#: fits, the scripted "big" answers do not.
MAX_LIST_BYTES = 16384
INTERNAL_ERROR = -32603
PROTOCOL_VERSION = "2025-11-25"

#: Tools the real server registers beyond its own (add, echo, whoami): every tool of
#: MCP_TOOL_SCOPES, and list_dir, which no configuration names.
EXTRA_TOOLS = ["write_file", "delete_all", "read_notes", "audit_log", "list_dir"]
SERVER_TOOLS = ["add", "echo", "whoami", *EXTRA_TOOLS]  # the server's order
#: Members the real server adds to every tools/list result (they must survive the filter).
SERVER_LIST_EXTRA = {"--list-cursor": "page-2", "--list-meta": json.dumps({"origin": "upstream", "n": 7})}

#: Token scopes -> the tools the filter must remove (MCP_TOOL_SCOPES, required mcp:read,
#: SCOPE_IMPLIES admin -> write -> read). Written out by hand, not computed.
HIDDEN = {
    "read": ("mcp:read", {"write_file", "delete_all", "audit_log"}),
    "write-implies-read": ("mcp:write", {"delete_all", "audit_log"}),
    "admin-implies-write-and-read": ("mcp:admin", {"audit_log"}),
    "read-audit": ("mcp:read audit:view", {"write_file", "delete_all"}),
    "admin-audit-sees-all": ("mcp:admin audit:view", set()),
    "write-audit-other": ("other mcp:write audit:view", {"delete_all"}),
}


def tools_list_config() -> dict:
    """mcp_scopes_config's /mcp (tool_scopes, method_scopes, scope_implies), and beside it /off
    (the same, `filter_tools_list: false`) and /plain (no tool_scopes)."""
    config = scenario.mcp_scopes_config(max_body_bytes=MAX_LIST_BYTES)
    mcp = config["resources"][0]
    off = {**copy.deepcopy(mcp), "resource": OFF, "filter_tools_list": False}
    plain = {**copy.deepcopy(scenario.MCP_RESOURCE), "resource": PLAIN}
    config["resources"] = [mcp, off, plain]
    return config


def token(scope: str, audience: str = MCP) -> str:
    return scenario.token(audience, scope=scope)


# ------------------------------------------------------------------------------------------
# Reading answers by hand


@dataclass
class Raw:
    """One HTTP/1.1 answer read off the socket: status, headers (in order), the body as the
    client gets it (chunked framing removed), and when each of its bytes arrived."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "content-length", "chunked" or "close"
    problems: list[str]
    _segments: list[tuple[int, int]] = field(default_factory=list)  # (body offset, raw offset)
    _reads: list[tuple[int, float]] = field(default_factory=list)  # (raw bytes so far, seconds)

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def arrival(self, marker: bytes, start: int = 0) -> float:
        """Seconds from the request's last byte until the last byte of `marker` (its first
        occurrence in the body at or after `start`) was read."""
        index = self.body.find(marker, start)
        assert index >= 0, f"{marker!r} not in the body: {self.body[:600]!r}"
        last = index + len(marker) - 1
        position = bisect.bisect_right([s for s, _ in self._segments], last) - 1
        body_start, raw_start = self._segments[position]
        raw_index = raw_start + (last - body_start)
        read = bisect.bisect_right([n for n, _ in self._reads], raw_index)
        return self._reads[read][1]

    def describe(self) -> str:
        head = "\n".join(f"{k}: {v}" for k, v in self.headers)
        return f"{self.status} ({self.framing}) {self.problems}\n{head}\n\n{self.body[:1500]!r}"


def raw_exchange(port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"",
                 timeout: float = 20.0, stop: Callable[[bytes], bool] | None = None) -> Raw:
    """Send one request (`Content-Length`, `Connection: close`), read the answer until the
    server closes (or, with `stop`, until `stop(the body so far)` holds: for a stream that
    stays open), timestamping every read."""
    # Host: the SDK's server allows 127.0.0.1:* only (DNS rebinding protection); the filter
    # builds its URLs from its configuration, never from the Host.
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers),
             f"Content-Length: {len(body)}", "Connection: close"]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    deadline = time.monotonic() + timeout
    try:
        sock.sendall(request)
        sent = time.monotonic()
        data = bytearray()
        reads: list[tuple[int, float]] = []
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except socket.timeout as err:
                raise TimeoutError(f"no end of answer after {timeout}s; so far: {bytes(data[:1500])!r}") from err
            if not chunk:
                break
            data += chunk
            reads.append((len(data), time.monotonic() - sent))
            if stop is not None and b"\r\n\r\n" in data and stop(_parse_answer(bytes(data), reads, whole=False).body):
                return _parse_answer(bytes(data), reads, whole=False)
    finally:
        sock.close()
    return _parse_answer(bytes(data), reads)


def _parse_answer(data: bytes, reads: list[tuple[int, float]], whole: bool = True) -> Raw:
    """`whole`: the server closed the connection, so the body must be complete."""
    end = data.find(b"\r\n\r\n")
    assert end > 0, f"no complete header block: {data[:500]!r}"
    head = data[:end].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = []
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    rest, offset = data[end + 4:], end + 4
    problems: list[str] = []
    segments: list[tuple[int, int]] = []
    te = [v.lower() for k, v in headers if k.lower() == "transfer-encoding"]
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    if te and lengths:
        problems.append("both transfer-encoding and content-length")
    if te:
        framing, body, position = "chunked", bytearray(), 0
        while True:
            line_end = rest.find(b"\r\n", position)
            if line_end < 0:
                if whole:
                    problems.append("chunked body cut short")
                break
            size = int(rest[position:line_end].split(b";")[0], 16)
            if size == 0:
                tail = rest[line_end + 2:]  # CRLF, or trailer fields then CRLF
                if tail != b"\r\n" and not tail.endswith(b"\r\n\r\n"):
                    problems.append(f"bad end of chunked body: {tail[:100]!r}")
                break
            segments.append((len(body), offset + line_end + 2))
            body += rest[line_end + 2:line_end + 2 + size]
            if len(rest) < line_end + 2 + size + 2:
                if whole:
                    problems.append("chunk cut short")
                break
            position = line_end + 2 + size + 2
        body = bytes(body)
    elif lengths:
        framing = "content-length"
        if len(set(lengths)) != 1:
            problems.append(f"content-length values {lengths}")
        announced = int(lengths[0])
        if len(rest) != announced and (whole or len(rest) > announced):
            problems.append(f"content-length {announced} but {len(rest)} body bytes")
        body = rest[:announced]
        segments.append((0, offset))
    else:  # read until the close: legal for an answer to a request with Connection: close
        framing, body = "close", rest
        segments.append((0, offset))
    return Raw(status, headers, body, framing, problems, segments or [(0, offset)], reads)


class RawStream:
    """A request whose answer stays open (an SSE GET): `read_until(predicate)` reads until the
    body so far satisfies it, and returns that body."""

    def __init__(self, port: int, method: str, path: str, headers: list[tuple[str, str]], timeout: float = 15.0):
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers),
                 "Connection: close"]
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.timeout, self.data, self.reads, self.started = timeout, bytearray(), [], time.monotonic()

    def read_until(self, predicate: Callable[[bytes], bool]) -> Raw:
        deadline = time.monotonic() + self.timeout
        while True:
            if b"\r\n\r\n" in self.data:
                answer = _parse_answer(bytes(self.data), self.reads, whole=False)
                if predicate(answer.body):
                    return answer
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout as err:
                raise TimeoutError(f"not there after {self.timeout}s; so far: {bytes(self.data[-1500:])!r}") from err
            if not chunk:
                raise ConnectionError(f"closed; so far: {bytes(self.data[-1500:])!r}")
            self.data += chunk
            self.reads.append((len(self.data), time.monotonic() - self.started))

    def close(self) -> None:
        self.sock.close()


def complete_events(body: bytes) -> list[dict]:
    """The events of a stream still open: those complete so far (up to the last blank line)."""
    ends = [body.rfind(end) + len(end) for end in (b"\r\n\r\n", b"\n\n", b"\r\r") if body.rfind(end) >= 0]
    return sse_events(body[: max(ends)]) if ends else []


def sse_events(body: bytes) -> list[dict]:
    """The events of an event stream (WHATWG HTML, 9.2.6): lines end in CRLF, LF or CR; `data`
    lines of an event joined with LF; comments dropped; an event without data is not
    dispatched. Each event: {"data", and "event"/"id"/"retry" when set in its block}. An
    unterminated last event is an error here (the stream ended)."""
    text = body.decode("utf-8")
    lines = re.split(r"\r\n|\r|\n", text)
    assert lines[-1] == "", f"event stream does not end with a line end: {text[-200:]!r}"
    lines.pop()
    events, data, fields = [], [], {}
    for line in lines:
        if line == "":
            if data:
                events.append({"data": "\n".join(data), **fields})
            data, fields = [], {}
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name in ("event", "id", "retry"):
            fields[name] = value
    assert not data, f"event stream ends inside an event: {text[-300:]!r}"
    return events


def messages(reply: Raw) -> list:
    """The JSON-RPC messages of an answer, in order: a JSON body's message (or each of a
    batch), or every event's data."""
    if reply.content_type == "application/json":
        value = json.loads(reply.body)
        return value if isinstance(value, list) else [value]
    assert reply.content_type == "text/event-stream", reply.describe()
    # an event without a message (the SDK's priming event: an id, empty data) is skipped, as
    # the SDKs' clients skip it; an event may carry a batch (an array) of messages
    out = []
    for event in sse_events(reply.body):
        if event["data"].strip():
            value = json.loads(event["data"])
            out += value if isinstance(value, list) else [value]
    return out


def sound(reply: Raw) -> Raw:
    assert not reply.problems, reply.describe()
    return reply


def by_id(found: list, request_id) -> dict:
    """The one response to `request_id` (same JSON type: 1 and "1" differ)."""
    matches = [m for m in found if isinstance(m, dict) and "id" in m and type(m["id"]) is type(request_id)
               and m["id"] == request_id and ("result" in m or "error" in m)]
    assert len(matches) == 1, f"{len(matches)} responses to id {request_id!r}: {found}"
    return matches[0]


def names(result: dict) -> list[str]:
    return [tool["name"] for tool in result["tools"]]


def assert_internal_error(message: dict, request_id, *, absent: list[bytes], raw: bytes) -> None:
    assert message.get("jsonrpc") == "2.0" and "result" not in message, message
    assert message.get("id") == request_id and type(message["id"]) is type(request_id), message
    assert isinstance(message.get("error"), dict) and message["error"].get("code") == INTERNAL_ERROR, message
    assert isinstance(message["error"].get("message"), str), message
    for trace in absent:
        assert trace not in raw, f"{trace!r} leaked: {raw[:1500]!r}"


def rpc_body(message) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------------------
# The scripted upstream


@dataclass
class Answer:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    parts: list[tuple[float, bytes]] = field(default_factory=list)  # (pause before, bytes)
    chunked: bool = False


class ScriptedUpstream:
    """HTTP/1.1 on 127.0.0.1 in a thread. The request header `x-script` names the script
    (`SCRIPTS`), which builds the exact answer from the request; every request is recorded
    (method, path, headers lowercased, body) for the tests to read by `x-test-id`."""

    def __init__(self):
        self.requests: list[dict] = []
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("content-length") or 0))

            def _serve(self):
                body = self._body()
                request = {"method": self.command, "path": self.path,
                           "headers": [(k.lower(), v) for k, v in self.headers.items()], "body": body}
                upstream.requests.append(request)
                script = SCRIPTS.get(self.headers.get("x-script", ""))
                answer = script(request) if script else Answer(404, [("content-type", "text/plain")],
                                                                [(0, b"no such script")])
                framing = [("transfer-encoding", "chunked")] if answer.chunked else \
                    [("content-length", str(sum(len(p) for _, p in answer.parts)))]
                head = [f"HTTP/1.1 {answer.status} {http.HTTPStatus(answer.status).phrase}",
                        *(f"{k}: {v}" for k, v in [*answer.headers, *framing])]
                self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode())
                for pause, part in answer.parts:
                    if pause:
                        time.sleep(pause)
                    if answer.chunked:
                        if part:
                            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    else:
                        self.wfile.write(part)
                    self.wfile.flush()
                if answer.chunked:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()

            do_POST = do_GET = do_PUT = do_DELETE = _serve

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="scripted-upstream", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def seen(self, test_id: str) -> list[dict]:
        return [r for r in self.requests if dict(r["headers"]).get("x-test-id") == test_id]


#: The scripted upstream's tools: varied members, unicode, numbers that must survive exactly.
SCRIPT_TOOLS = [
    {"name": "echo", "description": "Echo — unicode ✓ \u2028 </script>", "inputSchema": {
        "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
     "annotations": {"readOnlyHint": True, "title": "Echo"}, "_meta": {"n": 9007199254740993, "f": 0.1, "l": [None, False]}},
    {"name": "write_file", "title": "Write a file", "inputSchema": {"type": "object"}},
    {"name": "delete_all", "description": "SECRET-DELETE-ALL", "inputSchema": {"type": "object"},
     "annotations": {"destructiveHint": True}},
    {"name": "read_notes", "inputSchema": {"type": "object"}, "icons": [{"src": "https://x.example/i.png", "sizes": ["48x48"]}]},
    {"name": "audit_log", "description": "SECRET-AUDIT-LOG", "inputSchema": {"type": "object"}},
    {"name": "unlisted_tool", "inputSchema": {"type": "object"}, "outputSchema": {"type": "object", "properties": {}}},
]
#: What a token with mcp:write (-> mcp:read) keeps of SCRIPT_TOOLS.
SCRIPT_KEPT_FOR_WRITE = ["echo", "write_file", "read_notes", "unlisted_tool"]


def script_list_result() -> dict:
    return {"tools": copy.deepcopy(SCRIPT_TOOLS), "nextCursor": "cursor-2", "ttlMs": 60000, "cacheScope": "public",
            "_meta": {"origin": "scripted", "nested": {"a": [1, 2, 3]}}, "extraMember": {"kept": True}}


def script_call_result() -> dict:
    """A tools/call result that looks like a list: a filter that touched it would show."""
    return {"content": [{"type": "text", "text": "delete_all ran"}], "tools": copy.deepcopy(SCRIPT_TOOLS),
            "cacheScope": "public", "isError": False}


def _requests_of(request: dict) -> tuple[list[dict], bool]:
    parsed = json.loads(request["body"])
    return (parsed if isinstance(parsed, list) else [parsed]), isinstance(parsed, list)


#: x-id-spelling: how the scripted upstream writes the id of a tools/list answer.
ID_SPELLINGS = {"same": lambda i: i, "string": lambda i: str(i), "float": lambda i: float(i)}


def _responses(request: dict) -> tuple[list[dict], bool]:
    calls, batch = _requests_of(request)
    spell = ID_SPELLINGS[dict(request["headers"]).get("x-id-spelling", "same")]
    out = []
    for call in calls:
        if "id" not in call or "method" not in call:
            continue
        if call["method"] == "tools/list":
            out.append({"jsonrpc": "2.0", "id": spell(call["id"]), "result": script_list_result()})
        elif call["method"] == "tools/call":
            out.append({"jsonrpc": "2.0", "id": call["id"], "result": script_call_result()})
        else:
            out.append({"jsonrpc": "2.0", "id": call["id"], "result": {}})
    return out, batch


NOTE = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "before the list"}}
NOTE_AFTER = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "p", "progress": 1}}


def _mode(request: dict) -> dict:
    headers = dict(request["headers"])
    return {"mode": headers.get("x-mode", "json"), "chunked": headers.get("x-framing", "length") == "chunked",
            "eol": {"crlf": "\r\n", "cr": "\r", "lf": "\n"}[headers.get("x-eol", "lf")]}


def sse_event(message, eol: str = "\n", event_id: str | None = None) -> bytes:
    lines = ["event: message", *([f"id: {event_id}"] if event_id else []), "data: " + json.dumps(message)]
    return (eol.join(lines) + eol + eol).encode()


def script_list(request: dict) -> Answer:
    """Answers a request or batch like an MCP server: tools/list -> script_list_result(),
    tools/call -> script_call_result(), else {}; in reverse order (ids must be matched). JSON:
    one message or an array; SSE: a notification, then an event per response (ids ev-N),
    then another notification."""
    mode = _mode(request)
    responses, batch = _responses(request)
    responses.reverse()
    if mode["mode"] == "json":
        value = responses if batch else responses[0]
        content_type = dict(request["headers"]).get("x-content-type", "application/json")
        return Answer(headers=[("content-type", content_type)], parts=[(0, json.dumps(value).encode())],
                      chunked=mode["chunked"])
    eol = mode["eol"]
    parts = [(0, b": a comment" + eol.encode() + b"retry: 3000" + eol.encode() + eol.encode()),
             (0, sse_event(NOTE, eol))]
    parts += [(0.05, sse_event(r, eol, f"ev-{i}")) for i, r in enumerate(responses)]
    parts.append((0.05, sse_event(NOTE_AFTER, eol)))
    return Answer(headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")], parts=parts,
                  chunked=mode["chunked"])


def script_broken(request: dict) -> Answer:
    """The result cut short (not JSON), after a notification in SSE; for a batch, the array
    of script_list's answers cut short."""
    mode = _mode(request)
    responses, batch = _responses(request)
    text = json.dumps(responses if batch else responses[0])
    broken = text[: text.index("SECRET-AUDIT-LOG") + 5]
    if mode["mode"] == "json":
        return Answer(headers=[("content-type", "application/json")], parts=[(0, broken.encode())],
                      chunked=mode["chunked"])
    parts = [(0, sse_event(NOTE)), (0.05, f"event: message\nid: ev-0\ndata: {broken}\n\n".encode())]
    return Answer(headers=[("content-type", "text/event-stream")], parts=parts, chunked=mode["chunked"])


def script_big(request: dict) -> Answer:
    """A valid list larger than MAX_LIST_BYTES: SCRIPT_TOOLS and 40 bulk tools of ~600 bytes;
    in 4000-byte writes 10 ms apart, or (x-pieces: one) in one write."""
    mode = _mode(request)
    size = 4000 if dict(request["headers"]).get("x-pieces", "many") == "many" else 1 << 20
    (call,), _ = _requests_of(request)
    result = script_list_result()
    result["tools"] += [{"name": f"bulk_{i}", "description": "x" * 600, "inputSchema": {"type": "object"}}
                        for i in range(40)]
    message = {"jsonrpc": "2.0", "id": call["id"], "result": result}
    assert len(json.dumps(message)) > MAX_LIST_BYTES + 4096
    if mode["mode"] == "json":
        text = json.dumps(message).encode()
        parts = [(0.01, text[i:i + size]) for i in range(0, len(text), size)]
        return Answer(headers=[("content-type", "application/json")], parts=parts, chunked=mode["chunked"])
    event = sse_event(message, event_id="ev-0")
    parts = [(0, sse_event(NOTE))] + [(0.01, event[i:i + size]) for i in range(0, len(event), size)]
    return Answer(headers=[("content-type", "text/event-stream")], parts=parts, chunked=mode["chunked"])


def script_gzip(request: dict) -> Answer:
    """The answer of script_list, gzip-compressed, `content-encoding: gzip`."""
    plain = script_list(request)
    body = gzip.compress(b"".join(p for _, p in plain.parts), mtime=0)
    return Answer(headers=[*plain.headers, ("content-encoding", "gzip"), ("vary", "accept-encoding")],
                  parts=[(0, body)], chunked=_mode(request)["chunked"])


def script_split(request: dict) -> Answer:
    """SSE, chunked, line ends of x-eol: a notification at once; 1.5 s later the result event
    in small pieces 0.1 s apart, cut inside `data:`, inside a line end, inside the JSON."""
    mode = _mode(request)
    (call,), _ = _requests_of(request)
    eol = mode["eol"]
    event = sse_event({"jsonrpc": "2.0", "id": call["id"], "result": script_list_result()}, eol, "ev-7")
    data_at = event.index(b"data:")
    cuts = sorted({3, data_at + 2, data_at + 40, event.index(b"delete_all") + 4, len(event) - len(eol) * 2 + 1,
                   len(event) - 1})
    pieces = [event[a:b] for a, b in zip([0, *cuts], [*cuts, len(event)])]
    parts = [(0, sse_event(NOTE, eol))] + [(1.5 if i == 0 else 0.1, p) for i, p in enumerate(pieces)]
    parts.append((0.1, sse_event(NOTE_AFTER, eol)))
    return Answer(headers=[("content-type", "text/event-stream")], parts=parts, chunked=True)


def script_multiline(request: dict) -> Answer:
    """SSE whose result event spreads its JSON over many `data:` lines (pretty-printed, every
    other line without the space after the colon), line ends of x-eol."""
    mode = _mode(request)
    (call,), _ = _requests_of(request)
    eol = mode["eol"]
    pretty = json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": script_list_result()}, indent=1).split("\n")
    lines = ["event: message", "id: ev-ml"] + [("data: " if i % 2 else "data:") + line for i, line in enumerate(pretty)]
    event = (eol.join(lines) + eol + eol).encode()
    parts = [(0, sse_event(NOTE, eol)), (0.05, event[: len(event) // 2]), (0.05, event[len(event) // 2:])]
    return Answer(headers=[("content-type", "text/event-stream")], parts=parts, chunked=mode["chunked"])


def script_error(request: dict) -> Answer:
    """tools/list answered with a JSON-RPC error."""
    mode = _mode(request)
    (call,), _ = _requests_of(request)
    message = {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32001, "message": "upstream refuses"}}
    if mode["mode"] == "json":
        return Answer(headers=[("content-type", "application/json")], parts=[(0, json.dumps(message).encode())])
    return Answer(headers=[("content-type", "text/event-stream")], parts=[(0, sse_event(message))])


def script_escaped(request: dict) -> Answer:
    """A list written by hand whose hidden tools' names (and one `name` key) use JSON escapes."""
    (call,), _ = _requests_of(request)
    text = ('{"jsonrpc":"2.0","id":%s,"result":{"tools":['
            '{"name":"echo","inputSchema":{"type":"object"}},'
            '{"name":"delete\\u005fall","description":"SECRET-DELETE-ALL","inputSchema":{"type":"object"}},'
            '{"n\\u0061me":"\\u0061udit_log","description":"SECRET-AUDIT-LOG","inputSchema":{"type":"object"}},'
            '{"name":"read_notes","inputSchema":{"type":"object"}}]}}') % json.dumps(call["id"])
    assert json.loads(text)["result"]["tools"][1]["name"] == "delete_all"
    assert json.loads(text)["result"]["tools"][2]["name"] == "audit_log"
    return Answer(headers=[("content-type", "application/json")], parts=[(0, text.encode())])


BIG_NOTE = {"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "error", "data": "a long stack trace " + "x" * (MAX_LIST_BYTES + 4000)}}


def script_big_note(request: dict) -> Answer:
    """SSE: a notification larger than max_body_bytes, then (0.3 s later) the list."""
    (call,), _ = _requests_of(request)
    note = sse_event(BIG_NOTE)
    parts = [(0.05, note[i:i + 4000]) for i in range(0, len(note), 4000)]  # arriving in pieces
    parts.append((0.3, sse_event({"jsonrpc": "2.0", "id": call["id"], "result": script_list_result()}, event_id="ev-1")))
    return Answer(headers=[("content-type", "text/event-stream")], parts=parts, chunked=True)


SCRIPTS: dict[str, Callable[[dict], Answer]] = {
    "big-note": script_big_note,
    "escaped": script_escaped,
    "list": script_list, "broken": script_broken, "big": script_big, "gzip": script_gzip, "split": script_split,
    "multiline": script_multiline, "error": script_error,
}


# ------------------------------------------------------------------------------------------
# The stack: three real MCP servers, the scripted upstream, one Envoy

UPSTREAM_CLUSTERS = {"json": "mcp_json", "sse": "mcp_sse", "slow": "mcp_slow", "poll": "mcp_poll",
                     "legacy": "mcp_legacy"}
#: The SSE-polling server (MCP 2025-11-25): resumable streams; its tools/list sends a
#: notification, closes the request's stream, and answers 1.5 s later, on the stream the client
#: resumes with GET + Last-Event-ID.
POLL_SERVER = {"extra_tools": EXTRA_TOOLS, "slow_list": 1.5, "event_store": True, "retry_ms": 200,
               "close_list_stream": True}


@dataclass
class Stack:
    envoy: Envoy
    servers: dict[str, McpServer]
    script: ScriptedUpstream


@pytest.fixture(scope="module")
def stack(wasm_path):
    with ScriptedUpstream() as script, \
            McpServer(json_response=True, extra_tools=EXTRA_TOOLS, list_extra=SERVER_LIST_EXTRA) as json_server, \
            McpServer(extra_tools=EXTRA_TOOLS, list_extra=SERVER_LIST_EXTRA) as sse_server, \
            McpServer(extra_tools=EXTRA_TOOLS, slow_list=2.0) as slow_server, \
            McpServer(**POLL_SERVER) as poll_server, \
            McpServer(extra_tools=EXTRA_TOOLS, transport="sse") as legacy_server:
        servers = {"json": json_server, "sse": sse_server, "slow": slow_server, "poll": poll_server,
                   "legacy": legacy_server}
        # The HTTP+SSE server: /mcp/sse and /mcp/messages/ as they are.
        routes = [{"match": {"prefix": "/mcp/", "headers": [{"name": "x-upstream", "string_match": {"exact": "legacy"}}]},
                   "route": {"cluster": "mcp_legacy", "timeout": "0s"}}]
        for name, cluster in UPSTREAM_CLUSTERS.items():
            for path in ("/mcp", "/off", "/plain"):
                routes.append({"match": {"path": path, "headers": [{"name": "x-upstream", "string_match": {"exact": name}}]},
                               "route": {"cluster": cluster, "prefix_rewrite": "/mcp", "timeout": "30s"}})
        routes.append({"match": {"prefix": "/", "headers": [{"name": "x-upstream", "string_match": {"exact": "script"}}]},
                       "route": {"cluster": "upstream", "timeout": "30s"}})
        clusters = [static_cluster(UPSTREAM_CLUSTERS[name], "127.0.0.1", server.port) for name, server in servers.items()]
        envoy = Envoy(tools_list_config(), script.port, wasm_path=wasm_path, wasm_config_extra=HOLD_HEADERS,
                      routes=routes, extra_clusters=clusters)
        with envoy:
            yield Stack(envoy, servers, script)


def mcp_headers(upstream: str, *, session: str | None = None, token_value: str | None = None,
                extra: list[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    headers = [("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream"),
               ("x-upstream", upstream), ("x-test-id", uuid.uuid4().hex)]
    if session:
        headers += [("Mcp-Session-Id", session), ("MCP-Protocol-Version", PROTOCOL_VERSION)]
    if token_value:
        headers.append(("Authorization", f"Bearer {token_value}"))
    return headers + list(extra)


INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
              "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                         "clientInfo": {"name": "test_tools_list", "version": "1"}}}


class Session:
    """An MCP session with one of the real servers, through Envoy (`port` = Envoy's, with a
    token) or directly (`port` = the server's, no token, path /mcp)."""

    def __init__(self, port: int, upstream: str, path: str = "/mcp", token_value: str | None = None):
        self.port, self.upstream, self.path, self.token = port, upstream, path, token_value
        self.ids = itertools.count(1)
        reply = self.send(INITIALIZE, session=False)
        assert reply.status == 200, reply.describe()
        self.init_reply = reply
        self.id = reply.header("mcp-session-id")
        assert self.id, reply.describe()
        note = self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert note.status == 202, note.describe()

    def send(self, message, *, session: bool = True, extra: list[tuple[str, str]] = ()) -> Raw:
        headers = mcp_headers(self.upstream, session=self.id if session else None, token_value=self.token, extra=extra)
        return sound(raw_exchange(self.port, "POST", self.path, headers, rpc_body(message)))

    def call(self, method: str, params: dict | None = None) -> tuple[int, Raw]:
        request_id = next(self.ids)
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, **({"params": params} if params else {})}
        return request_id, self.send(message)

    def list_tools(self) -> tuple[dict, Raw]:
        request_id, reply = self.call("tools/list")
        assert reply.status == 200, reply.describe()
        return by_id(messages(reply), request_id), reply


def through(stack: Stack, mode: str, scope: str, path: str = "/mcp", audience: str = MCP) -> Session:
    return Session(stack.envoy.port, mode, path, token(scope, audience))


def direct(stack: Stack, mode: str) -> Session:
    return Session(stack.servers[mode].port, mode)


@pytest.fixture(scope="module")
def reference(stack) -> dict[str, dict]:
    """What each real server answers to tools/list directly: {mode: the JSON-RPC response}."""
    out = {}
    for mode in ("json", "sse", "slow"):
        response, reply = direct(stack, mode).list_tools()
        assert names(response["result"]) == SERVER_TOOLS, response
        expected_type = "application/json" if mode == "json" else "text/event-stream"
        assert reply.content_type == expected_type, reply.describe()
        assert "cacheScope" not in response["result"]  # the SDK sends none on a 2025 session
        out[mode] = response
    return out


def counter(envoy: Envoy, name: str = "mcp_oauth_tools_hidden") -> int:
    return int(envoy.prometheus().get(name, ("counter", 0.0))[1])


MODES = pytest.mark.parametrize("mode", ["json", "sse"])


# ------------------------------------------------------------------------------------------
# The real MCP server, JSON and SSE


@MODES
@pytest.mark.parametrize("scope, hidden", HIDDEN.values(), ids=HIDDEN.keys())
def test_each_token_sees_only_the_tools_its_scopes_allow(stack, reference, mode, scope, hidden):
    response, reply = through(stack, mode, scope).list_tools()
    upstream = reference[mode]["result"]
    result = response["result"]
    # Removed exactly the tools it may not call, the others kept in the server's order, each
    # the very object the server sent (tools no configuration names stay).
    assert names(result) == [n for n in SERVER_TOOLS if n not in hidden], reply.describe()
    assert result["tools"] == [t for t in upstream["tools"] if t["name"] not in hidden]
    assert "list_dir" in names(result) and "add" in names(result)
    # cacheScope private (the server sent none); every other member as the server sent it.
    assert result.get("cacheScope") == "private", result
    assert {k: v for k, v in result.items() if k not in ("tools", "cacheScope")} == \
        {k: v for k, v in upstream.items() if k != "tools"}
    assert result["nextCursor"] == "page-2" and result["_meta"] == {"origin": "upstream", "n": 7}
    assert set(response) == {"jsonrpc", "id", "result"}
    expected_type = "application/json" if mode == "json" else "text/event-stream"
    assert reply.content_type == expected_type, reply.describe()
    if mode == "sse":
        events = sse_events(reply.body)
        assert len(events) == 1 and events[0].get("event") == "message", events
    for name in hidden:
        assert f'"{name}"'.encode() not in reply.body, reply.describe()


@MODES
def test_content_length_matches_the_filtered_body(stack, mode):
    response, reply = through(stack, mode, "mcp:read").list_tools()
    assert len(response["result"]["tools"]) == len(SERVER_TOOLS) - 3
    # sound() already checked the framing; spell out the JSON case, where the server sent a length.
    if reply.framing == "content-length":
        assert int(reply.header("content-length")) == len(reply.body)
    else:
        assert reply.framing == "chunked" and reply.header("content-length") is None, reply.describe()


@MODES
def test_filter_tools_list_false_passes_the_list_byte_for_byte(stack, mode):
    _, direct_reply = direct(stack, mode).list_tools()
    response, reply = through(stack, mode, "mcp:read", "/off", OFF).list_tools()
    assert reply.body == direct_reply.body
    assert names(response["result"]) == SERVER_TOOLS and "cacheScope" not in response["result"]
    assert reply.header("content-length") == direct_reply.header("content-length")


@MODES
def test_resource_without_tool_scopes_is_not_filtered_by_default(stack, mode):
    _, direct_reply = direct(stack, mode).list_tools()
    response, reply = through(stack, mode, "mcp:read", "/plain", PLAIN).list_tools()
    assert reply.body == direct_reply.body
    assert names(response["result"]) == SERVER_TOOLS


@MODES
def test_answers_to_other_calls_are_untouched(stack, mode):
    reference_session = direct(stack, mode)
    session = through(stack, mode, "mcp:admin")
    # initialize, byte for byte
    assert session.init_reply.body == reference_session.init_reply.body
    for method, params in (("tools/call", {"name": "write_file", "arguments": {"text": "x"}}),
                           ("tools/call", {"name": "list_dir", "arguments": {}}),
                           ("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}}),
                           ("ping", None), ("prompts/list", None)):
        _, want = reference_session.call(method, params)
        _, got = session.call(method, params)
        assert (got.status, got.body) == (want.status, want.body), (method, got.describe(), want.describe())
        assert got.header("content-length") == want.header("content-length")


@MODES
def test_counter_counts_every_hidden_tool(stack, mode):
    before = counter(stack.envoy)
    through(stack, mode, "mcp:read").list_tools()          # 3 hidden
    through(stack, mode, "mcp:admin").list_tools()         # 1 hidden
    through(stack, mode, "mcp:admin audit:view").list_tools()  # 0 hidden
    session = through(stack, mode, "mcp:read")
    session.call("tools/call", {"name": "echo", "arguments": {"text": "x"}})  # not a list: 0
    assert counter(stack.envoy) - before == 4
    # a list that is not filtered counts nothing
    through(stack, mode, "mcp:read", "/off", OFF).list_tools()
    assert counter(stack.envoy) - before == 4


def test_the_notification_reaches_the_client_before_the_slow_result(stack, reference):
    """The server sends a log notification on the tools/list stream, then answers 2 s later:
    the notification must reach the client at once, the filtered result 2 s later."""
    for session, hidden in ((direct(stack, "slow"), set()), (through(stack, "slow", "mcp:read"),
                                                              {"write_file", "delete_all", "audit_log"})):
        request_id, reply = session.call("tools/list")
        assert reply.status == 200 and reply.content_type == "text/event-stream", reply.describe()
        found = messages(reply)
        assert [m.get("method") for m in found] == ["notifications/message", None], found
        assert names(by_id(found, request_id)["result"]) == [n for n in SERVER_TOOLS if n not in hidden]
        noted = reply.arrival(b"notifications/message")
        listed = reply.arrival(b'"tools"')
        # at once (the server sends it first), and the result ~2 s after it
        assert noted < 1.0, (session.port, noted, listed)
        assert listed - noted > 1.5, (session.port, noted, listed)


def resume(stack: Stack, session: Session, last_event_id: str, request_id) -> Raw:
    """GET with Last-Event-ID on `session` through Envoy, read until the answer to `request_id`."""
    headers = [h for h in mcp_headers(session.upstream, session=session.id, token_value=session.token,
                                      extra=[("Last-Event-ID", last_event_id)]) if h[0] != "Content-Type"]

    def answered(body: bytes) -> bool:
        complete = body[: max(body.rfind(b"\n\n"), body.rfind(b"\r\r")) + 2]
        try:
            return any(m.get("id") == request_id for m in messages(Raw(200, [("content-type", "text/event-stream")],
                                                                        complete, "", [])))
        except (AssertionError, ValueError):
            return False

    return raw_exchange(stack.envoy.port, "GET", session.path, headers, timeout=15, stop=answered)


def test_a_list_replayed_on_a_resumed_stream_is_filtered(stack, reference):
    """SSE polling (MCP 2025-11-25): the server closes the tools/list stream before answering;
    the client resumes it with GET + Last-Event-ID and gets the result there. That result,
    though it answers no request of this GET, is filtered too."""
    hidden = {"write_file", "delete_all", "audit_log"}
    session = through(stack, "poll", "mcp:read")
    request_id, reply = session.call("tools/list")
    assert reply.status == 200 and reply.content_type == "text/event-stream", reply.describe()
    assert b'"tools"' not in reply.body, reply.describe()  # closed before the result
    last = [e["id"] for e in sse_events(reply.body) if "id" in e][-1]
    replay = resume(stack, session, last, request_id)
    assert replay.status == 200 and replay.content_type == "text/event-stream", replay.describe()
    assert not replay.problems, replay.describe()
    result = by_id(messages(replay), request_id)["result"]
    assert result["tools"] == [t for t in reference["slow"]["result"]["tools"] if t["name"] not in hidden]
    assert result["cacheScope"] == "private"
    for name in hidden:
        assert f'"{name}"'.encode() not in replay.body, replay.describe()


def list_directly(port: int) -> list[dict]:
    """The tools a real server lists to a client bypassing Envoy (resuming the stream when the
    server closed it before the result)."""
    session = Session(port, "direct")
    request_id, reply = session.call("tools/list")
    if b'"tools"' in reply.body:
        return by_id(messages(reply), request_id)["result"]["tools"]
    last = [e["id"] for e in sse_events(reply.body) if "id" in e][-1]
    headers = [h for h in mcp_headers("direct", session=session.id, extra=[("Last-Event-ID", last)])
               if h[0] != "Content-Type"]
    seen = raw_exchange(port, "GET", "/mcp", headers, timeout=15,
                        stop=lambda body: b'"tools"' in body and body.endswith(b"\r\n\r\n"))
    return by_id(messages(seen), request_id)["result"]["tools"]


def test_the_polling_server_replays_the_whole_list_to_a_direct_client(stack):
    """The check of the test above: bypassing Envoy, the resumed stream carries the whole list."""
    assert [t["name"] for t in list_directly(stack.servers["poll"].port)] == SERVER_TOOLS


def test_http_sse_transport_answers_on_the_get_stream_are_filtered(stack):
    """MCP 2024-11-05's HTTP+SSE transport (the SDK's `sse_app`, still served by SDKs and
    spoken by their clients): the tools/list is POSTed to /mcp/messages/ (`202`), its result
    comes on the `GET /mcp/sse` stream opened before. That stream is the only place the list
    reaches the client, so it must be filtered there."""
    tok = token("mcp:read")
    accept = [("Accept", "text/event-stream"), ("x-upstream", "legacy"), ("Authorization", f"Bearer {tok}")]
    stream = RawStream(stack.envoy.port, "GET", "/mcp/sse", accept)
    try:
        opened = stream.read_until(lambda body: any(e.get("event") == "endpoint" for e in complete_events(body)))
        assert opened.status == 200, opened.describe()
        endpoint = next(e["data"] for e in complete_events(opened.body) if e.get("event") == "endpoint")
        assert endpoint.startswith("/mcp/messages/"), endpoint

        def post(message) -> Raw:
            headers = [("Content-Type", "application/json"), ("x-upstream", "legacy"), ("Authorization", f"Bearer {tok}")]
            reply = sound(raw_exchange(stack.envoy.port, "POST", endpoint, headers, rpc_body(message)))
            assert reply.status == 202, reply.describe()
            return reply

        def answer(request_id) -> dict:
            found = stream.read_until(lambda body: any(
                m.get("id") == request_id for m in (json.loads(e["data"]) for e in complete_events(body)
                                                    if e.get("event") == "message")))
            return by_id([json.loads(e["data"]) for e in complete_events(found.body) if e.get("event") == "message"],
                         request_id)

        post({**INITIALIZE, "params": {**INITIALIZE["params"], "protocolVersion": "2024-11-05"}})
        assert "result" in answer(0)
        post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        post({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
        result = answer(5)["result"]
    finally:
        stream.close()
    assert names(result) == [n for n in SERVER_TOOLS if n not in {"write_file", "delete_all", "audit_log"}], names(result)
    assert result.get("cacheScope") == "private"


# ------------------------------------------------------------------------------------------
# The scripted upstream: batches, exact SSE framing, failures


def scripted(stack: Stack, script: str, message, *, scope: str = "mcp:write", mode: str = "json",
             framing: str = "length", eol: str = "lf", extra: list[tuple[str, str]] = ()) -> tuple[Raw, str]:
    headers = mcp_headers("script", token_value=token(scope),
                          extra=[("x-script", script), ("x-mode", mode), ("x-framing", framing), ("x-eol", eol),
                                 *extra])
    test_id = dict(headers)["x-test-id"]
    return raw_exchange(stack.envoy.port, "POST", "/mcp", headers, rpc_body(message)), test_id


def assert_filtered_script_list(response: dict, kept: list[str] = SCRIPT_KEPT_FOR_WRITE) -> None:
    result = response["result"]
    assert names(result) == kept, result
    assert result["tools"] == [t for t in SCRIPT_TOOLS if t["name"] in kept]
    expected = script_list_result()
    assert result["cacheScope"] == "private", result  # the upstream said "public"
    assert {k: v for k, v in result.items() if k not in ("tools", "cacheScope")} == \
        {k: v for k, v in expected.items() if k not in ("tools", "cacheScope")}


SSE_FRAMINGS = pytest.mark.parametrize("mode, framing", [("json", "length"), ("json", "chunked"), ("sse", "length"),
                                                        ("sse", "chunked")])


@SSE_FRAMINGS
def test_batch_with_two_lists_and_a_call(stack, mode, framing):
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
             {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}},
             {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}},
             {"jsonrpc": "2.0", "id": "second", "method": "tools/list", "params": {"cursor": "cursor-2"}}]
    before = counter(stack.envoy)
    reply, _ = scripted(stack, "list", batch, mode=mode, framing=framing)
    sound(reply)
    assert reply.status == 200, reply.describe()
    found = messages(reply)
    assert_filtered_script_list(by_id(found, 1))
    assert_filtered_script_list(by_id(found, "second"))
    assert by_id(found, 2) == {"jsonrpc": "2.0", "id": 2, "result": script_call_result()}
    if mode == "json":
        assert [m["id"] for m in found] == ["second", 2, 1]  # the upstream's order, one array
    else:
        events = sse_events(reply.body)
        assert [e.get("id") for e in events] == [None, "ev-0", "ev-1", "ev-2", None], events
        assert found[0] == NOTE and found[-1] == NOTE_AFTER
        assert [m.get("id") for m in found[1:-1]] == ["second", 2, 1]
    assert counter(stack.envoy) - before == 4  # delete_all and audit_log, twice


@pytest.mark.parametrize("spelling", ["string", "float"])
@pytest.mark.parametrize("mode", ["json", "sse"])
def test_a_list_answered_under_another_spelling_of_its_id_is_not_passed_unfiltered(stack, mode, spelling):
    """The upstream answers tools/list 1 with id "1" (or 1.0), which clients take for 1 (the
    TypeScript SDK compares Number(id)): the list must not reach them unfiltered."""
    reply, _ = scripted(stack, "list", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, mode=mode,
                        extra=[("x-id-spelling", spelling)])
    sound(reply)
    assert b"SECRET-DELETE-ALL" not in reply.body and b"SECRET-AUDIT-LOG" not in reply.body, reply.describe()
    (answer,) = [m for m in messages(reply) if "id" in m]
    if "result" in answer:
        assert_filtered_script_list(answer)
    else:
        assert answer["error"]["code"] == INTERNAL_ERROR, answer


def test_a_list_under_a_media_type_the_python_sdk_reads_as_json_is_not_passed_unfiltered(stack):
    """`application/json-rpc`: the Python SDK's client reads any content-type that starts
    with "application/json" as a JSON answer (mcp/client/streamable_http.py,
    `content_type.startswith("application/json")`), so such a list reaches it as the upstream
    wrote it unless the filter filters (or replaces) it too."""
    reply, _ = scripted(stack, "list", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                        extra=[("x-content-type", "application/json-rpc")])
    sound(reply)
    assert reply.status == 200
    assert b"SECRET-DELETE-ALL" not in reply.body and b"SECRET-AUDIT-LOG" not in reply.body, reply.describe()


@SSE_FRAMINGS
def test_a_call_answer_that_looks_like_a_list_passes_byte_for_byte(stack, mode, framing):
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    reply, test_id = scripted(stack, "list", call, mode=mode, framing=framing)
    sound(reply)
    sent = b"".join(p for _, p in script_list(stack.script.seen(test_id)[-1]).parts)
    assert reply.body == sent, reply.describe()


@pytest.mark.parametrize("eol", ["crlf", "lf", "cr"])
def test_sse_event_split_across_chunks(stack, eol):
    reply, _ = scripted(stack, "split", {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, mode="sse", eol=eol)
    sound(reply)
    assert reply.status == 200 and reply.content_type == "text/event-stream", reply.describe()
    events = sse_events(reply.body)
    found = [json.loads(e["data"]) for e in events]
    assert found[0] == NOTE and found[-1] == NOTE_AFTER and len(found) == 3, found
    assert events[1].get("id") == "ev-7" and events[1].get("event") == "message", events
    assert_filtered_script_list(found[1])
    assert b"SECRET-DELETE-ALL" not in reply.body
    # The notification was not held with the result the upstream sent 1.5 s after it.
    assert reply.arrival(b"before the list") < 1.0
    assert reply.arrival(b'"tools"') - reply.arrival(b"before the list") > 1.2


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("eol", ["crlf", "lf", "cr"])
def test_sse_result_over_many_data_lines(stack, eol, framing):
    reply, _ = scripted(stack, "multiline", {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, mode="sse",
                        eol=eol, framing=framing)
    sound(reply)
    events = sse_events(reply.body)
    assert [json.loads(e["data"]).get("id") for e in events] == [None, 3], events
    assert events[1].get("id") == "ev-ml", events
    assert_filtered_script_list(json.loads(events[1]["data"]))
    assert b"SECRET-DELETE-ALL" not in reply.body


@SSE_FRAMINGS
def test_unparseable_list_becomes_an_internal_error(stack, mode, framing):
    reply, _ = scripted(stack, "broken", {"jsonrpc": "2.0", "id": 41, "method": "tools/list"}, mode=mode,
                        framing=framing)
    sound(reply)
    assert reply.status == 200, reply.describe()  # the upstream's status
    found = messages(reply)
    if mode == "sse":
        assert found[0] == NOTE, found  # the notification before it passes
        found = found[1:]
    assert len(found) == 1, found
    assert_internal_error(found[0], 41, absent=[b"SECRET-DELETE-ALL", b"write_file", b'"tools"'], raw=reply.body)


@pytest.mark.parametrize("mode", ["json", "sse"])
def test_unparseable_batch_answer_becomes_an_error_for_each_list(stack, mode):
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
             {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {}}},
             {"jsonrpc": "2.0", "id": "second", "method": "tools/list"}]
    reply, _ = scripted(stack, "broken", batch, mode=mode)
    sound(reply)
    assert reply.status == 200, reply.describe()
    found = [m for m in messages(reply) if "id" in m]
    assert sorted(str(m["id"]) for m in found) == ["1", "second"], found
    for request_id in (1, "second"):
        assert_internal_error(by_id(found, request_id), request_id, absent=[b"SECRET-DELETE-ALL", b'"tools"'],
                              raw=reply.body)


@pytest.mark.parametrize("pieces", ["many", "one"])
@SSE_FRAMINGS
def test_list_larger_than_max_body_bytes_becomes_an_internal_error(stack, mode, framing, pieces):
    reply, _ = scripted(stack, "big", {"jsonrpc": "2.0", "id": "big", "method": "tools/list"}, mode=mode,
                        framing=framing, extra=[("x-pieces", pieces)])
    sound(reply)
    assert reply.status == 200, reply.describe()
    found = messages(reply)
    if mode == "sse":
        assert found[0] == NOTE, found
        found = found[1:]
    assert len(found) == 1, found
    assert_internal_error(found[0], "big", absent=[b"SECRET-DELETE-ALL", b"bulk_1", b'"tools"'], raw=reply.body)


def test_a_notification_larger_than_max_body_bytes_before_the_list_passes(stack):
    """"Other events of an SSE stream pass through as they arrive": a notification (a long
    log message) larger than max_body_bytes is not the list, so it passes, and the list after
    it arrives filtered."""
    reply, _ = scripted(stack, "big-note", {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}, mode="sse")
    sound(reply)
    found = messages(reply)
    assert [m.get("method") or m.get("id") for m in found] == ["notifications/message", 4], str(found)[:600]
    assert found[0] == BIG_NOTE
    assert_filtered_script_list(found[1])


@SSE_FRAMINGS
def test_compressed_list_becomes_an_internal_error_and_accept_encoding_is_dropped(stack, mode, framing):
    reply, test_id = scripted(stack, "gzip", {"jsonrpc": "2.0", "id": 8, "method": "tools/list"}, mode=mode,
                              framing=framing, extra=[("Accept-Encoding", "gzip, br")])
    sound(reply)
    (seen,) = stack.script.seen(test_id)
    assert "accept-encoding" not in dict(seen["headers"]), seen["headers"]
    assert reply.status == 200, reply.describe()
    assert reply.header("content-encoding") in (None, "identity"), reply.describe()
    found = messages(reply)
    assert found and found[-1].get("id") == 8, found
    assert all(m.get("id") is None for m in found[:-1]), found
    assert_internal_error(found[-1], 8, absent=[b"SECRET-DELETE-ALL", b"\x1f\x8b"], raw=reply.body)


def test_compressed_call_answer_passes_untouched(stack):
    call = {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    reply, test_id = scripted(stack, "gzip", call, extra=[("Accept-Encoding", "gzip")])
    sound(reply)
    assert reply.header("content-encoding") == "gzip", reply.describe()
    (seen,) = stack.script.seen(test_id)
    sent = b"".join(p for _, p in script_gzip(seen).parts)
    assert reply.body == sent
    assert json.loads(gzip.decompress(reply.body)) == {"jsonrpc": "2.0", "id": 6, "result": script_call_result()}


@pytest.mark.parametrize("mode", ["json", "sse"])
def test_a_jsonrpc_error_answer_to_a_list_passes(stack, mode):
    reply, _ = scripted(stack, "error", {"jsonrpc": "2.0", "id": 12, "method": "tools/list"}, mode=mode)
    found = messages(sound(reply))
    assert found == [{"jsonrpc": "2.0", "id": 12, "error": {"code": -32001, "message": "upstream refuses"}}]


def test_hidden_tools_whose_names_are_written_with_escapes_are_removed(stack):
    reply, _ = scripted(stack, "escaped", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    sound(reply)
    assert b"SECRET-DELETE-ALL" not in reply.body and b"SECRET-AUDIT-LOG" not in reply.body, reply.describe()
    result = by_id(messages(reply), 1)["result"]
    assert names(result) == ["echo", "read_notes"] and result["cacheScope"] == "private"


@pytest.mark.parametrize("mode", ["json", "sse"])
def test_over_http2(stack, reference, mode):
    """The same filtering for an HTTP/2 client (no `content-length` may disagree with the body:
    Envoy's HTTP/2 codec would reset the stream)."""
    session = through(stack, mode, "mcp:read")
    headers = [(k.lower(), v) for k, v in mcp_headers(mode, session=session.id, token_value=session.token)]
    reply = h2c.request(stack.envoy.port, "POST", "/mcp", headers, authority=f"127.0.0.1:{stack.envoy.port}",
                        body=rpc_body({"jsonrpc": "2.0", "id": 77, "method": "tools/list"}))
    assert reply.status == 200, reply.describe()
    lengths = [v for k, v in reply.headers if k == "content-length"]
    assert lengths in ([], [str(len(reply.body))]), reply.describe()
    as_raw = Raw(reply.status, reply.headers, reply.body, "h2", [])
    response = by_id(messages(as_raw), 77)
    hidden = {"write_file", "delete_all", "audit_log"}
    assert response["result"]["tools"] == [t for t in reference[mode]["result"]["tools"] if t["name"] not in hidden]
    assert response["result"]["cacheScope"] == "private"


def test_scripted_list_with_other_scopes(stack):
    for scope, kept in (("mcp:read", ["echo", "read_notes", "unlisted_tool"]),
                        ("mcp:admin audit:view", [t["name"] for t in SCRIPT_TOOLS]),
                        ("mcp:read audit:view", ["echo", "read_notes", "audit_log", "unlisted_tool"])):
        reply, _ = scripted(stack, "list", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, scope=scope)
        assert_filtered_script_list(by_id(messages(sound(reply)), 1), kept)


def test_filter_off_passes_the_scripted_list_byte_for_byte(stack):
    headers = mcp_headers("script", token_value=token("mcp:read", OFF),
                          extra=[("x-script", "list"), ("x-mode", "sse"), ("x-framing", "chunked")])
    reply = sound(raw_exchange(stack.envoy.port, "POST", "/off", headers,
                               rpc_body({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})))
    (seen,) = stack.script.seen(dict(headers)["x-test-id"])
    assert reply.body == b"".join(p for _, p in script_list(seen).parts)


# ------------------------------------------------------------------------------------------
# Real clients: the Python SDK's list_tools, the TypeScript SDK's listTools


CLIENT_TOOL_SCOPES = {"write_file": ["mcp:write"], "delete_all": ["mcp:admin"], "audit_log": ["mcp:read", "audit:view"]}


@pytest.fixture(scope="module", params=["plain", "polling"])
def client_stack(request, wasm_path):
    """The authorization server, a real MCP server (SSE; "polling": POLL_SERVER, whose lists
    reach the client only on the stream it resumes), Envoy with tool_scopes and scope_implies."""
    missing = peers_installed()
    if missing:
        pytest.skip(missing)
    server = POLL_SERVER if request.param == "polling" else {"extra_tools": EXTRA_TOOLS}
    with AuthServer() as auth, McpServer(**server) as mcp:
        issuer = {"issuer": auth.issuer, "cluster": "auth_server", "jwks_uri": auth.jwks_uri}

        def config(resource: str) -> dict:
            return {**plugin_config(resource, issuer, tool_scopes=CLIENT_TOOL_SCOPES),
                    "scope_implies": copy.deepcopy(SCOPE_IMPLIES)}

        with FilterEnvoy(config, mcp.port, auth_port=auth.port, wasm_path=wasm_path,
                         wasm_config_extra=HOLD_HEADERS) as envoy:
            yield auth, mcp, envoy


CLIENT_CASES = {
    # sdk, scope the client asks for, tools hidden. The Python SDK asks for the scope of the
    # filter's challenge (mcp:read, its required scope) whatever it is configured with; the
    # TypeScript SDK's client-credentials provider asks for its configured scope.
    "python-read": ("python", "mcp:read", {"write_file", "delete_all", "audit_log"}),
    "typescript-read": ("typescript", "mcp:read", {"write_file", "delete_all", "audit_log"}),
    "typescript-write": ("typescript", "mcp:read mcp:write", {"delete_all", "audit_log"}),
    "typescript-admin-implies-all-but-audit": ("typescript", "mcp:admin", {"audit_log"}),
}


@pytest.mark.parametrize("sdk, scope, hidden", CLIENT_CASES.values(), ids=CLIENT_CASES.keys())
def test_real_client_lists_the_filtered_tools(client_stack, sdk, scope, hidden):
    auth, mcp, envoy = client_stack
    extra = ["--list-tools", "--scope", scope]
    calls = [("echo", {"text": "hi"})]
    if sdk == "python":
        command = py_client_command(PY2, envoy.resource, "cc", auth=auth, calls=calls, extra=extra)
    else:
        command = ts_client_command(envoy.resource, "cc", auth=auth, calls=calls, extra=extra)
    outcome = run_client(command)
    assert outcome.get("ok") and outcome["exit_code"] == 0, json.dumps(outcome)[:3000]
    granted = outcome["tokens"][-1]["claims"]["scope"].split()
    assert sorted(granted) == sorted(scope.split()), granted
    listed = outcome["tools"]
    assert [t["name"] for t in listed] == [n for n in SERVER_TOOLS if n not in hidden], listed
    # the kept tools are the server's own (descriptions as it sent them)
    descriptions = {t["name"]: t.get("description") for t in list_directly(mcp.port)}
    assert all(t.get("description") == descriptions[t["name"]] for t in listed), listed
    assert outcome["results"] == [{"tool": "echo", "text": "hi", "is_error": False}]
