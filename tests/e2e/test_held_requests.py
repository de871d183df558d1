"""Requests the filter holds are released only by their decision (README, Security).

A request is held while its issuer's first key set loads, while an unknown `kid` triggers a
refetch, and while its body is read for per-tool scopes. The end of the body, or trailers
(RFC 9113 §8.1 over HTTP/2; a chunked HTTP/1.1 body's trailer section, RFC 9112 §7.1.2, where
Envoy passes it on) must never release it: each test sends a request that must be refused,
ends it with trailers while it is held, and checks that the upstream saw nothing of it (or,
where the operator lets headers go first, none of its body).

The same file covers the other ways past a filter that a review found: paths in another case,
methods in another case, an authority that names no tenant, repeated `Mcp-Name`/`Mcp-Method`
headers, and a body that the host never delivers to held headers. Every Envoy runs two workers.
"""
from __future__ import annotations

import threading
import time

import pytest

import expect
import scenario
from harness import Client, Envoy, h2c, start_expecting_failure, tokens
from harness.keyserver import KeyServer, json_answer, jwks
from test_mcp_scopes import (
    HOLD_HEADERS,
    body_of,
    insufficient_scope,
    invalid_request,
    mcp_scopes_config,
    mcp_token,
    tool_call,
)

TRAILERS = [("x-checksum", "1")]
JWKS_PATH = "/jwks"


def h2_post(port: int, body: bytes, *, token: str | None, path: str = "/mcp", method: str = "POST",
            authority: str = "127.0.0.1", headers=(), trailers=TRAILERS, chunks: int = 1,
            delay: float = 0.05) -> h2c.H2Reply:
    """POST over HTTP/2: HEADERS, the body in `chunks` DATA frames `delay` apart, then the
    trailers carrying END_STREAM."""
    fields = [("content-type", "application/json"), *headers]
    if token is not None:
        fields.append(("authorization", f"Bearer {token}"))
    size = max(1, -(-len(body) // chunks))
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return h2c.request(port, method, path, fields, authority=authority, chunks=pieces, delay=delay,
                       trailers=trailers)


def h1_post(client: Client, body: bytes, *, token: str | None, chunks: int = 3, delay: float = 0.05, headers=()):
    """POST over HTTP/1.1 with `Transfer-Encoding: chunked`, the body in `chunks` chunks, then
    a trailer section after the last chunk."""
    size = max(1, -(-len(body) // chunks))
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return client.raw_request("POST", "/mcp", token=token, chunks=pieces, delay=delay, trailers=TRAILERS,
                              headers=[("Content-Type", "application/json"), *headers])


def upstream_of(upstream, reply, settle: float = 0.3):
    time.sleep(settle)
    return upstream.requests_with_test_id(reply.test_id)


def nothing_reached(upstream, reply) -> None:
    seen = upstream_of(upstream, reply)
    assert not seen, f"upstream received (part of) a held request that was refused: {[r.to_json() for r in seen]}"


def no_body_reached(upstream, reply, body: bytes) -> None:
    """Headers may have gone first (`hold_headers_for_body: false`); no byte of the body may."""
    for request in upstream_of(upstream, reply, settle=0.5):
        assert request.body == b"", f"upstream received body bytes of a refused request: {request.to_json()}"


# ------------------------------------------------------------------------------------------
# The body hold, in both modes


MODES = {
    # hold_headers_for_body, the wasm filter's extra settings
    "headers-held": (True, HOLD_HEADERS),
    "headers-first": (False, {}),
}


@pytest.fixture(params=MODES.keys())
def body_mode(request, envoys):
    hold, extra = MODES[request.param]
    envoy = envoys.get(mcp_scopes_config(hold_headers_for_body=hold), wasm_config_extra=extra, http1_trailers=True)
    client = Client(envoy.port, envoys.upstream, timeout=8.0)
    client.envoy = envoy
    return hold, client


def refused_upstream(hold: bool, client: Client, reply, body: bytes) -> None:
    if hold:
        nothing_reached(client.upstream, reply)
    else:
        no_body_reached(client.upstream, reply, body)


@pytest.mark.parametrize("chunks", [1, 4])
def test_trailers_do_not_release_a_forbidden_tool_call_over_http2(body_mode, chunks):
    hold, client = body_mode
    body = body_of(tool_call("delete_all")).encode()
    reply = h2_post(client.port, body, token=mcp_token("mcp:read"), chunks=chunks)
    insufficient_scope(reply, "mcp:read mcp:admin")
    refused_upstream(hold, client, reply, body)


def test_trailers_do_not_release_a_forbidden_tool_call_over_chunked_http1(body_mode):
    hold, client = body_mode
    body = body_of(tool_call("write_file")).encode()
    reply = h1_post(client, body, token=mcp_token("mcp:read"))
    insufficient_scope(reply, "mcp:read mcp:write")
    refused_upstream(hold, client, reply, body)


def test_a_body_ended_by_trailers_is_decided_whole_and_an_allowed_one_arrives_whole(body_mode):
    _, client = body_mode
    body = body_of([tool_call("echo", 1), tool_call("write_file", 2)]).encode()
    reply = h2_post(client.port, body, token=mcp_token("mcp:write"), chunks=5)
    assert reply.status == 200, reply.describe()
    seen = upstream_of(client.upstream, reply, settle=0.1)
    assert len(seen) == 1 and seen[0].body == body, [r.to_json() for r in seen]
    reply = h1_post(client, body, token=mcp_token("mcp:write"), chunks=4)
    assert reply.status == 200, reply.describe()
    assert reply.upstream_requests and reply.upstream_requests[0].body == body
    # Split differently, the same batch with a forbidden member is refused as a whole.
    reply = h2_post(client.port, body, token=mcp_token("mcp:read"), chunks=7)
    insufficient_scope(reply, "mcp:read mcp:write")


def test_trailers_without_a_body_end_a_tool_call_post_as_an_empty_body(body_mode):
    hold, client = body_mode
    reply = h2c.request(client.port, "POST", "/mcp", [("authorization", f"Bearer {mcp_token('mcp:admin')}")],
                        trailers=TRAILERS)
    invalid_request(reply)
    refused_upstream(hold, client, reply, b"")


# ------------------------------------------------------------------------------------------
# Holds for keys: the first key set, and the refetch for an unknown kid


def remote_keys_config(**tunables) -> dict:
    config = scenario.single_resource_config()
    config["issuers"] = [{"issuer": scenario.ISSUER, "jwks_uri": "http://keys.test/jwks", "cluster": "keyserver",
                          **tunables}]
    return config


@pytest.fixture
def keyed(upstream, wasm_path):
    """A key server and an Envoy (allow_on_headers_stop_iteration, HTTP/1.1 trailers on) that
    fetches the /mcp issuer's keys from it; started by the test with `start(**tunables)`."""
    keys = KeyServer().start()
    started: list[Envoy] = []

    def start(**tunables) -> Client:
        envoy = Envoy(remote_keys_config(**tunables), upstream.port, wasm_path=wasm_path,
                      extra_clusters=[keys.cluster("keyserver")], wasm_config_extra=HOLD_HEADERS,
                      http1_trailers=True)
        started.append(envoy)
        envoy.start()
        client = Client(envoy.port, upstream, timeout=8.0)
        client.envoy = envoy
        return client

    try:
        yield keys, start
    finally:
        for envoy in started:
            envoy.stop()
        keys.stop()


def forged(kid: str = "rsa-a") -> str:
    """A token for /mcp with the issuer's `kid`, signed by a key the issuer never published."""
    return tokens.mint(scenario.claims(), key="rsa-b", kid=kid)


def assert_keys_unavailable(reply) -> None:
    assert reply.status == 503, reply.describe()
    assert reply.header("retry-after"), reply.describe()


def test_trailers_do_not_release_a_request_waiting_for_the_first_key_set(keyed):
    keys, start = keyed
    release = threading.Event()
    keys.then(JWKS_PATH, json_answer(jwks(["rsa-a"]), hold=release, hold_timeout=6.0))
    keys.serve_jwks(JWKS_PATH, ["rsa-a"])
    client = start(jwks_wait_ms=1500)
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    for send in (lambda t: h2_post(client.port, body, token=t, chunks=2),
                 lambda t: h1_post(client, body, token=t)):
        reply = send(forged())
        assert_keys_unavailable(reply)
        nothing_reached(client.upstream, reply)
    release.set()
    keys.wait_for_count(JWKS_PATH, 1, timeout=3.0)
    deadline = time.monotonic() + 5.0
    while True:
        reply = h2_post(client.port, body, token=forged())
        if reply.status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert reply.status == 401, reply.describe()
    nothing_reached(client.upstream, reply)
    reply = h2_post(client.port, body, token=scenario.token())
    assert reply.status == 200, reply.describe()
    assert upstream_of(client.upstream, reply, settle=0.1)[0].body == body


def test_trailers_do_not_release_a_request_whose_first_key_set_never_loads(keyed):
    keys, start = keyed
    keys.go_down()
    client = start(jwks_wait_ms=1000)
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    for _ in range(4):  # both workers
        reply = h2_post(client.port, body, token=forged(), chunks=3, delay=0.1)
        assert_keys_unavailable(reply)
        nothing_reached(client.upstream, reply)
        reply = h1_post(client, body, token=forged(), delay=0.1)
        assert_keys_unavailable(reply)
        nothing_reached(client.upstream, reply)


def test_trailers_do_not_release_a_request_held_for_an_unknown_kid_refetch(keyed):
    keys, start = keyed
    keys.serve_jwks(JWKS_PATH, ["rsa-a"])
    client = start()
    keys.wait_for_count(JWKS_PATH, 1, timeout=5.0)
    deadline = time.monotonic() + 5.0
    while client.request("GET", "/mcp", token=scenario.token()).status != 200:
        assert time.monotonic() < deadline, "keys never loaded"
        time.sleep(0.1)
    # The refetch answers after a second: the request is held that long, and its trailers
    # arrive in the meantime.
    keys.then(JWKS_PATH, json_answer(jwks(["rsa-a"]), delay=1.0))
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    reply = h2_post(client.port, body, token=forged(kid="attacker"), chunks=3, delay=0.15)
    assert reply.status == 401, reply.describe()
    assert reply.elapsed >= 0.5, f"answered after {reply.elapsed:.2f}s: not held for the refetch"
    assert reply.json()["error_description"] == "signing key not found (unknown kid)", reply.describe()
    nothing_reached(client.upstream, reply)
    assert keys.count(JWKS_PATH) == 2, keys.paths()


# ------------------------------------------------------------------------------------------
# Paths and methods in another case


CASE_PATHS = ["/MCP", "/Mcp/", "/mCp/tools", "/MCP?x=1", "/%4DCP"]


@pytest.mark.parametrize("path", CASE_PATHS)
def test_paths_in_another_case_are_challenged(client, path):
    reply = client.request("POST", path, headers=[("Content-Type", "application/json")], body="{}")
    expect.challenge(reply, 401, [("resource_metadata", scenario.MCP_METADATA_URL),
                                  ("scope", scenario.MCP_REQUIRED_SCOPE)])
    expect.not_forwarded(reply)
    reply = h2c.request(client.port, "POST", path, body=b"{}")
    assert reply.status == 401, reply.describe()
    assert not upstream_of(client.upstream, reply)


def test_paths_in_another_case_pass_with_a_valid_token(client):
    reply = client.request("GET", "/MCP/x", token=scenario.token())
    seen = expect.forwarded_once(reply)
    assert seen.path == "/MCP/x"
    assert seen.header_values("authorization") == []


def test_resources_whose_paths_differ_only_in_case_are_refused(upstream, wasm_path):
    config = scenario.plugin_config()
    config["resources"][1]["resource"] = "https://other.example.com/MCP"
    outcome = start_expecting_failure(config, upstream.port, wasm_path=wasm_path, timeout=20)
    tail = "\n".join(outcome.log.splitlines()[-20:])
    assert not outcome.became_ready and outcome.exit_code != 0, tail
    assert "resources[1].resource" in outcome.log and "only in case" in outcome.log, tail


@pytest.fixture
def scopes_client(envoys) -> Client:
    envoy = envoys.get(mcp_scopes_config(), wasm_config_extra=HOLD_HEADERS)
    client = Client(envoy.port, envoys.upstream, timeout=8.0)
    client.envoy = envoy
    return client


@pytest.mark.parametrize("method", ["pOST", "post", "PUT", "PATCH", "GET"])
def test_a_forbidden_tool_call_is_read_and_refused_whatever_the_method(scopes_client, method):
    body = body_of(tool_call("delete_all")).encode()
    fields = [("content-type", "application/json"), ("authorization", f"Bearer {mcp_token('mcp:read')}")]
    reply = h2c.request(scopes_client.port, method, "/mcp", fields, body=body)
    insufficient_scope(reply, "mcp:read mcp:admin")
    nothing_reached(scopes_client.upstream, reply)


def test_an_allowed_tool_call_in_another_method_spelling_is_forwarded_whole(scopes_client):
    body = body_of(tool_call("echo")).encode()
    fields = [("content-type", "application/json"), ("authorization", f"Bearer {mcp_token('mcp:read')}")]
    reply = h2c.request(scopes_client.port, "PUT", "/Mcp", fields, body=body)
    assert reply.status == 200, reply.describe()
    assert upstream_of(scopes_client.upstream, reply, settle=0.1)[0].body == body
    # The echo upstream (Python's http.server) refuses a `pOST` itself: its 501 shows the
    # allowed request reached it.
    reply = h2c.request(scopes_client.port, "pOST", "/mcp", fields, body=body)
    assert reply.status == 501 and reply.header("x-envoy-upstream-service-time"), reply.describe()


# ------------------------------------------------------------------------------------------
# Repeated Mcp-Name / Mcp-Method


REPEATED = {
    "name-forbidden-first": [("mcp-name", "delete_all"), ("mcp-name", "echo")],
    "name-forbidden-last": [("mcp-name", "echo"), ("mcp-name", "delete_all")],
    "method-disagreeing": [("mcp-method", "tools/call"), ("mcp-method", "tools/list")],
}


@pytest.mark.parametrize("headers", REPEATED.values(), ids=REPEATED.keys())
def test_every_value_of_a_repeated_mcp_header_must_agree_with_the_body(scopes_client, headers):
    body = body_of(tool_call("echo")).encode()
    token = mcp_token("mcp:admin")
    reply = h2c.request(scopes_client.port, "POST", "/mcp",
                        [("content-type", "application/json"), ("authorization", f"Bearer {token}"), *headers],
                        body=body)
    invalid_request(reply)
    assert reply.json()["error_description"] == "Mcp-Method or Mcp-Name header does not match the body"
    nothing_reached(scopes_client.upstream, reply)
    reply = scopes_client.request("POST", "/mcp", token=token, body=body,
                                  headers=[("Content-Type", "application/json"), *headers])
    invalid_request(reply)
    expect.not_forwarded(reply)


def test_repeated_mcp_headers_that_all_agree_pass(scopes_client):
    body = body_of(tool_call("echo")).encode()
    headers = [("Mcp-Name", "echo"), ("Mcp-Name", "echo"), ("Mcp-Method", "tools/call")]
    reply = scopes_client.request("POST", "/mcp", token=mcp_token("mcp:read"), body=body,
                                  headers=[("Content-Type", "application/json"), *headers])
    seen = expect.forwarded_once(reply)
    assert seen.body == body


# ------------------------------------------------------------------------------------------
# Tenants sharing a path: the authority picks, or nobody


MCP_A = "https://mcp.example.com/mcp"
MCP_B = "https://other.example.com/mcp"


@pytest.fixture
def tenants(envoys) -> Client:
    config = scenario.plugin_config()
    config["resources"][1] = {"resource": MCP_B, "authorization_servers": [scenario.ISSUER]}
    envoy = envoys.get(config)
    client = Client(envoy.port, envoys.upstream, timeout=8.0)
    client.envoy = envoy
    return client


def assert_misdirected(reply) -> None:
    assert reply.status == 421, reply.describe()
    assert reply.json()["error"] == "misdirected_request", reply.describe()
    assert not reply.header_values("www-authenticate"), reply.describe()


@pytest.mark.parametrize("authority", ["localhost.", "127.0.0.1", "mcp.example.com:8443", "mcp.example.comx",
                                       "other.example.com:80"])
def test_an_authority_that_names_no_tenant_is_misdirected(tenants, authority):
    for audience in (MCP_A, MCP_B):
        reply = tenants.request("GET", "/mcp", token=scenario.token(audience), host_header=authority)
        assert_misdirected(reply)
        expect.not_forwarded(reply)
        reply = h2c.request(tenants.port, "GET", "/mcp", [("authorization", f"Bearer {scenario.token(audience)}")],
                            authority=authority)
        assert reply.status == 421, reply.describe()
        assert not upstream_of(tenants.upstream, reply)
    reply = tenants.request("GET", "/mcp", host_header=authority)
    assert_misdirected(reply)


@pytest.mark.parametrize("authority", ["mcp.example.com.", "MCP.Example.COM", "mcp.example.com:443",
                                       "mcp.example.com.:443"])
def test_an_authority_is_normalized_before_it_picks_a_tenant(tenants, authority):
    reply = tenants.request("GET", "/mcp", token=scenario.token(MCP_A), host_header=authority)
    expect.forwarded_once(reply)
    # The other tenant's token is for another resource there.
    reply = tenants.request("GET", "/mcp", token=scenario.token(MCP_B), host_header=authority)
    expect.invalid_token(reply, scenario.token(MCP_B), scenario.MCP_METADATA_URL, scenario.MCP_REQUIRED_SCOPE)
    expect.not_forwarded(reply)
    reply = h2c.request(tenants.port, "GET", "/mcp", [("authorization", f"Bearer {scenario.token(MCP_A)}")],
                        authority=authority)
    assert reply.status == 200, reply.describe()


def test_the_second_tenant_is_picked_by_its_own_authority(tenants):
    reply = tenants.request("GET", "/mcp/x", token=scenario.token(MCP_B), host_header="OTHER.example.com.")
    expect.forwarded_once(reply)


# ------------------------------------------------------------------------------------------
# hold_headers_for_body and what Envoy delivers


def test_held_headers_without_a_delivered_body_get_503_and_a_log_line_naming_the_setting(envoys):
    """`hold_headers_for_body: true` (the default) on an Envoy without
    `allow_on_headers_stop_iteration`: Envoy never hands the body to a filter that holds the
    headers, so the request gets 503 after `body_wait_ms`; nothing is released on a guess."""
    envoy = envoys.get(mcp_scopes_config(body_wait_ms=800))
    client = Client(envoy.port, envoys.upstream, timeout=8.0)
    client.envoy = envoy
    for tool in ("echo", "delete_all"):
        started = time.monotonic()
        reply = client.request("POST", "/mcp", token=mcp_token("mcp:read"), body=body_of(tool_call(tool)),
                               headers=[("Content-Type", "application/json")])
        elapsed = time.monotonic() - started
        assert reply.status == 503, reply.describe()
        assert reply.json()["error"] == "temporarily_unavailable", reply.describe()
        assert 0.7 <= elapsed <= 3.0, f"503 after {elapsed:.2f}s; body_wait_ms is 800"
        nothing_reached(client.upstream, reply)
    log = envoy.log_text()
    assert "allow_on_headers_stop_iteration" in log and "hold_headers_for_body" in log, envoy.log_tail()


def test_held_headers_whose_body_arrives_late_are_decided_when_it_arrives(scopes_client):
    """With the Envoy setting, a body that takes longer than any probe would wait (1.5 s) is
    still read while the headers are held: the forbidden call never reaches the upstream."""
    body = body_of(tool_call("delete_all")).encode()
    reply = scopes_client.raw_request("POST", "/mcp", token=mcp_token("mcp:read"), body=body, pause=1.5,
                                      headers=[("Content-Type", "application/json")])
    insufficient_scope(reply, "mcp:read mcp:admin")
    nothing_reached(scopes_client.upstream, reply)


def test_a_body_that_does_not_arrive_whole_within_body_wait_ms_gets_408(envoys):
    envoy = envoys.get(mcp_scopes_config(body_wait_ms=600), wasm_config_extra=HOLD_HEADERS)
    client = Client(envoy.port, envoys.upstream, timeout=8.0)
    body = body_of(tool_call("echo")).encode()
    reply = client.raw_request("POST", "/mcp", token=mcp_token("mcp:read"),
                               chunks=[body[:10], body[10:20], body[20:]], delay=0.5,
                               headers=[("Content-Type", "application/json")])
    assert reply.status == 408, reply.describe()
    assert "600 ms" in reply.json()["error_description"], reply.describe()
    nothing_reached(client.upstream, reply)


# ------------------------------------------------------------------------------------------
# Tokens typed as another kind of JWT (RFC 8725 §3.11)


@pytest.mark.parametrize("typ", ["logout+jwt", "secevent+jwt", "application/logout+jwt", "ID-TOKEN+JWT"])
def test_a_jwt_typed_as_another_kind_of_token_is_invalid(client, typ):
    token = tokens.mint(scenario.claims(), header_extra={"typ": typ})
    reply = client.request("GET", "/mcp", token=token)
    expect.invalid_token(reply, token, scenario.MCP_METADATA_URL, scenario.MCP_REQUIRED_SCOPE)
    assert "typ" in reply.json()["error_description"], reply.describe()
    expect.not_forwarded(reply)


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "application/at+jwt", None])
def test_access_token_types_and_no_type_are_accepted(client, typ):
    header = {"alg": "RS256", "kid": "rsa-a", **({} if typ is None else {"typ": typ})}
    reply = client.request("GET", "/mcp", token=tokens.mint(scenario.claims(), header=header))
    expect.forwarded_once(reply)
