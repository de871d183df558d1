"""Real step-up authorization (MCP specification 2026-07-28, authorization; README, MCP-aware
authorization): a real Python `mcp` 2.x client whose token holds `mcp:read` calls a tool that
needs `mcp:admin`, gets the filter's single 403 `insufficient_scope` naming every scope the call
needs, re-authorizes at the real authorization server with that set, and the call succeeds.

Stack: `peers/auth-server.mjs` (oidc-provider), `peers/mcp_server.py` (tools `add`, `echo`,
`whoami`), Envoy with the filter (`tool_scopes: {"echo": ["mcp:admin"]}`, keys fetched through
the `auth_server` cluster, `allow_on_headers_stop_iteration` so the denied call never reaches the
server).
"""
from __future__ import annotations

import pytest

from harness import parse_www_authenticate
from harness.peers import PY2, AuthServer, FilterEnvoy, McpServer, peers_installed, plugin_config, \
    py_client_command, run_client

pytestmark = pytest.mark.skipif(bool(peers_installed()), reason=peers_installed() or "")


@pytest.fixture(scope="module")
def stack(wasm_path):
    with AuthServer() as auth, McpServer() as mcp:
        issuer = {"issuer": auth.issuer, "jwks_uri": auth.jwks_uri, "cluster": "auth_server"}
        config = lambda resource: plugin_config(resource, issuer, tool_scopes={"echo": ["mcp:admin"]})  # noqa: E731
        envoy = FilterEnvoy(config, mcp.port, auth_port=auth.port, wasm_path=wasm_path,
                            wasm_config_extra={"allow_on_headers_stop_iteration": True})
        with envoy:
            yield auth, envoy


def test_python_client_steps_up_from_read_to_admin_after_one_403(stack):
    auth, envoy = stack
    command = py_client_command(PY2, envoy.resource, "code", auth=auth,
                                calls=[("add", {"a": 2, "b": 3}), ("echo", {"text": "stepped up"})],
                                extra=["--scope", "mcp:read mcp:write mcp:admin"])
    outcome = run_client(command)
    assert outcome.get("ok") and outcome["exit_code"] == 0, str(outcome)[:3000]
    assert [r["text"] for r in outcome["results"]] == ["5", "stepped up"]

    # The first challenge asked for the required scope only; the client got just that.
    mcp_replies = [step for step in outcome["trace"] if step.get("url") == envoy.resource]
    first_401 = next(s for s in mcp_replies if s["status"] == 401)
    assert parse_www_authenticate(first_401["www_authenticate"])[0].get("scope") == "mcp:read"
    tokens = outcome["tokens"]
    assert tokens[0]["claims"]["scope"].split() == ["mcp:read"]

    # The tool call needing mcp:admin got one 403 naming the whole set the call needs.
    denials = [s for s in mcp_replies if s["status"] == 403]
    assert len(denials) == 1, mcp_replies
    challenge = parse_www_authenticate(denials[0]["www_authenticate"])[0]
    assert challenge.get("error") == "insufficient_scope"
    assert challenge.get("scope") == "mcp:read mcp:admin"

    # The client re-authorized with that set and retried with the new token.
    assert len(tokens) == 2, tokens
    assert {"mcp:read", "mcp:admin"} <= set(tokens[1]["claims"]["scope"].split())
    assert tokens[1]["claims"]["aud"] == envoy.resource
