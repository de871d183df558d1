"""MCP 2026-07-28 alignment on the wire (README, "Browser origins" and "Scopes"): with
`allowed_origins` set, a request on a path of ours from another `Origin` gets 403 without CORS
headers, preflights included, and the filter's answers to an allowed origin name it (with
`Vary: Origin`); `offline_access` in the scopes is a configuration Envoy refuses, naming the
field and the MCP revision."""
from __future__ import annotations

import copy
import time

import pytest

import expect
import scenario
from harness import start_expecting_failure
from scenario import MCP_METADATA_PATH, MCP_PATH

ALLOWED = "https://app.example.com"
ALSO_ALLOWED = "http://localhost:6274"


def _config() -> dict:
    config = copy.deepcopy(scenario.plugin_config())
    config["allowed_origins"] = [ALLOWED, ALSO_ALLOWED]
    return config


@pytest.fixture(scope="module")
def gw(envoys):
    return envoys.client(_config())


def _no_cors(reply) -> None:
    assert [n for n, _ in reply.headers if n.startswith("access-control-")] == [], reply.describe()


FOREIGN = ["https://evil.example.com", "null", "https://APP.example.com", "https://app.example.com:443",
           "http://app.example.com", "https://app.example.com.evil.example"]


@pytest.mark.parametrize("origin", FOREIGN)
@pytest.mark.parametrize("path", [MCP_PATH, "/mcp/sub", MCP_METADATA_PATH])
def test_a_foreign_origin_gets_403_without_cors_headers(gw, path, origin):
    token = scenario.token()
    reply = gw.get(path, headers=[("Origin", origin), ("Authorization", f"Bearer {token}")])
    assert reply.status == 403, reply.describe()
    assert reply.json()["error"] == "forbidden"
    assert reply.header("www-authenticate") is None
    _no_cors(reply)
    expect.not_forwarded(reply)


@pytest.mark.parametrize("path", [MCP_PATH, MCP_METADATA_PATH])
def test_a_foreign_origin_preflight_is_refused_too(gw, path):
    reply = gw.request("OPTIONS", path, headers=[("Origin", "https://evil.example.com"),
                                                 ("Access-Control-Request-Method", "POST")])
    assert reply.status == 403, reply.describe()
    _no_cors(reply)
    expect.not_forwarded(reply)


@pytest.mark.parametrize("origin", [ALLOWED, ALSO_ALLOWED])
def test_answers_to_an_allowed_origin_name_it_and_vary_by_origin(gw, origin):
    challenge = gw.get(MCP_PATH, headers=[("Origin", origin)])
    assert challenge.status == 401, challenge.describe()
    assert challenge.header("access-control-allow-origin") == origin
    assert "Origin" in (challenge.header("vary") or "")
    assert "resource_metadata=" in challenge.header("www-authenticate")
    metadata = gw.get(MCP_METADATA_PATH, headers=[("Origin", origin)])
    assert metadata.status == 200 and metadata.header("access-control-allow-origin") == origin
    preflight = gw.request("OPTIONS", MCP_PATH, headers=[("Origin", origin), ("Access-Control-Request-Method", "POST")])
    assert preflight.status == 204, preflight.describe()
    assert preflight.header("access-control-allow-origin") == origin
    assert "Origin" in (preflight.header("vary") or "")


def test_an_allowed_origin_with_a_valid_token_reaches_the_upstream(gw):
    reply = gw.get(MCP_PATH, headers=[("Origin", ALLOWED), ("Authorization", f"Bearer {scenario.token()}")])
    expect.forwarded_once(reply)


def test_requests_without_an_origin_are_not_refused(gw):
    assert gw.get(MCP_PATH).status == 401
    expect.forwarded_once(gw.get(MCP_PATH, headers=[("Authorization", f"Bearer {scenario.token()}")]))


def test_paths_outside_every_resource_are_not_the_filter_s_business(gw):
    reply = gw.get("/other", headers=[("Origin", "https://evil.example.com")])
    expect.forwarded_once(reply)


def test_refusals_are_counted(gw):
    name = "mcp_oauth_requests_denied_origin_not_allowed"
    time.sleep(1.2)  # counts reach /stats within a second
    before = gw.envoy.stats().get(name, 0)
    gw.get(MCP_PATH, headers=[("Origin", "https://evil.example.com")])
    time.sleep(1.2)
    assert gw.envoy.stats().get(name, 0) == before + 1


OFFLINE_ACCESS = {
    "scopes_supported": (lambda c: c["resources"][0].__setitem__("scopes_supported", ["mcp:read", "offline_access"]),
                         "resources[0].scopes_supported[1]"),
    "required_scopes": (lambda c: c["resources"][0].__setitem__("required_scopes", ["offline_access"]),
                        "resources[0].required_scopes[0]"),
    "tool_scopes": (lambda c: c["resources"][0].__setitem__("tool_scopes", {"echo": ["offline_access"]}),
                    "resources[0].tool_scopes.echo[0]"),
    "method_scopes": (lambda c: c["resources"][0].__setitem__("method_scopes", {"tools/list": ["offline_access"]}),
                      "resources[0].method_scopes.tools/list[0]"),
    "scope_implies": (lambda c: c.__setitem__("scope_implies", {"mcp:admin": ["offline_access"]}),
                      "scope_implies.mcp:admin[0]"),
}


@pytest.mark.parametrize("mutate, field", OFFLINE_ACCESS.values(), ids=OFFLINE_ACCESS.keys())
def test_envoy_refuses_offline_access_naming_the_field_and_the_mcp_revision(upstream, wasm_path, mutate, field):
    config = copy.deepcopy(scenario.plugin_config())
    mutate(config)
    outcome = start_expecting_failure(config, upstream.port, wasm_path=wasm_path, timeout=20)
    assert not outcome.became_ready and outcome.exit_code != 0, outcome.log[-2000:]
    assert field in outcome.log and "MCP 2026-07-28" in outcome.log, outcome.log[-2000:]
    assert "[offline_access]" in outcome.log


def test_envoy_refuses_an_allowed_origin_that_is_not_one(upstream, wasm_path):
    config = _config()
    config["allowed_origins"] = ["https://app.example.com/"]
    outcome = start_expecting_failure(config, upstream.port, wasm_path=wasm_path, timeout=20)
    assert not outcome.became_ready and "allowed_origins[0]" in outcome.log, outcome.log[-2000:]
