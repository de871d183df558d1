"""CORS preflights answered by the filter, and CORS headers on its own responses (README, CORS)."""
from __future__ import annotations

import pytest

import expect
import scenario
from harness import split_header_list
from scenario import MCP_METADATA_PATH, MCP_PATH

ORIGIN = "https://client.example.org"
REQUIRED_ALLOW_HEADERS = [
    "authorization",
    "content-type",
    "mcp-protocol-version",
    "mcp-session-id",
    "mcp-method",
    "mcp-name",
    "last-event-id",
]


@pytest.mark.parametrize("path", [MCP_PATH, "/mcp/x", "/tools", MCP_METADATA_PATH])
def test_answers_preflight_on_protected_and_metadata_paths(client, path):
    reply = client.request(
        "OPTIONS",
        path,
        headers=[
            ("Origin", ORIGIN),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization, content-type, mcp-protocol-version"),
        ],
    )
    assert reply.status == 204, reply.describe()
    assert reply.header("access-control-allow-origin") in ("*", ORIGIN)
    assert "POST" in [m.upper() for m in split_header_list(reply.header_values("access-control-allow-methods"))]
    allowed = split_header_list(reply.header_values("access-control-allow-headers"))
    assert [h for h in REQUIRED_ALLOW_HEADERS if h not in allowed] == [], allowed
    assert (reply.header("access-control-max-age") or "").strip().isdigit(), reply.headers
    assert reply.header("www-authenticate") is None
    expect.not_forwarded(reply)


def test_options_without_preflight_headers_is_protected_like_any_method(client):
    reply = client.request("OPTIONS", MCP_PATH)
    assert reply.status == 401, reply.describe()
    expect.not_forwarded(reply)


FILTER_RESPONSES = {
    "401-no-credentials": (MCP_PATH, lambda: [], 401),
    "400-invalid-request": (MCP_PATH, lambda: [("Authorization", "Bearer a b")], 400),
    "401-invalid-token": (MCP_PATH, lambda: [("Authorization", "Bearer abc")], 401),
    "403-insufficient-scope": (MCP_PATH, lambda: [("Authorization", f"Bearer {scenario.token(scope='other')}")], 403),
    "metadata": (MCP_METADATA_PATH, lambda: [], 200),
}


@pytest.mark.parametrize("path, make_headers, status", FILTER_RESPONSES.values(), ids=FILTER_RESPONSES.keys())
def test_filter_responses_carry_cors_headers_when_the_request_has_an_origin(client, path, make_headers, status):
    reply = client.get(path, headers=[("Origin", ORIGIN), *make_headers()])
    assert reply.status == status, reply.describe()
    assert reply.header("access-control-allow-origin") in ("*", ORIGIN)
    assert "www-authenticate" in split_header_list(reply.header_values("access-control-expose-headers")), reply.headers
    expect.not_forwarded(reply)


def test_preflight_outside_every_resource_passes_through(client):
    reply = client.request("OPTIONS", "/other", headers=[("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")])
    seen = expect.forwarded_once(reply)
    assert seen.method == "OPTIONS"
