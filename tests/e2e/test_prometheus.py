"""The filter's counters as a Prometheus scraper sees them, Envoy's admin `/stats/prometheus`
(README, What the operator sees), and as `/stats` shows them.

Envoy names the filter's proxy-wasm metrics in Prometheus output exactly as the filter defines
them: `mcp_oauth_<name>`, with no `envoy_` prefix and without the `wasmcustom.` namespace that
`/stats` shows (`wasmcustom.mcp_oauth_requests_allowed` there), no labels, e.g.

    # TYPE mcp_oauth_requests_allowed counter
    mcp_oauth_requests_allowed{} 3
    # TYPE mcp_oauth_keys_in_use gauge
    mcp_oauth_keys_in_use{} 2

Envoy's own stats for the filter keep the prefix (`envoy_wasm_mcp_oauth_vm_reload`, ...).

Each test starts its own Envoy, sends a known mix of requests, and asserts the exact value of
every `mcp_oauth_` metric, and that no other `mcp_oauth_` metric exists. With one worker the
verified-token cache's hits and misses are exact (the cache is per worker); with two, every
token is distinct. The counters the README lists as present from the start exist at 0.
Every read waits for the filter's counter flush (`Envoy.prometheus`, `Envoy.stats`).
"""
from __future__ import annotations

import time

import pytest

import scenario
from harness import Client, Envoy, tokens
from harness.keyserver import KeyServer

MCP, MCP_PATH, META = scenario.MCP, scenario.MCP_PATH, scenario.MCP_METADATA_PATH


def scrape(envoy: Envoy) -> dict[str, tuple[str, float]]:
    """{metric name: (prometheus type, value)} from /stats/prometheus, once counters are flushed."""
    return envoy.prometheus()


def mcp_oauth(scraped: dict) -> dict[str, tuple[str, int]]:
    return {n: (t, int(v)) for n, (t, v) in scraped.items() if "mcp_oauth_" in n and not n.startswith("envoy_")}


def counters(**values: int) -> dict[str, tuple[str, int]]:
    return {f"mcp_oauth_{name}": ("counter", value) for name, value in values.items()}


def wait_until(probe, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def inline_config() -> dict:
    """The /mcp resource (required scope mcp:read), fixture keys inline, RS256/ES256 only."""
    config = scenario.single_resource_config()
    config["issuers"][0]["algorithms"] = ["RS256", "ES256"]
    return config


@pytest.fixture
def inline_envoy(upstream, wasm_path):
    envoy = Envoy(inline_config(), upstream.port, wasm_path=wasm_path, concurrency=1)
    with envoy:
        yield envoy


def test_prometheus_names_and_exact_counts_inline_keys(inline_envoy, upstream):
    envoy = inline_envoy
    client = Client(envoy.port, upstream)
    client.envoy = envoy
    # The counters the README names exist at 0 before any request (a rate needs a first sample);
    # denials by other reasons appear when they first happen.
    assert mcp_oauth(scrape(envoy)) == counters(
        requests_allowed=0,
        metadata_served=0,
        requests_denied_missing_token=0,
        token_cache_hits=0,
        token_cache_misses=0,
    )

    now = tokens.now()
    good = scenario.token()
    sent = [
        # allowed: the same token twice (one cache miss, one hit), an ES256 token once (a miss)
        (client.get(MCP_PATH, token=good), 200),
        (client.request("POST", MCP_PATH, token=good, body="{}"), 200),
        (client.get(MCP_PATH, token=scenario.token(key="ec-p256")), 200),
        # metadata: by path twice, the root document once (single resource)
        (client.get(META), 200),
        (client.request("HEAD", META), 200),
        (client.get(scenario.ROOT_METADATA_PATH), 200),
        # CORS preflight
        (client.request("OPTIONS", MCP_PATH, headers=[("Origin", "https://app.example"),
                                                     ("Access-Control-Request-Method", "POST")]), 204),
        # missing_token: nothing, and a scheme other than Bearer
        (client.get(MCP_PATH), 401),
        (client.get(MCP_PATH, headers=[("Authorization", "Basic dXNlcjpwYXNz")]), 401),
        # invalid_request: a broken Bearer credential (never reaches the verifier or the cache)
        (client.get(MCP_PATH, headers=[("Authorization", "Bearer a b")]), 400),
        # bad_path: an encoded slash under the protected prefix
        (client.get("/mcp%2Fx"), 400),
        # the verifier's reasons: each token a cache miss
        (client.get(MCP_PATH, token="abc"), 401),                                               # malformed_token
        (client.get(MCP_PATH, token=scenario.token(at=now - 3600, lifetime=60)), 401),          # token_expired
        (client.get(MCP_PATH, token=scenario.token(audience="https://other.example/mcp")), 401),  # audience_not_accepted
        (client.get(MCP_PATH, token=scenario.token(issuer="https://evil.example")), 401),       # issuer_not_accepted
        (client.get(MCP_PATH, token=tokens.mint(scenario.claims(), corrupt_signature=True)), 401),  # bad_signature
        (client.get(MCP_PATH, token=tokens.mint(scenario.claims(), kid="no-such-key")), 401),   # unknown_kid
        (client.get(MCP_PATH, token=tokens.mint(scenario.claims(), key="rsa-b", alg="PS256")), 401),  # alg_not_allowed
        (client.get(MCP_PATH, token=scenario.token(scope="mcp:write")), 403),                   # insufficient_scope
        # outside every resource: untouched, uncounted
        (client.get("/elsewhere"), 200),
    ]
    assert [reply.status for reply, _ in sent] == [want for _, want in sent], [r.describe() for r, _ in sent]

    scraped = scrape(envoy)
    assert mcp_oauth(scraped) == counters(
        requests_allowed=3,
        metadata_served=3,
        preflight_answered=1,
        requests_denied_missing_token=2,
        requests_denied_invalid_request=1,
        requests_denied_bad_path=1,
        requests_denied_malformed_token=1,
        requests_denied_token_expired=1,
        requests_denied_audience_not_accepted=1,
        requests_denied_issuer_not_accepted=1,
        requests_denied_bad_signature=1,
        requests_denied_unknown_kid=1,
        requests_denied_alg_not_allowed=1,
        requests_denied_insufficient_scope=1,
        token_cache_hits=1,
        token_cache_misses=10,
        # the two allowed misses, the forged signature and the insufficient scope: Envoy checked
        # their RS256/ES256 signatures (defined at the first, see test_host_signatures.py)
        signature_checks_host=4,
    )
    # The real names: no envoy_ prefix, no wasmcustom namespace; Envoy's own wasm stats keep theirs.
    assert not [n for n in scraped if n.startswith("envoy_mcp_oauth") or "wasmcustom" in n]
    assert "envoy_wasm_mcp_oauth_vm_reload" in scraped
    # /stats shows the same counters under the wasmcustom. namespace.
    assert envoy.stats()["mcp_oauth_requests_allowed"] == 3
    status, body = envoy.admin_get("/stats?filter=mcp_oauth_requests_allowed")
    assert "wasmcustom.mcp_oauth_requests_allowed: 3" in body


def test_prometheus_counts_are_exact_summed_over_two_workers_and_two_resources(upstream, wasm_path):
    """Two workers, each counting its own requests (the filter may batch per worker), and both
    resources' metadata: every total is exact whichever worker answered. Each token is distinct
    (its own `jti`), so every verification is a cache miss whatever the worker."""
    with Envoy(scenario.plugin_config(), upstream.port, wasm_path=wasm_path, concurrency=2) as envoy:
        client = Client(envoy.port, upstream)
        client.envoy = envoy
        distinct = iter(range(1000))

        def token(**kwargs):
            return scenario.token(jti=f"two-workers-{next(distinct)}", **kwargs)

        sent = [  # each on a new connection, spread over the workers by the kernel
            (client.get(MCP_PATH, token=token()), 200),
            (client.request("POST", MCP_PATH, token=token(key="ec-p256"), body="{}"), 200),
            (client.get(META), 200),
            (client.get(scenario.TOOLS_METADATA_PATH), 200),
            (client.get(META), 200),
            (client.get(MCP_PATH), 401),
            (client.get(MCP_PATH, headers=[("Authorization", "Bearer a b")]), 400),
            (client.get(MCP_PATH, token="abc"), 401),
            (client.get(MCP_PATH, token=token(scope="other")), 403),
        ]
        assert [reply.status for reply, _ in sent] == [want for _, want in sent], [r.describe() for r, _ in sent]
        assert mcp_oauth(scrape(envoy)) == counters(
            requests_allowed=2,
            metadata_served=3,
            requests_denied_missing_token=1,
            requests_denied_invalid_request=1,
            requests_denied_malformed_token=1,
            requests_denied_insufficient_scope=1,
            token_cache_hits=0,
            token_cache_misses=4,
            # the RS256 and ES256 allowed, and the RS256 lacking the scope
            signature_checks_host=3,
        )


def test_prometheus_key_fetch_counters_and_keys_in_use_gauge_remote_keys(upstream, wasm_path):
    keys = KeyServer().start()
    try:
        keys.serve_jwks("/jwks", ["rsa-a", "ec-p256"], cache_control="max-age=600")
        config = scenario.single_resource_config()
        config["issuers"] = [{"issuer": scenario.ISSUER, "jwks_uri": "http://keys.test/jwks", "cluster": "keyserver"}]
        envoy = Envoy(config, upstream.port, wasm_path=wasm_path, concurrency=1,
                      extra_clusters=[keys.cluster("keyserver")])
        with envoy:
            client = Client(envoy.port, upstream)
            client.envoy = envoy
            def fetches_ok():
                return mcp_oauth(scrape(envoy)).get("mcp_oauth_key_fetches_ok")

            wait_until(lambda: fetches_ok()[1] >= 1)  # defined at 0 before the first fetch
            assert fetches_ok() == ("counter", 1), envoy.log_tail()

            good = scenario.token()
            statuses = [
                client.get(MCP_PATH, token=good).status,
                client.get(MCP_PATH, token=good).status,
                client.get(MCP_PATH, token=scenario.token(key="ec-p256")).status,
                client.get(MCP_PATH).status,
                client.get(META).status,
            ]
            assert statuses == [200, 200, 200, 401, 200]

            assert mcp_oauth(scrape(envoy)) == {
                **counters(
                    key_fetches_ok=1,
                    key_fetches_failed=0,
                    requests_allowed=3,
                    requests_denied_missing_token=1,
                    metadata_served=1,
                    token_cache_hits=1,
                    token_cache_misses=2,
                    signature_checks_host=2,
                ),
                "mcp_oauth_keys_in_use": ("gauge", 2),
            }
            assert keys.count("/jwks") == 1
    finally:
        keys.stop()
