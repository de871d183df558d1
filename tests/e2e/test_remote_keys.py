"""Remote keys (README, Remote keys), on the wire: keys fetched with `dispatch_http_call` through an Envoy
cluster (`keyserver`) from a controllable authorization server (`harness.keyserver`).

Every test starts its own key server and its own Envoy (4 workers), so the key server's
per-path counts are exactly the fetches that Envoy made. Each test asserts both what the client
got and what the key server saw.
"""
from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import expect
import scenario
from harness import Client, Envoy, tokens
from harness.keyserver import Answer, KeyServer, json_answer, jwks

ISSUER = scenario.ISSUER  # https://auth.example.com
TENANT = ISSUER + "/tenant"
JWKS_PATH = "/jwks"
JWKS_URI = "http://keys.test/jwks"
RFC8414_PATH = "/.well-known/oauth-authorization-server/tenant"
OIDC_INSERTED_PATH = "/.well-known/openid-configuration/tenant"
OIDC_PATH = "/tenant/.well-known/openid-configuration"
TENANT_JWKS_PATH = "/tenant/jwks"
TENANT_JWKS_URI = "https://keys.example.net/tenant/jwks"
CONCURRENCY = 4


def remote_config(**tunables) -> dict:
    """The /mcp resource; its issuer's keys come from JWKS_URI through cluster `keyserver`."""
    config = scenario.single_resource_config()
    config["issuers"] = [{"issuer": ISSUER, "jwks_uri": JWKS_URI, "cluster": "keyserver", **tunables}]
    return config


def discovery_config(**tunables) -> dict:
    """The /mcp resource, whose only issuer is TENANT, keys found by discovery (cluster alone)."""
    config = scenario.single_resource_config()
    config["resources"][0]["authorization_servers"] = [TENANT]
    config["issuers"] = [{"issuer": TENANT, "cluster": "keyserver", **tunables}]
    return config


def metadata(issuer: str = TENANT, jwks_uri: str = TENANT_JWKS_URI) -> dict:
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "response_types_supported": ["code"],
    }


def token(key: str = "rsa-a", *, kid=None, issuer: str = ISSUER) -> str:
    """A token /mcp accepts if `kid` (default: the key's name) names `key` in the issuer's keys."""
    claims = scenario.claims(issuer=issuer)
    return tokens.mint(claims, key=key) if kid is None else tokens.mint(claims, key=key, kid=kid)


class Remote:
    """One key server, and the Envoy fetching from it (started by `start`)."""

    def __init__(self, upstream, wasm_path):
        self.upstream = upstream
        self.wasm_path = wasm_path
        self.keys = KeyServer().start()
        self.envoy: Envoy | None = None
        self.client: Client | None = None

    def start(self, plugin_config: dict, concurrency: int = CONCURRENCY) -> "Remote":
        envoy = Envoy(
            plugin_config,
            self.upstream.port,
            wasm_path=self.wasm_path,
            concurrency=concurrency,
            extra_clusters=[self.keys.cluster("keyserver")],
        )
        self.envoy = envoy  # before start: the failure hook shows its log even if start fails
        envoy.start()
        self.client = Client(envoy.port, self.upstream)
        return self

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        self.keys.stop()

    # -- helpers -------------------------------------------------------------------------------

    def get(self, tok: str, **kwargs):
        return self.client.request("GET", scenario.MCP_PATH, token=tok, **kwargs)

    def timed_get(self, tok: str):
        began = time.monotonic()
        reply = self.get(tok)
        return reply, time.monotonic() - began

    def parallel(self, toks: list[str], threads: int = 8):
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(self.get, toks))

    def stat(self, name: str) -> int:
        return self.envoy.stats().get(name, 0)

    def wait_stat(self, name: str, at_least: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            value = self.stat(name)
            if value >= at_least or time.monotonic() >= deadline:
                return value
            time.sleep(0.05)

    def wait_loaded(self, fetches_ok: int = 1, timeout: float = 5.0) -> None:
        got = self.wait_stat("mcp_oauth_key_fetches_ok", fetches_ok, timeout)
        assert got >= fetches_ok, (
            f"mcp_oauth_key_fetches_ok={got} after {timeout}s (wanted {fetches_ok}); "
            f"key server saw {self.keys.paths()}; stats {self.envoy.stats()}"
        )

    def connections_per_worker(self) -> dict[str, int]:
        """Downstream connections each worker accepted on the main listener."""
        # `listener.127.0.0.1_0.worker_N.downstream_cx_total` (named after the configured port 0;
        # the admin listener's stats are `listener.admin.*`).
        out = {}
        for name, value in self.envoy.stats(r"^listener\..*worker_[0-9]+\.downstream_cx_total$").items():
            if not name.startswith("listener.admin."):
                out[name.rsplit(".", 2)[-2]] = value
        return out


@pytest.fixture
def remote(upstream, wasm_path):
    r = Remote(upstream, wasm_path)
    try:
        yield r
    finally:
        r.stop()


def assert_allowed(reply) -> None:
    expect.forwarded_once(reply)


def assert_invalid_token(reply) -> None:
    expect.challenge(
        reply,
        401,
        [
            ("error", "invalid_token"),
            ("error_description", None),
            ("resource_metadata", scenario.MCP_METADATA_URL),
            ("scope", scenario.MCP_REQUIRED_SCOPE),
        ],
    )
    expect.error_body(reply, "invalid_token")
    expect.not_forwarded(reply)


def assert_keys_unavailable(reply) -> None:
    """503 with `retry-after` (delta-seconds, RFC 9110 §10.2.3) and a JSON body; nothing forwarded
    (README, Remote keys)."""
    assert reply.status == 503, reply.describe()
    retry_after = reply.header("retry-after")
    assert retry_after is not None and retry_after.strip().isdigit() and int(retry_after) > 0, reply.describe()
    content_type = (reply.header("content-type") or "").split(";")[0].strip().lower()
    assert content_type == "application/json", reply.describe()
    assert isinstance(reply.json(), dict), reply.describe()
    expect.not_forwarded(reply)


# -- first key set ----------------------------------------------------------------------------


def test_a_request_that_arrives_before_the_first_key_set_waits_for_it_and_is_then_allowed(remote):
    release = threading.Event()
    remote.keys.then(JWKS_PATH, json_answer(jwks(["rsa-a"]), hold=release, hold_timeout=3.0))
    remote.keys.serve_jwks(JWKS_PATH, ["rsa-a"])
    remote.start(remote_config())
    with ThreadPoolExecutor(max_workers=1) as pool:
        sent_at = time.monotonic()
        pending = pool.submit(remote.timed_get, token())
        # The filter starts its first fetch on its own (first tick), not because of the request.
        assert remote.keys.wait_for_count(JWKS_PATH, 1, 3.0) == 1, remote.keys.paths()
        time.sleep(0.4)
        assert not pending.done(), f"answered before the key set arrived: {pending.result()[0].describe()}"
        release.set()
        reply, elapsed = pending.result(timeout=10)
    assert_allowed(reply)
    [fetch] = remote.keys.log()
    assert fetch.answered_at is not None and fetch.answered_at > sent_at
    assert fetch.host == "keys.test", fetch
    assert fetch.method == "GET"
    assert elapsed >= 0.4
    assert remote.keys.paths() == [JWKS_PATH]
    assert remote.stat("mcp_oauth_key_fetches_ok") == 1


def test_the_first_fetch_happens_at_start_without_any_request(remote):
    remote.keys.serve_jwks(JWKS_PATH, ["rsa-a"])
    remote.start(remote_config())
    remote.wait_loaded(timeout=3.0)
    assert remote.keys.paths() == [JWKS_PATH]
    assert_allowed(remote.get(token()))
    assert remote.keys.count(JWKS_PATH) == 1


# -- rotation ---------------------------------------------------------------------------------


def test_a_new_kid_is_accepted_after_the_one_refetch_it_triggers(remote):
    remote.keys.serve_jwks(JWKS_PATH, ["rsa-a"])
    remote.start(remote_config())
    remote.wait_loaded()
    assert_allowed(remote.get(token("rsa-a")))
    assert remote.keys.count(JWKS_PATH) == 1

    remote.keys.serve_jwks(JWKS_PATH, ["rsa-a", "rsa-b"])
    assert_allowed(remote.get(token("rsa-b")))
    assert remote.keys.count(JWKS_PATH) == 2, remote.keys.paths()

    # Now shared by every worker and cached: no further fetch, for the new key or the old one.
    toks = [token("rsa-b")] * 12 + [token("rsa-a")] * 4
    refused = [(tokens.decode_unverified(t)[0]["kid"], r.status, r.body[:120]) for t, r in zip(toks, remote.parallel(toks)) if r.status != 200]
    assert not refused, f"right after the rotation, other workers refused: {refused}"
    time.sleep(0.3)
    assert remote.keys.count(JWKS_PATH) == 2, remote.keys.paths()
    assert remote.stat("mcp_oauth_key_fetches_ok") == 2


def test_simultaneous_requests_with_a_new_kid_on_every_worker_are_allowed_after_one_refetch(remote):
    remote.keys.serve_jwks(JWKS_PATH, ["rsa-a"])
    remote.start(remote_config())
    remote.wait_loaded()
    remote.keys.serve_jwks(JWKS_PATH, ["rsa-a", "rsa-b"], delay=0.3)  # a fetch that takes a while
    toks = [token("rsa-b") for _ in range(16)]
    replies = remote.parallel(toks, threads=8)
    refused = [(r.status, r.body[:120]) for r in replies if r.status != 200]
    assert not refused, f"{len(refused)} of {len(toks)} refused: {refused[:3]}"
    for reply in replies:
        assert_allowed(reply)
    time.sleep(0.3)
    assert remote.keys.count(JWKS_PATH) == 2, remote.keys.paths()


def test_a_removed_key_passes_until_the_scheduled_refresh_then_is_refused(remote):
    """The single slow test: max-age=60 means a refresh ~45 s (3/4) after the fetch."""
    remote.keys.serve_jwks(JWKS_PATH, ["rsa-a", "rsa-b"], cache_control="public, max-age=60")
    remote.start(remote_config())
    remote.wait_loaded()
    remote.keys.serve_jwks(JWKS_PATH, ["rsa-b"], cache_control="public, max-age=60")

    old_key_token = token("rsa-a")  # the same bytes before and after: a verified-token cache must not outlive the key
    assert_allowed(remote.get(old_key_token))  # cached keys: the removal is not seen yet
    for reply in remote.parallel([old_key_token] * 8):
        assert_allowed(reply)
    assert remote.keys.count(JWKS_PATH) == 1

    assert remote.keys.wait_for_count(JWKS_PATH, 2, 60.0) == 2, "no scheduled refresh within 60 s"
    first, second = remote.keys.log()[:2]
    gap = second.at - first.answered_at
    assert 43.0 <= gap <= 50.0, f"refresh {gap:.1f}s after the first fetch; expected ~45 s (3/4 of max-age=60)"
    remote.wait_loaded(fetches_ok=2)
    time.sleep(0.5)  # the other workers pick the new set up from shared data on their next tick

    for reply in remote.parallel([old_key_token] * 8 + [token("rsa-a")] * 4):
        assert_invalid_token(reply)
    assert_allowed(remote.get(token("rsa-b")))
    # The rsa-a tokens (kid now unknown) were entitled to one on-demand refetch, and only one.
    time.sleep(0.3)
    assert remote.keys.count(JWKS_PATH) == 3, remote.keys.paths()


# -- unknown kid flood ------------------------------------------------------------------------


def test_a_flood_of_unknown_kids_is_refused_and_causes_at_most_one_refetch(remote):
    remote.keys.serve_jwks(JWKS_PATH, ["rsa-a"])
    remote.start(remote_config())
    remote.wait_loaded()
    before = remote.keys.count(JWKS_PATH)
    assert before == 1

    flood = [token("rsa-b", kid=f"random-{uuid.uuid4().hex}") for _ in range(50)]
    began = time.monotonic()
    replies = remote.parallel(flood, threads=10)
    took = time.monotonic() - began
    for reply in replies:
        assert_invalid_token(reply)
    time.sleep(0.5)  # a late fetch would show up here
    after = remote.keys.count(JWKS_PATH)
    assert after - before <= 1, f"{after - before} JWKS fetches for a flood of 50 unknown kids"
    assert took < 10.0, f"the flood took {took:.1f}s"
    assert_allowed(remote.get(token("rsa-a")))
    assert remote.keys.count(JWKS_PATH) == after


# -- authorization server trouble after the keys loaded ---------------------------------------

FETCH_TIMEOUT_MS = 500


def _too_large(keys: KeyServer) -> None:
    doc = jwks(["rsa-a", "rsa-b"])
    doc["padding"] = "x" * (300 * 1024)  # otherwise valid, and it would bring rsa-b
    keys.set(JWKS_PATH, json_answer(doc))


FAILURES = {
    "status-500": lambda keys: keys.fail(JWKS_PATH, 500),
    "status-404": lambda keys: keys.fail(JWKS_PATH, 404),
    "garbage-body": lambda keys: keys.garbage(JWKS_PATH),
    "empty-key-set": lambda keys: keys.empty_jwks(JWKS_PATH),
    "json-but-not-a-jwks": lambda keys: keys.serve_json(JWKS_PATH, {"issuer": ISSUER, "jwks": jwks(["rsa-b"])}),
    "larger-than-256-KiB": _too_large,
    "slower-than-the-fetch-timeout": lambda keys: keys.slow(JWKS_PATH, 1.5, ["rsa-a", "rsa-b"]),
    "connection-closed": lambda keys: keys.close(JWKS_PATH),
    "connection-refused": lambda keys: keys.go_down(),
}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_known_keys_keep_working_when_the_authorization_server_fails(remote, failure):
    remote.keys.serve_jwks(JWKS_PATH, ["rsa-a"])
    remote.start(remote_config(jwks_fetch_timeout_ms=FETCH_TIMEOUT_MS))
    remote.wait_loaded()
    failed_before = remote.stat("mcp_oauth_key_fetches_failed")
    assert failed_before == 0
    refused = failure is FAILURES["connection-refused"]
    failure(remote.keys)

    # An unknown kid provokes a refetch, which fails: the token is refused, not left hanging.
    reply, elapsed = remote.timed_get(token("rsa-b"))
    assert_invalid_token(reply)
    assert elapsed < 1.4, f"held {elapsed:.2f}s: longer than the {FETCH_TIMEOUT_MS} ms fetch timeout"
    if not refused:
        assert remote.keys.count(JWKS_PATH) == 2, remote.keys.paths()
    failed = remote.wait_stat("mcp_oauth_key_fetches_failed", failed_before + 1, 3.0)
    assert failed > failed_before, f"mcp_oauth_key_fetches_failed stayed {failed}: {remote.envoy.stats()}"
    assert remote.stat("mcp_oauth_key_fetches_ok") == 1

    # The last good keys stay in use, on every worker.
    for reply in remote.parallel([token("rsa-a")] * 8):
        assert_allowed(reply)

    # The failed fetch is retried with back-off (~1 s); that retry fails too, and still the
    # known key works and the unknown one does not.
    retried = remote.wait_stat("mcp_oauth_key_fetches_failed", failed + 1, 4.0)
    assert retried > failed, f"no retry within 4 s of the failure: {remote.envoy.stats()}"
    if not refused:
        assert remote.keys.count(JWKS_PATH) >= 3, remote.keys.paths()
    assert_allowed(remote.get(token("rsa-a")))
    assert_invalid_token(remote.get(token("rsa-b")))


# -- keys that never load ---------------------------------------------------------------------


def test_requests_get_503_with_retry_after_after_the_wait_when_keys_never_load(remote):
    remote.keys.fail(JWKS_PATH, 500)
    remote.start(remote_config(jwks_wait_ms=1000))
    reply, elapsed = remote.timed_get(token())
    assert_keys_unavailable(reply)
    assert 0.8 <= elapsed <= 2.5, f"503 after {elapsed:.2f}s; expected about jwks_wait_ms=1000"
    assert remote.keys.count(JWKS_PATH) >= 1
    assert remote.stat("mcp_oauth_key_fetches_failed") >= 1
    assert remote.stat("mcp_oauth_key_fetches_ok") == 0

    # Still failing: every request is decided within the wait, none hangs.
    with ThreadPoolExecutor(max_workers=4) as pool:
        for reply, elapsed in pool.map(remote.timed_get, [token()] * 4):
            assert_keys_unavailable(reply)
            assert elapsed <= 2.5, f"503 after {elapsed:.2f}s"

    # README, CORS: a browser client can read the 503 like every other answer the filter makes.
    reply = remote.get(token(), headers=[("Origin", "https://app.example")])
    assert_keys_unavailable(reply)
    assert reply.header("access-control-allow-origin") == "*", reply.describe()
    assert "www-authenticate" in (reply.header("access-control-expose-headers") or "").lower(), reply.describe()
    assert remote.stat("mcp_oauth_requests_denied_keys_unavailable") == 6


# -- discovery --------------------------------------------------------------------------------


def test_discovery_through_rfc8414_metadata_finds_the_key_set(remote):
    remote.keys.serve_json(RFC8414_PATH, metadata())
    remote.keys.serve_jwks(TENANT_JWKS_PATH, ["ec-p256"])
    remote.start(discovery_config())
    remote.wait_loaded()
    assert_allowed(remote.get(token("ec-p256", issuer=TENANT)))
    log = remote.keys.log()
    assert [s.path for s in log] == [RFC8414_PATH, TENANT_JWKS_PATH]
    assert [s.host for s in log] == ["auth.example.com", "keys.example.net"]


OIDC_FALLBACKS = {
    "rfc8414-404": None,
    "rfc8414-names-another-issuer": json_answer(metadata(issuer=ISSUER)),
    "rfc8414-not-json": Answer(body=b"<html>metadata</html>", headers=(("content-type", "text/html"),)),
}


@pytest.mark.parametrize("rfc8414_answer", OIDC_FALLBACKS.values(), ids=OIDC_FALLBACKS.keys())
def test_discovery_falls_back_to_openid_configuration(remote, rfc8414_answer):
    remote.keys.set(RFC8414_PATH, rfc8414_answer)
    remote.keys.serve_json(OIDC_PATH, metadata())
    remote.keys.serve_jwks(TENANT_JWKS_PATH, ["ec-p256"])
    remote.start(discovery_config())
    remote.wait_loaded()
    assert_allowed(remote.get(token("ec-p256", issuer=TENANT)))
    log = remote.keys.log()
    # The MCP authorization spec's order: RFC 8414 and OpenID with the path inserted, then
    # OpenID with the path appended.
    assert [s.path for s in log] == [RFC8414_PATH, OIDC_INSERTED_PATH, OIDC_PATH, TENANT_JWKS_PATH]
    assert [s.host for s in log] == ["auth.example.com"] * 3 + ["keys.example.net"]


def test_discovery_tries_openid_configuration_with_the_path_inserted(remote):
    remote.keys.serve_json(OIDC_INSERTED_PATH, metadata())
    remote.keys.serve_jwks(TENANT_JWKS_PATH, ["ec-p256"])
    remote.start(discovery_config())
    remote.wait_loaded()
    assert_allowed(remote.get(token("ec-p256", issuer=TENANT)))
    assert remote.keys.paths() == [RFC8414_PATH, OIDC_INSERTED_PATH, TENANT_JWKS_PATH]


def test_discovery_documents_naming_another_issuer_mean_no_keys_and_503(remote):
    # The parent issuer's documents: a plausible misconfiguration; their key set is good.
    remote.keys.serve_json(RFC8414_PATH, metadata(issuer=ISSUER))
    remote.keys.serve_json(OIDC_PATH, metadata(issuer=ISSUER))
    remote.keys.serve_jwks(TENANT_JWKS_PATH, ["ec-p256"])
    remote.start(discovery_config(jwks_wait_ms=1000))
    reply, elapsed = remote.timed_get(token("ec-p256", issuer=TENANT))
    assert_keys_unavailable(reply)
    assert 0.8 <= elapsed <= 2.5, f"503 after {elapsed:.2f}s"
    paths = remote.keys.paths()
    assert TENANT_JWKS_PATH not in paths, paths
    assert paths[:3] == [RFC8414_PATH, OIDC_INSERTED_PATH, OIDC_PATH], paths
    assert remote.stat("mcp_oauth_key_fetches_failed") >= 1
    assert remote.stat("mcp_oauth_key_fetches_ok") == 0


# -- one fetch for all workers ----------------------------------------------------------------

SOURCES = {
    "configured-jwks-uri": (remote_config, ISSUER, {JWKS_PATH: 1}),
    "discovery": (discovery_config, TENANT, {RFC8414_PATH: 1, TENANT_JWKS_PATH: 1}),
}


@pytest.mark.parametrize("source", SOURCES.values(), ids=SOURCES.keys())
def test_four_workers_share_one_fetch(remote, source):
    make_config, issuer, expected_counts = source
    remote.keys.serve_jwks(JWKS_PATH, ["rsa-a"])
    remote.keys.serve_json(RFC8414_PATH, metadata())
    remote.keys.serve_jwks(TENANT_JWKS_PATH, ["rsa-a"])
    remote.start(make_config())
    remote.wait_loaded()
    replies = remote.parallel([token(issuer=issuer) for _ in range(40)], threads=8)
    for reply in replies:
        assert_allowed(reply)
    workers = {w: n for w, n in remote.connections_per_worker().items() if n}
    assert len(workers) >= 2, f"the burst did not spread over the workers: {remote.connections_per_worker()}"
    time.sleep(1.0)  # several timer ticks on every worker
    assert {p: remote.keys.count(p) for p in expected_counts} == expected_counts, remote.keys.paths()
    assert len(remote.keys.paths()) == sum(expected_counts.values()), remote.keys.paths()
    assert remote.stat("mcp_oauth_key_fetches_ok") == 1
    assert remote.stat("mcp_oauth_key_fetches_failed") == 0
