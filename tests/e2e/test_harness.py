"""The harness itself: the WWW-Authenticate parser, the token minting, the HTTP/2 and raw
HTTP/1.1 clients against scripted servers on loopback, and the Envoy launcher's options on a
real Envoy."""
from __future__ import annotations

import http.server
import json
import socket
import struct
import threading
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

import harness.envoy
import scenario
from harness import COUNTER_FLUSH_SECONDS, Client, Envoy, h2c, parse_www_authenticate, split_header_list, tokens


def test_parser_reads_quoted_and_token_params_in_order():
    [challenge] = parse_www_authenticate('Bearer error="invalid_token", error_description="a \\"b\\", c", scope=x')
    assert challenge.scheme == "Bearer"
    assert challenge.params == [("error", "invalid_token"), ("error_description", 'a "b", c'), ("scope", "x")]


def test_parser_separates_challenges_and_token68():
    challenges = parse_www_authenticate(['Newauth abc==, Basic realm="r"', "Bearer"])
    assert [(c.scheme, c.token68, c.params) for c in challenges] == [
        ("Newauth", "abc==", []),
        ("Basic", None, [("realm", "r")]),
        ("Bearer", None, []),
    ]


@pytest.mark.parametrize("bad", ['Bearer a="x', "Bearer a=b c=d", '"x"', "Bearer a=b;"])
def test_parser_rejects_malformed_headers(bad):
    with pytest.raises(ValueError):
        parse_www_authenticate(bad)


def test_split_header_list_lowercases_and_trims():
    assert split_header_list(["Authorization, Content-Type", "mcp-session-id"]) == [
        "authorization", "content-type", "mcp-session-id"]


def _verify(token: str, key_name: str, alg: str) -> None:
    head, body, sig = token.split(".")
    data, signature = f"{head}.{body}".encode(), tokens.b64url_decode(sig)
    public = tokens.private_key(key_name).public_key()
    hash_alg = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}.get(alg[2:], hashes.SHA256)()
    if alg.startswith("RS"):
        public.verify(signature, data, padding.PKCS1v15(), hash_alg)
    elif alg.startswith("PS"):
        public.verify(signature, data, padding.PSS(padding.MGF1(hash_alg), hash_alg.digest_size), hash_alg)
    elif alg.startswith("ES"):
        half = len(signature) // 2
        assert half == (public.curve.key_size + 7) // 8
        der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
        public.verify(der, data, ec.ECDSA(hash_alg))
    else:
        public.verify(signature, data)


@pytest.mark.parametrize(
    "key, alg",
    [("rsa-a", "RS256"), ("rsa-a", "RS512"), ("rsa-b", "PS384"), ("ec-p256", "ES256"), ("ec-p384", "ES384"), ("ed25519", "EdDSA")],
)
def test_minted_tokens_verify_with_the_fixture_public_keys(key, alg):
    token = tokens.mint({"sub": "x"}, key=key, alg=alg)
    header, claims = tokens.decode_unverified(token)
    assert header == {"alg": alg, "typ": "JWT", "kid": key} and claims == {"sub": "x"}
    _verify(token, key, alg)


def test_fixture_jwks_names_each_strong_key_by_kid():
    assert [k["kid"] for k in tokens.fixture_jwks()["keys"]] == ["rsa-a", "rsa-b", "ec-p256", "ec-p384", "ed25519"]


def test_raw_claims_and_unsigned_tokens_are_sent_verbatim():
    token = tokens.mint(raw_claims=b'{"iss":"a","iss":"b"}')
    assert tokens.b64url_decode(token.split(".")[1]) == b'{"iss":"a","iss":"b"}'
    unsigned = tokens.mint_unsigned({"sub": "x"})
    assert unsigned.endswith(".") and json.loads(tokens.b64url_decode(unsigned.split(".")[0]))["alg"] == "none"


def test_corrupted_signature_differs_in_one_bit():
    good = tokens.mint({"sub": "x"}, key="ed25519")
    bad = tokens.mint({"sub": "x"}, key="ed25519", corrupt_signature=True)
    a, b = tokens.b64url_decode(good.split(".")[2]), tokens.b64url_decode(bad.split(".")[2])
    assert sum(bin(x ^ y).count("1") for x, y in zip(a, b)) == 1


# ------------------------------------------------------------------------------------------
# The HTTP/2 client, against a scripted h2c server on loopback


def _hpack_literal_indexed(name_index: int, value: str) -> bytes:
    """Literal with incremental indexing, indexed name, Huffman value (RFC 7541 §6.2.1)."""
    coded = h2c.huffman_encode(value.encode())
    return h2c._int(name_index, 6, 0x40) + h2c._int(len(coded), 7, 0x80) + coded


class ScriptedH2Server:
    """Accepts one h2c connection, records every frame with its arrival time, and answers each
    request when `answer_when(frames of that stream)` says so with `respond(stream)`."""

    def __init__(self, respond, answer_when=lambda frames: any(f[1] & h2c.END_STREAM for f in frames),
                 settings: bytes = b""):
        self.respond = respond
        self.answer_when = answer_when
        self.settings = settings
        self.frames: list[tuple[int, int, int, bytes, float]] = []  # kind, flags, stream, payload, at
        self.preface = b""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            self.preface = h2c._recv_exact(conn, len(h2c.PREFACE))
            conn.sendall(h2c._frame(h2c.SETTINGS, 0, 0, self.settings))
            answered: set[int] = set()
            try:
                while True:
                    head = h2c._recv_exact(conn, 9)
                    length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
                    stream = int.from_bytes(head[5:9], "big")
                    payload = h2c._recv_exact(conn, length)
                    self.frames.append((kind, flags, stream, payload, time.monotonic()))
                    if kind == h2c.SETTINGS and not flags & h2c.ACK:
                        conn.sendall(h2c._frame(h2c.SETTINGS, h2c.ACK, 0, b""))
                    if kind == h2c.DATA and length:
                        credit = struct.pack(">I", length)
                        conn.sendall(h2c._frame(h2c.WINDOW_UPDATE, 0, 0, credit)
                                     + h2c._frame(h2c.WINDOW_UPDATE, 0, stream, credit))
                    if stream and stream not in answered and self.answer_when(self.of_stream(stream)):
                        answered.add(stream)
                        conn.sendall(self.respond(stream))
            except ConnectionError:
                pass

    def of_stream(self, stream: int) -> list[tuple[int, int, int, bytes, float]]:
        return [f for f in self.frames if f[2] == stream]

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


def _response(stream: int, status: str = "200", body: bytes = b"ok", trailers: bytes | None = None) -> bytes:
    block = _hpack_literal_indexed(8, status) + _hpack_literal_indexed(31, "application/json") \
        + h2c._literal("x-custom", "one")
    out = h2c._frame(h2c.HEADERS, h2c.END_HEADERS | (0 if body or trailers else h2c.END_STREAM), stream, block)
    if body:
        out += h2c._frame(h2c.DATA, 0 if trailers else h2c.END_STREAM, stream, body)
    if trailers:
        out += h2c._frame(h2c.HEADERS, h2c.END_HEADERS | h2c.END_STREAM, stream, trailers)
    return out


@pytest.fixture
def h2_server():
    servers = []

    def make(*args, **kwargs) -> ScriptedH2Server:
        servers.append(ScriptedH2Server(*args, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _fields(payload: bytes) -> list[tuple[str, str]]:
    return h2c.Decoder().decode(payload)


def test_h2c_sends_chunks_as_separate_data_frames_then_trailers_with_end_stream(h2_server):
    server = h2_server(_response)
    reply = h2c.request(server.port, "POST", "/mcp", [("Authorization", "Bearer x")],
                        chunks=[b'{"a":', b'1', b'}'], delay=0.2, trailers=[("X-Trailer", "1")])
    assert server.preface == h2c.PREFACE
    frames = server.of_stream(1)
    assert [(kind, flags) for kind, flags, *_ in frames] == [
        (h2c.HEADERS, h2c.END_HEADERS), (h2c.DATA, 0), (h2c.DATA, 0), (h2c.DATA, 0),
        (h2c.HEADERS, h2c.END_HEADERS | h2c.END_STREAM)]
    headers = _fields(frames[0][3])
    assert headers[:4] == [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", "/mcp")]
    assert ("x-test-id", reply.test_id) in headers and ("authorization", "Bearer x") in headers
    assert not [name for name, _ in headers if name == "content-length"]
    assert [payload for _, _, _, payload, _ in frames[1:4]] == [b'{"a":', b'1', b'}']
    assert _fields(frames[4][3]) == [("x-trailer", "1")]
    # delay apart (measured at the server, which may read one late: half the delay is the bound)
    gaps = [b[4] - a[4] for a, b in zip(frames, frames[1:])]
    assert all(gap >= 0.1 for gap in gaps), gaps
    assert (reply.status, reply.body, reply.unsent_chunks) == (200, b"ok", 0)


def test_h2c_chunks_without_trailers_end_with_an_empty_data_frame(h2_server):
    server = h2_server(_response)
    h2c.request(server.port, "POST", "/mcp", chunks=[b"a", b"b"])
    frames = server.of_stream(1)
    assert (frames[0][0], frames[0][1]) == (h2c.HEADERS, h2c.END_HEADERS)
    assert [(kind, flags, payload) for kind, flags, _, payload, _ in frames[1:]] == [
        (h2c.DATA, 0, b"a"), (h2c.DATA, 0, b"b"), (h2c.DATA, h2c.END_STREAM, b"")]


def test_h2c_body_is_one_data_frame_with_end_stream_and_a_content_length(h2_server):
    server = h2_server(_response)
    h2c.request(server.port, "POST", "/mcp", body=b"hello")
    frames = server.of_stream(1)
    assert [(kind, flags, payload) for kind, flags, _, payload, _ in frames[1:]] == [(h2c.DATA, h2c.END_STREAM, b"hello")]
    assert ("content-length", "5") in _fields(frames[0][3])
    # With trailers, END_STREAM moves to them.
    server = h2_server(_response)
    h2c.request(server.port, "POST", "/mcp", body=b"hello", trailers=[("x-trailer", "1")])
    assert [(kind, flags) for kind, flags, *_ in server.of_stream(1)] == [
        (h2c.HEADERS, h2c.END_HEADERS), (h2c.DATA, 0), (h2c.HEADERS, h2c.END_HEADERS | h2c.END_STREAM)]


def test_h2c_sends_the_method_verbatim_and_repeated_fields_separately(h2_server):
    server = h2_server(_response)
    h2c.request(server.port, "pOST", "/mcp", [("authorization", "Bearer a"), ("authorization", "Bearer b")])
    [(kind, flags, _, payload, _)] = server.of_stream(1)
    assert (kind, flags) == (h2c.HEADERS, h2c.END_HEADERS | h2c.END_STREAM)
    fields = _fields(payload)
    assert fields[0] == (":method", "pOST")
    assert [value for name, value in fields if name == "authorization"] == ["Bearer a", "Bearer b"]


def test_h2c_decodes_huffman_and_dynamic_table_fields_and_trailers_across_streams(h2_server):
    trailers = h2c._literal("grpc-status", "0")
    server = h2_server(lambda stream: _response(stream, "403", b"no", trailers) if stream == 1
                       else h2c._frame(h2c.HEADERS, h2c.END_HEADERS | h2c.END_STREAM, stream,
                                       bytes([0x80 | 63, 0x80 | 62])))  # both from the dynamic table
    with h2c.Connection(server.port) as connection:
        first = connection.request("GET", "/a")
        second = connection.request("GET", "/b")
    assert (first.status, first.body) == (403, b"no")
    assert first.headers == [("content-type", "application/json"), ("x-custom", "one")]
    assert first.header("content-type") == "application/json"
    assert first.trailers == [("grpc-status", "0")]
    # Stream 3 on the same connection: index 62 is the newest entry (content-type), 63 :status.
    assert [f[2] for f in server.frames if f[0] == h2c.HEADERS] == [1, 3]
    assert (second.status, second.headers, second.body) == (403, [("content-type", "application/json")], b"")


def test_hpack_decoder_reads_the_rfc_7541_response_examples_with_eviction():
    decoder = h2c.Decoder(256)
    blocks = [  # RFC 7541 C.6.1 - C.6.3 (Huffman, a 256-byte dynamic table)
        "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
        "4883640effc1c0bf",
        "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af"
        "27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
    ]
    decoded = [decoder.decode(bytes.fromhex(block)) for block in blocks]
    assert decoded[0] == [(":status", "302"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                          ("location", "https://www.example.com")]
    assert decoded[1][0] == (":status", "307") and decoded[1][1:] == decoded[0][1:]
    assert decoded[2] == [(":status", "200"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                          ("location", "https://www.example.com"), ("content-encoding", "gzip"),
                          ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")]
    assert [name for name, _ in decoder.dynamic] == ["set-cookie", "content-encoding", "date"]
    assert h2c.huffman_encode(b"www.example.com").hex() == "f1e3c2e5f23a6ba0ab90f4ff"  # C.4.1


def test_h2c_stops_sending_chunks_once_the_response_has_ended(h2_server):
    server = h2_server(lambda stream: _response(stream, "413", b"too large"), answer_when=lambda frames: True)
    reply = h2c.request(server.port, "POST", "/mcp", chunks=[b"a", b"b", b"c"], delay=0.2, trailers=[("x-t", "1")])
    assert (reply.status, reply.body) == (413, b"too large")
    assert reply.unsent_chunks == 4  # three chunks and the trailers
    assert [kind for kind, *_ in server.of_stream(1)] == [h2c.HEADERS]


def test_h2c_splits_a_large_body_at_the_frame_size_and_waits_for_window_updates(h2_server):
    body = bytes(range(256)) * 400  # 102400 bytes: beyond the 65535-byte initial windows
    server = h2_server(_response)
    reply = h2c.request(server.port, "POST", "/mcp", body=body)
    data = [f for f in server.of_stream(1) if f[0] == h2c.DATA]
    assert b"".join(f[3] for f in data) == body and reply.status == 200
    assert max(len(f[3]) for f in data) <= h2c.DEFAULT_MAX_FRAME
    assert [f[1] & h2c.END_STREAM for f in data][-1] and not any(f[1] & h2c.END_STREAM for f in data[:-1])


# ------------------------------------------------------------------------------------------
# The raw HTTP/1.1 client, against a recording server on loopback


class RecordingH1Server:
    """Accepts one connection, records each received piece with its arrival time, and answers
    `response` once the received bytes satisfy `answer_when`."""

    def __init__(self, answer_when, response: bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"):
        self.answer_when = answer_when
        self.response = response
        self.pieces: list[tuple[bytes, float]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def received(self) -> bytes:
        return b"".join(piece for piece, _ in self.pieces)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            answered = False
            try:
                while True:
                    if not answered and self.answer_when(self.received):
                        conn.sendall(self.response)
                        answered = True
                    piece = conn.recv(65536)
                    if not piece:
                        return
                    self.pieces.append((piece, time.monotonic()))
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def h1_server():
    servers = []

    def make(*args, **kwargs) -> RecordingH1Server:
        servers.append(RecordingH1Server(*args, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_raw_request_writes_each_chunk_separately_then_the_last_chunk_and_trailers(h1_server):
    server = h1_server(lambda got: got.endswith(b"0\r\nx-trailer: 1\r\n\r\n"))
    reply = Client(server.port).raw_request("POST", "/mcp", token="t", headers=[("Content-Type", "application/json")],
                                            chunks=[b"abc", b"defgh"], delay=0.2, trailers=[("x-trailer", "1")])
    head, _, rest = server.received.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /mcp HTTP/1.1"
    assert f"x-test-id: {reply.test_id}".encode() in lines
    assert b"Authorization: Bearer t" in lines and b"Transfer-Encoding: chunked" in lines
    assert not [line for line in lines if line.lower().startswith(b"content-length")]
    assert rest == b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\nx-trailer: 1\r\n\r\n"
    # Separate writes, delay apart: the headers, each chunk, the last chunk with the trailers.
    assert [piece for piece, _ in server.pieces[1:]] == [b"3\r\nabc\r\n", b"5\r\ndefgh\r\n", b"0\r\nx-trailer: 1\r\n\r\n"]
    gaps = [b[1] - a[1] for a, b in zip(server.pieces, server.pieces[1:])]
    assert all(gap >= 0.1 for gap in gaps), gaps
    assert (reply.status, reply.body, reply.unsent_chunks) == (200, b"ok", 0)


def test_raw_request_sends_headers_then_pauses_then_the_body(h1_server):
    server = h1_server(lambda got: got.endswith(b"hello"))
    reply = Client(server.port).raw_request("POST", "/mcp", body=b"hello", pause=0.3)
    assert b"Content-Length: 5" in server.received.split(b"\r\n")
    assert server.pieces[-1][0] == b"hello" and server.pieces[-1][1] - server.pieces[0][1] >= 0.29
    assert reply.status == 200 and reply.elapsed >= 0.3


def test_raw_request_stops_sending_once_an_answer_is_readable(h1_server):
    answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    server = h1_server(lambda got: got.endswith(b"\r\n\r\n"), answer)
    reply = Client(server.port).raw_request("POST", "/mcp", chunks=[b"a", b"b"], delay=0.2)
    assert reply.status == 413 and reply.unsent_chunks == 3  # two chunks and the last one
    assert server.received.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    server = h1_server(lambda got: got.endswith(b"\r\n\r\n"), answer)
    reply = Client(server.port).raw_request("POST", "/mcp", body=b"never", pause=0.5)
    assert reply.status == 413 and reply.unsent_chunks == 1 and b"never" not in server.received


def test_raw_request_announces_a_body_it_never_sends_and_keeps_raw_header_bytes(h1_server):
    server = h1_server(lambda got: got.endswith(b"\r\n\r\n"))
    reply = Client(server.port).raw_request("POST", "/mcp", content_length=500,
                                            headers=[("Authorization", b"Bearer a\x00b")])
    lines = server.received.split(b"\r\n")
    assert b"Content-Length: 500" in lines and b"Authorization: Bearer a\x00b" in lines
    assert server.received.endswith(b"\r\n\r\n") and reply.status == 200
    with pytest.raises(TimeoutError):
        silent = h1_server(lambda got: False)
        Client(silent.port).raw_request("POST", "/mcp", content_length=10, timeout=0.3)


def test_raw_request_keeps_framing_headers_it_is_given(h1_server):
    server = h1_server(lambda got: got.endswith(b"0\r\n\r\n"))
    Client(server.port).raw_request("POST", "/mcp", headers=[("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
                                    chunks=[b"abc"], delay=0)
    lines = server.received.split(b"\r\n")
    assert lines.count(b"Content-Length: 3") == 1 and lines.count(b"Transfer-Encoding: chunked") == 1


# ------------------------------------------------------------------------------------------
# The Envoy launcher's HTTP/1.1 trailers option, on a real Envoy


@pytest.mark.parametrize("enabled", [True, False], ids=["http1_trailers", "default"])
def test_http1_trailers_option_lets_request_trailers_reach_the_upstream(upstream, wasm_path, enabled):
    with Envoy(scenario.plugin_config(), upstream.port, wasm_path=wasm_path, concurrency=1,
               http1_trailers=enabled) as envoy:
        hcm = envoy.bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        assert ("http_protocol_options" in hcm) == enabled
        client = Client(envoy.port, upstream)
        # Outside every resource: only Envoy's codecs decide what happens to the trailers.
        h1 = client.raw_request("POST", "/elsewhere", chunks=[b"ab", b"cd"], trailers=[("x-trailer", "1")])
        h2 = h2c.request(envoy.port, "POST", "/elsewhere", chunks=[b"ab", b"cd"], trailers=[("x-trailer", "2")],
                         upstream=upstream)
        [seen_h1] = h1.upstream_requests
        [seen_h2] = h2.upstream_requests
    assert (h1.status, h2.status) == (200, 200)
    assert seen_h1.body == seen_h2.body == b"abcd"
    assert seen_h1.trailers == ([("x-trailer", "1")] if enabled else [])
    assert seen_h2.trailers == ([("x-trailer", "2")] if enabled else [])
    assert h2.header("content-type") == "application/json" and json.loads(h2.body)["body"] == "abcd"


def test_h2_replies_read_like_http1_replies(envoy, upstream):
    denied = h2c.request(envoy.port, "GET", scenario.MCP_PATH, upstream=upstream)
    assert denied.status == 401 and denied.upstream_requests == []
    assert denied.challenge().get("resource_metadata") == scenario.MCP_METADATA_URL
    assert denied.json()["error"] == "invalid_token"
    allowed = h2c.request(envoy.port, "GET", scenario.MCP_PATH, [("authorization", f"Bearer {scenario.token()}")],
                          upstream=upstream)
    assert allowed.status == 200 and [r.path for r in allowed.upstream_requests] == [scenario.MCP_PATH]


# ------------------------------------------------------------------------------------------
# Counter reads wait for the filter's flush


class _StubAdmin(http.server.BaseHTTPRequestHandler):
    pages = {
        "/stats?filter=mcp_oauth": "wasmcustom.mcp_oauth_requests_allowed: 3\nmcp_oauth_keys_in_use: 2\n"
                                   "mcp_oauth_histogram: P0(nan,1) P25(nan,2)\n",
        "/stats/prometheus": "# TYPE mcp_oauth_requests_allowed counter\nmcp_oauth_requests_allowed{} 3\n"
                             "# TYPE envoy_x gauge\nenvoy_x{a=\"1\"} 1\nenvoy_x{a=\"2\"} 2\nuntyped_one 5\n",
    }

    def do_GET(self):  # noqa: N802
        body = self.pages.get(self.path, "").encode()
        self.send_response(200 if self.path in self.pages else 404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_stats_reads_wait_for_the_counter_flush_then_parse(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubAdmin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    envoy = Envoy({}, 1)
    envoy.admin_port = server.server_address[1]
    try:
        for read, want in (
            (envoy.stats, {"mcp_oauth_requests_allowed": 3, "mcp_oauth_keys_in_use": 2}),
            (envoy.prometheus, {"mcp_oauth_requests_allowed": ("counter", 3.0), "envoy_x": ("gauge", 3.0),
                                "untyped_one": ("untyped", 5.0)}),
            (lambda: envoy.admin_get("/stats?filter=mcp_oauth")[0], 200),
        ):
            started = time.monotonic()
            assert read() == want
            assert time.monotonic() - started >= COUNTER_FLUSH_SECONDS
        started = time.monotonic()
        assert envoy.admin_get("/ready")[0] == 404  # not a stats page: no wait
        assert time.monotonic() - started < COUNTER_FLUSH_SECONDS
    finally:
        envoy.stop()
        server.shutdown()
        server.server_close()


def test_an_envoy_whose_chosen_port_was_taken_meanwhile_starts_on_another(upstream, wasm_path, monkeypatch):
    taken = socket.create_server(("127.0.0.1", 0))
    picks = iter([taken.getsockname()[1]])
    real_free_port = harness.envoy.free_port
    monkeypatch.setattr(harness.envoy, "free_port", lambda: next(picks, None) or real_free_port())
    rendered = []

    def bootstrap_for(port: int) -> dict:
        rendered.append(port)
        return harness.envoy.render_bootstrap(scenario.plugin_config(), upstream.port, wasm_path=wasm_path,
                                              listen_port=port)

    try:
        with Envoy(bootstrap_for_port=bootstrap_for, concurrency=1) as envoy:
            assert rendered[0] == taken.getsockname()[1] and len(rendered) == 2
            assert envoy.port == envoy.listen_port == rendered[1]
            assert Client(envoy.port, upstream).get(scenario.MCP_PATH).status == 401
    finally:
        taken.close()
