"""Clients of MCP 2025-03-26 through Envoy + the filter (README, Clients of MCP 2025-03-26):
real SDK releases that predate RFC 9728 discovery. They ignore the 401's `resource_metadata`,
read the authorization server's metadata at the MCP server's origin
(`/.well-known/oauth-authorization-server`), register, authorize with PKCE and exchange the
code at the endpoints it names, and send no RFC 8707 `resource`: the authorization server
(`peers/auth-server.mjs --default-resource`) binds their tokens to the MCP resource by default.

- the Python MCP SDK 1.9.4 (peers/.venv-mcp-legacy; 1.10.0 reads Protected Resource Metadata),
- the TypeScript MCP SDK 1.11.5 (peers/legacy-ts; 1.12.0 reads it).

With `origin_authorization_server_metadata` on, both end in a real tool result; with it off,
they fail the way the README's troubleshooting entry says; today's clients work either way.
"""
from __future__ import annotations

import json
import re

import pytest

from harness.peers import (PEERS, PY2, PY_LEGACY, TS_LEGACY, AuthServer, FilterEnvoy, McpServer, free_port,
                           peers_installed, py_client_command, run_client, ts_client_command)

pytestmark = pytest.mark.skipif(bool(peers_installed()), reason=peers_installed() or "")

PY_SOURCE = "mcp/client/auth.py"
TS_SOURCE = PEERS / TS_LEGACY / "node_modules/@modelcontextprotocol/sdk/dist/esm/client/auth.js"


def legacy_python_source() -> str:
    site = next(PY_LEGACY.parent.parent.glob("lib/python3*/site-packages"), None)
    assert site is not None, f"no {PY_LEGACY}: run `make peers-deps`"
    return (site / PY_SOURCE).read_text()


def command(client: str, url: str) -> list[str]:
    calls = [("add", {"a": 2, "b": 3}), ("whoami", {})]
    if client == "python-mcp-1.9":
        return py_client_command(PY_LEGACY, url, "code", calls=calls)
    if client == "typescript-sdk-1.11":
        return ts_client_command(url, "code", calls=calls, sdk=TS_LEGACY)
    if client == "python-mcp2":
        return py_client_command(PY2, url, "code", calls=calls)
    return ts_client_command(url, "code", calls=calls)


def explain(outcome: dict) -> str:
    return json.dumps({k: v for k, v in outcome.items() if k != "trace"})[:3000] + "\n" + "\n".join(
        json.dumps(step)[:300] for step in outcome.get("trace") or [])


@pytest.fixture(scope="module")
def stacks(wasm_path):
    """One authorization server (default resource = the flagged Envoy's resource, metadata the
    old Python SDK can parse), one MCP server, and two Envoys: the flag on, the flag off."""
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with AuthServer(default_resource=resource, legacy_metadata=True) as auth, McpServer() as mcp, \
            FilterEnvoy.for_auth_server(auth, mcp.port, wasm_path=wasm_path, fixed_port=port,
                                        resource_extra={"origin_authorization_server_metadata": True}) as on, \
            FilterEnvoy.for_auth_server(auth, mcp.port, wasm_path=wasm_path) as off:
        assert on.resource == resource
        yield auth, on, off


def test_the_pins_are_clients_of_mcp_2025_03_26():
    """Read from the installed sources: they look for the authorization server's metadata at
    the MCP server's origin and know nothing of Protected Resource Metadata. If a pin ever
    reads `oauth-protected-resource`, it is no longer a legacy client and these tests prove
    nothing: pin an older release."""
    python = legacy_python_source()
    assert 'urljoin(auth_base_url, "/.well-known/oauth-authorization-server")' in python
    assert "oauth-protected-resource" not in python, "the Python pin reads RFC 9728 metadata: not a legacy client"
    typescript = TS_SOURCE.read_text()
    assert re.search(r'new URL\("/\.well-known/oauth-authorization-server", serverUrl\)', typescript)
    assert "oauth-protected-resource" not in typescript, "the TypeScript pin reads RFC 9728 metadata: not a legacy client"


@pytest.mark.parametrize("client", ["python-mcp-1.9", "typescript-sdk-1.11"])
def test_a_legacy_client_completes_a_tool_call_with_the_flag_on(stacks, client):
    auth, on, _off = stacks
    before = on.stats().get("mcp_oauth_as_metadata_served", 0)
    outcome = run_client(command(client, on.resource))
    assert outcome.get("ok") and outcome["exit_code"] == 0, explain(outcome) + "\n" + outcome.get("stderr_tail", "")
    assert [(r["tool"], r["text"]) for r in outcome["results"]] == [("add", "5"), ("whoami", "demo-user")]
    # It read the document at the MCP server's origin (the filter answered it) ...
    assert on.stats().get("mcp_oauth_as_metadata_served", 0) > before
    # ... and obtained a token for this resource without asking for one (no `resource`).
    claims = outcome["tokens"][-1]["claims"]
    assert claims["aud"] == on.resource and claims["iss"] == auth.issuer, claims
    authorize = [s for s in outcome.get("trace", []) if s.get("browser") == "authorize"]
    assert authorize and "resource" not in authorize[0]["params"], authorize


@pytest.mark.parametrize("client, failure", [
    ("python-mcp-1.9", r"Registration failed: 404"),
    ("typescript-sdk-1.11", r"registration failed: HTTP 404"),
])
def test_a_legacy_client_fails_with_the_flag_off(stacks, client, failure):
    """What an operator sees without the flag: the origin's well-known path reaches the MCP
    server (404), so the client guesses `/register` on it, which 404s too."""
    _auth, _on, off = stacks
    outcome = run_client(command(client, off.resource))
    assert not outcome.get("ok") and outcome["exit_code"] != 0, explain(outcome)
    assert re.search(failure, outcome.get("error", ""), re.I), explain(outcome)
    assert off.stats().get("mcp_oauth_as_metadata_served", 0) == 0


@pytest.mark.parametrize("client", ["python-mcp2", "typescript-sdk"])
def test_current_clients_still_discover_through_the_resource_metadata_with_the_flag_on(stacks, client):
    _auth, on, _off = stacks
    outcome = run_client(command(client, on.resource))
    assert outcome.get("ok") and outcome["exit_code"] == 0, explain(outcome) + "\n" + outcome.get("stderr_tail", "")
    trace = [step for step in outcome["trace"] if "method" in step]
    assert trace[0]["status"] == 401 and trace[0]["url"] == on.resource, explain(outcome)
    assert any("/.well-known/oauth-protected-resource" in step["url"] for step in trace), explain(outcome)


def test_the_python_pin_cannot_parse_an_authorization_servers_default_metadata(wasm_path):
    """What the README reports: oidc-provider's own metadata lists the `form_post` response
    mode and client-authentication signing algorithms, which the Python SDK before 1.10
    refuses to parse; it then ignores the document the filter served and fails as without it."""
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with AuthServer(default_resource=resource) as auth, McpServer() as mcp, \
            FilterEnvoy.for_auth_server(auth, mcp.port, wasm_path=wasm_path, fixed_port=port,
                                        resource_extra={"origin_authorization_server_metadata": True}) as on:
        outcome = run_client(command("python-mcp-1.9", on.resource))
        assert not outcome.get("ok"), explain(outcome)
        assert on.stats().get("mcp_oauth_as_metadata_served", 0) >= 1, "the filter served the document"
        assert "response_modes_supported" in outcome["stderr_tail"] or \
            "token_endpoint_auth_signing_alg_values_supported" in outcome["stderr_tail"], outcome["stderr_tail"]
        assert re.search(r"Registration failed: 404", outcome.get("error", "")), explain(outcome)
