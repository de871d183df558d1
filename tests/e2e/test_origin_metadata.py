"""The authorization server's metadata at the MCP server's origin (README, Clients of MCP
2025-03-26), on the wire: with `origin_authorization_server_metadata`, the filter answers
`/.well-known/oauth-authorization-server` and `/.well-known/openid-configuration` at the
resource's origin with the first authorization server's RFC 8414 document, fetched through
the issuer's cluster from a controllable authorization server (`harness.keyserver`) and served
byte for byte.

Every test starts its own key server and Envoy (4 workers), so the key server's counts are the
fetches that Envoy made.
"""
from __future__ import annotations

import threading
import time

import pytest

import expect
import scenario
from harness import Client, Envoy
from harness.keyserver import Answer, KeyServer

TENANT = scenario.ISSUER + "/tenant"
RFC8414_PATH = "/.well-known/oauth-authorization-server/tenant"
OIDC_INSERTED_PATH = "/.well-known/openid-configuration/tenant"
AS_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
ORIGIN = "http://localhost:6274"
# The authorization server's own bytes: its spacing, its member order, members no RFC knows.
DOCUMENT = (
    b'{"issuer":"' + TENANT.encode() + b'",\n  "authorization_endpoint" : "https://auth.example.com/tenant/auth",'
    b'"token_endpoint":"https://auth.example.com/tenant/token","registration_endpoint":"https://auth.example.com/tenant/reg",'
    b'"jwks_uri":"https://auth.example.com/tenant/jwks","code_challenge_methods_supported":["S256"],'
    b'"response_types_supported":["code"],"x-vendor-extension":{"nested":[1,2.50,"\\u00e9"]}}'
)


def document_answer(body: bytes = DOCUMENT, cache_control: str = "public, max-age=600", **kw) -> Answer:
    return Answer(body=body, headers=(("content-type", "application/json"), ("cache-control", cache_control)), **kw)


def legacy_config(flag: bool = True) -> dict:
    """/mcp, whose only authorization server TENANT is reached through cluster `keyserver`
    (its keys inline), answering TENANT's metadata at the origin when `flag`."""
    config = scenario.single_resource_config(authorization_servers=[TENANT])
    config["issuers"] = [{"issuer": TENANT, "jwks": config["issuers"][0]["jwks"]}]
    if flag:
        config["resources"][0]["origin_authorization_server_metadata"] = True
        config["issuers"][0]["cluster"] = "keyserver"
    return config


class Origin:
    """A key server playing the authorization server, and the Envoy in front of the upstream."""

    def __init__(self, upstream, wasm_path):
        self.upstream = upstream
        self.wasm_path = wasm_path
        self.keys = KeyServer().start()
        self.envoy: Envoy | None = None
        self.client: Client | None = None

    def start(self, plugin_config: dict) -> "Origin":
        self.envoy = Envoy(plugin_config, self.upstream.port, wasm_path=self.wasm_path, concurrency=4,
                           extra_clusters=[self.keys.cluster("keyserver")])
        self.envoy.start()
        self.client = Client(self.envoy.port, self.upstream)
        return self

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        self.keys.stop()

    def get(self, path: str = AS_PATHS[0], method: str = "GET", **kwargs):
        return self.client.request(method, path, host_header="mcp.example.com", **kwargs)

    def wait_served(self, body: bytes = DOCUMENT, timeout: float = 5.0):
        """Polls until the origin answers `body` (every worker: 8 requests in a row)."""
        deadline = time.monotonic() + timeout
        streak, reply = 0, None
        while streak < 8 and time.monotonic() < deadline:
            reply = self.get()
            streak = streak + 1 if reply.status == 200 and reply.body == body else 0
            if not streak:
                time.sleep(0.05)
        assert streak >= 8, f"origin never answered the document: {reply.describe() if reply else None}; " \
                            f"key server saw {self.keys.paths()}"
        return reply


@pytest.fixture
def origin(upstream, wasm_path):
    o = Origin(upstream, wasm_path)
    try:
        yield o
    finally:
        o.stop()


def test_the_origin_answers_the_authorization_servers_document_byte_for_byte(origin):
    origin.keys.set(RFC8414_PATH, document_answer())
    origin.start(legacy_config())
    origin.wait_served()
    for path in AS_PATHS + [AS_PATHS[0] + "?x=1"]:
        reply = origin.get(path)
        assert reply.status == 200 and reply.body == DOCUMENT, reply.describe()
        assert reply.header("content-type") == "application/json", reply.describe()
        cache = reply.header("cache-control") or ""
        assert cache.startswith("public, max-age="), reply.describe()
        assert 0 < int(cache.rsplit("=", 1)[1]) <= 600, reply.describe()
        assert reply.header("access-control-allow-origin") == "*", reply.describe()
        expect.not_forwarded(reply)
    head = origin.get(method="HEAD")
    assert head.status == 200 and head.body == b"", head.describe()
    assert head.header("content-type") == "application/json", head.describe()
    expect.not_forwarded(head)
    post = origin.get(method="POST", body="{}")
    assert post.status == 405 and "GET" in (post.header("allow") or ""), post.describe()
    expect.not_forwarded(post)
    # The key server saw one fetch of the RFC 8414 document for all four workers.
    assert origin.keys.count(RFC8414_PATH) == 1, origin.keys.paths()
    stats = origin.envoy.stats()
    assert stats.get("mcp_oauth_as_metadata_fetches_ok") == 1, stats
    assert stats.get("mcp_oauth_as_metadata_served", 0) >= 12, stats


def test_answers_browsers_as_for_the_resource_metadata(origin):
    origin.keys.set(RFC8414_PATH, document_answer())
    origin.start(legacy_config())
    origin.wait_served()
    reply = origin.get(headers=[("Origin", ORIGIN), ("MCP-Protocol-Version", "2025-03-26")])
    assert reply.status == 200 and reply.body == DOCUMENT, reply.describe()
    assert reply.header("access-control-allow-origin") == "*", reply.describe()
    preflight = origin.get(method="OPTIONS", headers=[("Origin", ORIGIN), ("Access-Control-Request-Method", "GET"),
                                                      ("Access-Control-Request-Headers", "mcp-protocol-version")])
    assert preflight.status == 204, preflight.describe()
    assert preflight.header("access-control-allow-origin") == "*", preflight.describe()
    assert "mcp-protocol-version" in (preflight.header("access-control-allow-headers") or "").lower(), \
        preflight.describe()
    expect.not_forwarded(preflight)


def test_503_with_retry_after_before_the_first_fetch_then_the_document(origin):
    release = threading.Event()
    origin.keys.then(RFC8414_PATH, document_answer(hold=release, hold_timeout=20))
    origin.keys.set(RFC8414_PATH, document_answer())
    origin.start(legacy_config())
    try:
        reply = origin.get()
        assert reply.status == 503, reply.describe()
        retry_after = reply.header("retry-after") or ""
        assert retry_after.isdigit() and int(retry_after) > 0, reply.describe()
        assert reply.json()["error"] == "temporarily_unavailable", reply.describe()
        assert reply.header("access-control-allow-origin") == "*", reply.describe()
        expect.not_forwarded(reply)
    finally:
        release.set()
    origin.wait_served()


def test_discovery_order_then_a_stale_document_while_the_server_is_down(origin):
    """The slow test: max-age=60 means a refresh ~45 s (3/4) after the fetch."""
    origin.keys.set(RFC8414_PATH, Answer(status=404, body=b'{"error":"not_found"}'))
    origin.keys.set(OIDC_INSERTED_PATH, document_answer(cache_control="max-age=60"))
    origin.start(legacy_config())
    origin.wait_served()
    assert origin.keys.paths()[:2] == [RFC8414_PATH, OIDC_INSERTED_PATH], origin.keys.paths()
    origin.keys.fail(OIDC_INSERTED_PATH, status=500)
    seen = origin.keys.count(OIDC_INSERTED_PATH)
    assert origin.keys.wait_for_count(OIDC_INSERTED_PATH, seen + 1, timeout=55) > seen, origin.keys.paths()
    time.sleep(0.3)
    for _ in range(8):
        reply = origin.get()
        assert reply.status == 200 and reply.body == DOCUMENT, "stale document kept: " + reply.describe()
    assert origin.envoy.stats().get("mcp_oauth_as_metadata_fetches_failed", 0) >= 1
    # Back (a retry follows within seconds): the new document replaces the stale one.
    fresh = DOCUMENT.replace(b"x-vendor-extension", b"x-vendor-extension-2")
    origin.keys.set(OIDC_INSERTED_PATH, document_answer(body=fresh))
    origin.wait_served(fresh, timeout=15)


def test_a_document_naming_another_issuer_is_never_served(origin):
    other = DOCUMENT.replace(TENANT.encode(), b"https://evil.example.com")
    origin.keys.set(RFC8414_PATH, document_answer(body=other))
    origin.keys.set(OIDC_INSERTED_PATH, document_answer(body=other))
    origin.keys.set("/tenant/.well-known/openid-configuration", document_answer(body=other))
    origin.start(legacy_config())
    assert origin.keys.wait_for_count("/tenant/.well-known/openid-configuration", 1, timeout=5) == 1
    time.sleep(0.3)
    reply = origin.get()
    assert reply.status == 503, reply.describe()
    expect.not_forwarded(reply)


def test_without_the_flag_the_paths_reach_the_upstream(origin):
    origin.start(legacy_config(flag=False))
    time.sleep(0.5)  # a fetch would have started on the first ticks
    for path in AS_PATHS:
        reply = origin.get(path)
        expect.forwarded_once(reply)
    assert not origin.keys.paths(), origin.keys.paths()
