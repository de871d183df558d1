"""Differential: Envoy + mcp-oauth-filter in front of a plain MCP server, against the Python MCP
SDK's own resource-server mode (MCPServer with `AuthSettings` and a `TokenVerifier` that checks
the same authorization server's JWTs with PyJWT: signature by its JWKS, iss, aud = the server's
own /mcp URL, exp; `validate_token_resource=True`), same tokens, same requests.

Compared: status codes, the set of `WWW-Authenticate` parameters, error codes, and the Protected
Resource Metadata documents. Every difference asserted below is intended and explained where
it is asserted; anything else that differs fails the test.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from harness import parse_www_authenticate
from harness.peers import PY2, AuthServer, FilterEnvoy, McpServer, peers_installed, py_client_command, run_client

pytestmark = pytest.mark.skipif(bool(peers_installed()), reason=peers_installed() or "")

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def post(url: str, token: str | None) -> tuple[int, dict, bytes]:
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(INITIALIZE).encode(), headers=headers, method="POST")
    try:
        with OPENER.open(request, timeout=15) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def get(url: str) -> tuple[int, dict | None]:
    try:
        with OPENER.open(url, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, None


def metadata_url(resource: str) -> str:
    return resource.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")


class Side:
    """One resource server: its /mcp URL (the resource) and how it answers."""

    def __init__(self, name: str, resource: str):
        self.name = name
        self.resource = resource

    def call(self, token: str | None) -> dict:
        status, headers, body = post(self.resource, token)
        out: dict = {"status": status}
        if "www-authenticate" in headers:
            challenge = parse_www_authenticate(headers["www-authenticate"])[0]
            out["scheme"] = challenge.scheme.lower()
            out["params"] = dict(challenge.params)
        if status >= 400:
            try:
                out["body_error"] = json.loads(body).get("error")
            except ValueError:
                out["body_error"] = None
        return out


@pytest.fixture(scope="module")
def sides(wasm_path):
    with AuthServer() as auth, McpServer() as upstream, \
            FilterEnvoy.for_auth_server(auth, upstream.port, wasm_path=wasm_path) as envoy, \
            McpServer(auth_issuer=auth.issuer, jwks_uri=auth.jwks_uri, required_scopes=["mcp:read"]) as sdk:
        yield auth, Side("filter", envoy.resource), Side("sdk", sdk.url)


def both(sides, token_for) -> tuple[dict, dict]:
    _auth, filt, sdk = sides
    return filt.call(token_for(filt)), sdk.call(token_for(sdk))


def test_no_token(sides):
    filt, sdk = both(sides, lambda side: None)
    assert filt["status"] == sdk["status"] == 401
    assert filt["scheme"] == sdk["scheme"] == "bearer"
    assert filt["params"]["resource_metadata"] == metadata_url(sides[1].resource)
    assert sdk["params"]["resource_metadata"] == metadata_url(sides[2].resource)
    # Intended: with no credentials the filter sends no `error` (RFC 6750 §3.1: "the resource
    # server SHOULD NOT include an error code" when the request lacks authentication
    # information), while the SDK sends error="invalid_token" + a description. The filter adds
    # `scope` (MCP authorization, scope selection: servers SHOULD include the scopes needed).
    assert set(filt["params"]) == {"resource_metadata", "scope"}
    assert filt["params"]["scope"] == "mcp:read"
    assert set(sdk["params"]) == {"error", "error_description", "resource_metadata"}
    assert sdk["params"]["error"] == "invalid_token"
    # Both answer with a JSON error body naming invalid_token.
    assert filt["body_error"] == sdk["body_error"] == "invalid_token"


@pytest.mark.parametrize("case", ["garbage", "other-audience"])
def test_invalid_tokens(sides, case):
    auth = sides[0]

    def token_for(side):
        if case == "garbage":
            return "not-a-jwt"
        return auth.client_credentials_token("http://127.0.0.1:1/somewhere-else")["access_token"]

    filt, sdk = both(sides, token_for)
    assert filt["status"] == sdk["status"] == 401
    assert filt["params"]["error"] == sdk["params"]["error"] == "invalid_token"
    assert filt["body_error"] == sdk["body_error"] == "invalid_token"
    # Intended: the filter also repeats `scope` on invalid_token (README, Challenges and decisions), so a client that
    # re-authorizes asks for the right scopes; the SDK's challenge has no `scope`.
    assert set(filt["params"]) == {"error", "error_description", "resource_metadata", "scope"}
    assert set(sdk["params"]) == {"error", "error_description", "resource_metadata"}


def test_insufficient_scope(sides):
    auth = sides[0]
    filt, sdk = both(sides, lambda side: auth.client_credentials_token(side.resource, scope="mcp:write")["access_token"])
    assert filt["status"] == sdk["status"] == 403
    assert filt["params"]["error"] == sdk["params"]["error"] == "insufficient_scope"
    # Intended: RFC 6750 §3.1 and MCP (step-up authorization) want `scope` on an
    # insufficient_scope challenge; the filter sends it, the SDK only says it in the description.
    assert set(filt["params"]) == {"error", "error_description", "resource_metadata", "scope"}
    assert filt["params"]["scope"] == "mcp:read"
    assert set(sdk["params"]) == {"error", "error_description", "resource_metadata"}


def test_valid_token(sides):
    auth = sides[0]
    filt, sdk = both(sides, lambda side: auth.client_credentials_token(side.resource)["access_token"])
    assert filt == sdk == {"status": 200}


def test_metadata_documents(sides):
    auth, filt, sdk = sides
    f_status, f_doc = get(metadata_url(filt.resource))
    s_status, s_doc = get(metadata_url(sdk.resource))
    assert f_status == s_status == 200
    assert f_doc["resource"] == filt.resource and s_doc["resource"] == sdk.resource
    assert f_doc["authorization_servers"] == s_doc["authorization_servers"] == [auth.issuer]
    assert f_doc["bearer_methods_supported"] == s_doc["bearer_methods_supported"] == ["header"]
    # Intended: the filter publishes the configured `scopes_supported` (everything the resource
    # offers) and `resource_name`; the SDK derives scopes_supported from its required scopes and
    # has no name setting.
    assert f_doc["scopes_supported"] == ["mcp:read", "mcp:write", "mcp:admin"]
    assert s_doc["scopes_supported"] == ["mcp:read"]
    assert set(f_doc) - set(s_doc) == {"resource_name"}
    assert set(s_doc) - set(f_doc) == set()
    # Intended: the root /.well-known/oauth-protected-resource answers on the filter when one
    # resource is configured (README, Protected Resource Metadata; for clients that try the root); the SDK only serves the
    # path-suffixed URL.
    assert get(filt.resource.replace("/mcp", "/.well-known/oauth-protected-resource"))[0] == 200
    assert get(sdk.resource.replace("/mcp", "/.well-known/oauth-protected-resource"))[0] == 404


def test_same_client_same_result(sides):
    """The Python SDK client (client credentials) gets the same tool result from both."""
    auth, filt, sdk = sides
    results = []
    for side in (filt, sdk):
        outcome = run_client(py_client_command(PY2, side.resource, "cc", auth=auth, calls=[("add", {"a": 20, "b": 22})]))
        assert outcome.get("ok"), (side.name, outcome)
        results.append(outcome["results"])
    assert results[0] == results[1] == [{"tool": "add", "text": "42", "is_error": False}]
