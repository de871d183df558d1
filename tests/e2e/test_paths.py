"""Which requests a resource protects, and what passes through untouched (README, Which
requests are checked)."""
from __future__ import annotations

import pytest

import expect
import scenario

PROTECTED = ["/mcp?x=1", "/mcp/", "/mcp/x", "/mcp/x/y?z=1", "/tools/list"]


@pytest.mark.parametrize("path", PROTECTED)
def test_protects_the_resource_path_and_everything_below_it(client, path):
    reply = client.get(path)
    assert reply.status == 401, reply.describe()
    expect.not_forwarded(reply)


@pytest.mark.parametrize("path", PROTECTED)
def test_forwards_protected_path_and_query_unchanged_with_a_valid_token(client, path):
    audience = scenario.TOOLS if path.startswith("/tools") else scenario.MCP
    seen = expect.forwarded_once(client.get(path, token=scenario.token(audience)))
    assert seen.path == path


@pytest.mark.parametrize("path", ["/mcpx", "/mcpx/y", "/other", "/", "/toolsx?a=b", "/.well-known/other"])
def test_passes_requests_outside_every_resource_through_untouched(client, path):
    reply = client.get(path, headers=[("Authorization", "Bearer not-a-jwt"), ("x-other", "kept")])
    seen = expect.forwarded_once(reply)
    assert seen.path == path
    assert seen.header_values("authorization") == ["Bearer not-a-jwt"]
    assert seen.header_values("x-other") == ["kept"]
    assert reply.header("www-authenticate") is None


NON_NORMALIZED = [
    "/%6Dcp",
    "/%6dcp",
    "/%6D%63%70",
    "//mcp",
    "/./mcp",
    "/x/../mcp",
    "/x/%2e%2e/mcp",
    "/%2E/mcp",
    "/mcp%2Fx",
    "/mcp%2fx",
    "/%2Fmcp",
    "/mcp%5Cx",
    "/mcp/./x",
    "/mcp/x/../y",
    "/mcp\\x",
    "/\\mcp",
    "/mcp%252Fx",  # double encoded: an upstream that decodes twice sees /mcp/x
    "/%252Fmcp",
    "/mcp;jsessionid=1",  # a servlet container maps it to /mcp
    "/mcp;v=1/x",
    "/mcp//../x",  # RFC 3986 dot removal alone gives /mcp/x
]


@pytest.mark.parametrize("path", NON_NORMALIZED)
def test_never_lets_a_non_normalized_protected_path_through_unauthenticated(client, path):
    reply = client.get(path)
    assert reply.status in (400, 401), reply.describe()
    expect.not_forwarded(reply)


@pytest.mark.parametrize("path", ["/mcp//../tools", "/tools//../mcp"])
@pytest.mark.parametrize("audience", [scenario.MCP, scenario.TOOLS])
def test_refuses_a_path_that_upstreams_would_read_as_either_resource(client, path, audience):
    # Merging slashes first reads /mcp//../tools as /tools; RFC 3986 dot removal alone reads it
    # as /mcp/tools. Neither resource's token may decide it.
    reply = client.get(path, token=scenario.token(audience))
    assert reply.status == 400, reply.describe()
    assert 'error="invalid_request"' in (reply.header("www-authenticate") or ""), reply.describe()
    expect.not_forwarded(reply)


def test_forwards_a_path_with_parameters_unchanged_with_a_valid_token(client):
    seen = expect.forwarded_once(client.get("/mcp;v=1/x", token=scenario.token(scenario.MCP)))
    assert seen.path == "/mcp;v=1/x"


@pytest.mark.parametrize("path", scenario.PLAIN_PREFIX_WITH_DOT_SEGMENTS + scenario.ENCODED_PREFIX_WITH_DOT_SEGMENTS)
def test_protected_prefix_spelled_with_escapes_and_dot_segments_is_not_let_through(client, path):
    reply = client.get(path)
    assert reply.status in (400, 401), f"{path}: {reply.describe()} upstream got {[r.path for r in reply.upstream_requests]}"
    assert not reply.upstream_requests
