"""SPEC §3: which requests a resource protects, and what passes through untouched."""
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
]


@pytest.mark.parametrize("path", NON_NORMALIZED)
def test_never_lets_a_non_normalized_protected_path_through_unauthenticated(client, path):
    reply = client.get(path)
    assert reply.status in (400, 401), reply.describe()
    expect.not_forwarded(reply)
