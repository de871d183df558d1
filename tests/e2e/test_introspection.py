"""Opaque access tokens checked by RFC 7662 introspection, on the wire (README, Opaque tokens).

The authorization server is npm `oidc-provider` issuing **opaque** access tokens bound to the
RFC 8707 resource (`peers/auth-server.mjs --opaque`), with introspection and revocation on and
two confidential clients for the filter (client_secret_basic and client_secret_post). Envoy runs
two workers; the client secret reaches the wasm VM as an environment variable. Counts of
introspection calls are taken at the authorization server itself.
"""
from __future__ import annotations

import base64
import concurrent.futures
import json
import secrets
import time

import pytest

import expect
from harness import Client, h2c
from harness.keyserver import KeyServer, json_answer
from harness.peers import PY2, AuthServer, FilterEnvoy, McpServer, peers_installed, py_client_command, run_client

pytestmark = pytest.mark.skipif(bool(peers_installed()), reason=peers_installed() or "")

INTROSPECT = "/token/introspection"
CACHE_SECONDS = 2


@pytest.fixture(scope="module")
def auth():
    with AuthServer(opaque=True) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(auth, upstream, wasm_path):
    """Introspection with the endpoint discovered, short cache, tool scopes for the step-up."""
    envoy = FilterEnvoy.for_introspection(
        auth, upstream.port, wasm_path=wasm_path, host_env=True,
        wasm_config_extra={"allow_on_headers_stop_iteration": True},
        introspection={"cache_seconds": CACHE_SECONDS, "negative_cache_seconds": 1},
        resource_extra={"tool_scopes": {"admin_tool": ["mcp:admin"]}})
    with envoy:
        client = Client(envoy.port, upstream, timeout=10.0)
        client.envoy = envoy
        yield client


def token_for(auth: AuthServer, resource: str, scope: str = "mcp:read") -> str:
    return auth.client_credentials_token(resource, scope)["access_token"]


def introspections(auth: AuthServer) -> int:
    return auth.requests_to("POST", INTROSPECT)


def rpc_call(tool: str) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}})


def test_a_genuine_opaque_token_passes_with_its_answer_s_members_as_headers(auth, gateway):
    token = token_for(auth, gateway.envoy.resource)
    assert token.count(".") != 2, "the authorization server issued an opaque token"
    reply = gateway.request("GET", "/mcp", token=token)
    seen = expect.forwarded_once(reply)
    assert seen.header_values("authorization") == []
    assert seen.header_values("x-mcp-client") == [auth.cc_client["client_id"]]


def test_concurrent_requests_with_one_token_make_at_most_one_call_per_worker(auth, gateway):
    token = token_for(auth, gateway.envoy.resource)
    before = introspections(auth)
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(lambda _: gateway.request("GET", "/mcp", token=token), range(32)))
    assert [r.status for r in replies] == [200] * 32
    calls = introspections(auth) - before
    assert 1 <= calls <= 2, f"{calls} introspection calls for one token on two workers"
    # Cached for every worker: no further call.
    for _ in range(8):
        assert gateway.request("GET", "/mcp", token=token).status == 200
    assert introspections(auth) - before == calls


def test_a_revoked_token_is_refused_once_its_cached_answer_expires(auth, gateway):
    token = token_for(auth, gateway.envoy.resource)
    assert gateway.request("GET", "/mcp", token=token).status == 200
    assert auth.revoke_confidential(token) == 200
    deadline = time.monotonic() + CACHE_SECONDS + 3
    while True:
        reply = gateway.request("GET", "/mcp", token=token)
        if reply.status != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    expect.challenge(reply, 401, [("error", "invalid_token"), ("error_description", None),
                                  ("resource_metadata", None), ("scope", "mcp:read")])
    assert reply.json()["error_description"] == "token is not active"
    expect.not_forwarded(reply)


def test_a_token_issued_for_another_resource_is_refused(auth, gateway):
    token = token_for(auth, "https://elsewhere.example.com/mcp")
    reply = gateway.request("GET", "/mcp", token=token)
    expect.invalid_token(reply, token, f"{gateway.envoy.resource.rsplit('/mcp', 1)[0]}/.well-known/oauth-protected-resource/mcp", "mcp:read")
    assert "audience" in reply.json()["error_description"]
    expect.not_forwarded(reply)


def test_a_random_token_is_inactive_and_refused(auth, gateway):
    reply = gateway.request("GET", "/mcp", token=secrets.token_urlsafe(32))
    assert reply.status == 401, reply.describe()
    assert reply.json()["error_description"] == "token is not active"
    expect.not_forwarded(reply)


def test_insufficient_scope_gets_the_step_up_challenge(auth, gateway):
    token = token_for(auth, gateway.envoy.resource, "mcp:read")
    reply = gateway.request("POST", "/mcp", token=token, body=rpc_call("admin_tool"),
                            headers=[("Content-Type", "application/json")])
    expect.challenge(reply, 403, [("error", "insufficient_scope"), ("scope", "mcp:read mcp:admin"),
                                  ("resource_metadata", None), ("error_description", None)])
    expect.not_forwarded(reply)
    admin = token_for(auth, gateway.envoy.resource, "mcp:read mcp:admin")
    reply = gateway.request("POST", "/mcp", token=admin, body=rpc_call("admin_tool"),
                            headers=[("Content-Type", "application/json")])
    expect.forwarded_once(reply)


def test_trailers_do_not_release_a_request_waiting_for_its_introspection(auth, gateway):
    token = token_for(auth, gateway.envoy.resource, "mcp:read")
    body = rpc_call("admin_tool").encode()
    reply = h2c.request(gateway.port, "POST", "/mcp", [("authorization", f"Bearer {token}"),
                        ("content-type", "application/json")], chunks=[body[:10], body[10:]], delay=0.05,
                        trailers=[("x-t", "1")])
    assert reply.status == 403, reply.describe()
    time.sleep(0.3)
    assert not gateway.upstream.requests_with_test_id(reply.test_id)


def test_counts_introspections_and_cache_lookups(auth, gateway):
    token = token_for(auth, gateway.envoy.resource)
    before = gateway.envoy.stats()
    for _ in range(3):
        gateway.request("GET", "/mcp", token=token)
    gateway.request("GET", "/mcp", token=secrets.token_urlsafe(24))
    after = gateway.envoy.stats()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta["mcp_oauth_introspections_active"] >= 1
    assert delta["mcp_oauth_introspections_inactive"] >= 1
    assert delta["mcp_oauth_introspection_cache_hits"] >= 1
    assert delta["mcp_oauth_introspection_cache_misses"] >= 2
    assert delta["mcp_oauth_requests_denied_token_inactive"] == 1


# ------------------------------------------------------------------------------------------
# Failing closed


def test_the_authorization_server_down_means_503_never_allowed(auth, upstream, wasm_path):
    with KeyServer() as dead:
        port = dead.port
    envoy = FilterEnvoy.for_introspection(auth, upstream.port, wasm_path=wasm_path, endpoint=True,
                                          introspection={"timeout_ms": 500})
    # The cluster points at a port nothing listens on.
    envoy.bootstrap["static_resources"]["clusters"] = [
        c if c["name"] != "auth_server" else {**c, "load_assignment": {"cluster_name": "auth_server", "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
        for c in envoy.bootstrap["static_resources"]["clusters"]]
    with envoy:
        client = Client(envoy.port, upstream, timeout=10.0)
        for _ in range(4):
            reply = client.request("GET", "/mcp", token=secrets.token_urlsafe(24))
            assert reply.status == 503, reply.describe()
            assert reply.header("retry-after"), reply.describe()
            assert reply.json()["error"] == "temporarily_unavailable"
            expect.not_forwarded(reply)
        assert envoy.stats().get("mcp_oauth_introspections_failed", 0) >= 4


@pytest.mark.parametrize("answer", [
    {"status": 500, "body": {"error": "server_error"}},
    {"status": 200, "body": {"active": "true"}},
    {"status": 200, "body": ["not", "an", "object"]},
])
def test_an_answer_that_is_not_rfc7662_means_503(auth, upstream, wasm_path, answer):
    with KeyServer() as fake:
        fake.set("/introspect", json_answer(answer["body"], status=answer["status"]))
        envoy = FilterEnvoy.for_introspection(auth, upstream.port, wasm_path=wasm_path,
                                              introspection={"endpoint": "http://as.test/introspect"},
                                              extra_clusters=[], auth_port=None)
        envoy.bootstrap["static_resources"]["clusters"].append(fake.cluster("auth_server"))
        with envoy:
            reply = Client(envoy.port, upstream).request("GET", "/mcp", token=secrets.token_urlsafe(24))
            assert reply.status == 503, reply.describe()
            expect.not_forwarded(reply)


def test_a_flood_of_random_tokens_is_bounded_by_max_in_flight(auth, upstream, wasm_path):
    with KeyServer() as slow:
        slow.set("/introspect", json_answer({"active": False}, delay=1.0))
        envoy = FilterEnvoy.for_introspection(auth, upstream.port, wasm_path=wasm_path, auth_port=None,
                                              introspection={"endpoint": "http://as.test/introspect",
                                                             "max_in_flight": 2, "timeout_ms": 5000})
        envoy.bootstrap["static_resources"]["clusters"].append(slow.cluster("auth_server"))
        with envoy:
            client = Client(envoy.port, upstream, timeout=10.0)
            with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
                replies = list(pool.map(lambda _: client.request("GET", "/mcp", token=secrets.token_urlsafe(24)),
                                        range(12)))
            statuses = sorted(r.status for r in replies)
            calls = slow.count("/introspect")
            assert calls <= 4, f"{calls} calls with max_in_flight 2 on two workers"
            assert statuses.count(503) >= 12 - 4, statuses
            assert all(s in (401, 503) for s in statuses), statuses
            busy = [r for r in replies if r.status == 503]
            assert all(r.json()["error_description"] == "too many token introspections in progress" for r in busy)


# ------------------------------------------------------------------------------------------
# The client secret


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_the_secret_comes_from_the_vm_environment_and_never_reaches_the_log(auth, upstream, wasm_path, auth_method):
    envoy = FilterEnvoy.for_introspection(auth, upstream.port, wasm_path=wasm_path, auth_method=auth_method,
                                          host_env=True, log_level="debug")
    secret = auth.introspection_client(auth_method)["client_secret"]
    with envoy:
        client = Client(envoy.port, upstream)
        token = token_for(auth, envoy.resource)
        expect.forwarded_once(client.request("GET", "/mcp", token=token))
        assert client.request("GET", "/mcp", token=secrets.token_urlsafe(24)).status == 401
        log = envoy.log_text()
    assert secret not in log
    # Envoy's own debug lines show the client's request headers; the filter's never show a token.
    filter_lines = [line for line in log.splitlines() if "wasm log" in line]
    assert filter_lines and not any(token in line for line in filter_lines)
    if auth_method == "client_secret_post":
        # In the form body, which Envoy does not log: no trace of it at all.
        basic = base64.b64encode(f"{auth.introspection_client(auth_method)['client_id']}:{secret}".encode()).decode()
        assert basic not in log


def test_a_secret_missing_from_the_vm_environment_refuses_the_configuration(auth, upstream, wasm_path):
    from harness import start_expecting_failure
    config = {"resources": [{"resource": "http://127.0.0.1:1/mcp", "authorization_servers": [auth.issuer]}],
              "issuers": [{"issuer": auth.issuer, "cluster": "auth_server",
                           "introspection": {"client_id": "mcp-gateway", "client_secret_env": "NOT_SET_ANYWHERE"}}]}
    outcome = start_expecting_failure(config, upstream.port, wasm_path=wasm_path, timeout=20)
    assert not outcome.became_ready and outcome.exit_code != 0
    assert "issuers[0].introspection.client_secret_env" in outcome.log and "NOT_SET_ANYWHERE" in outcome.log


# ------------------------------------------------------------------------------------------
# A real MCP client


def test_the_python_sdk_completes_a_tool_call_with_opaque_tokens(auth, wasm_path):
    with McpServer() as mcp, FilterEnvoy.for_introspection(auth, mcp.port, wasm_path=wasm_path) as envoy:
        before = introspections(auth)
        outcome = run_client(py_client_command(PY2, envoy.resource, "code", calls=[("add", {"a": 2, "b": 3}),
                                                                                   ("whoami", {})]))
        assert outcome.get("ok") and outcome["exit_code"] == 0, json.dumps(outcome)[:3000]
        assert [(r["tool"], r["text"]) for r in outcome["results"]] == [("add", "5"), ("whoami", "demo-user")]
        assert introspections(auth) > before
        # The client got opaque tokens: nothing in them to decode.
        assert outcome["tokens"] and all(t["claims"] is None for t in outcome["tokens"]), outcome["tokens"]
