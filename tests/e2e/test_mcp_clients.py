"""Real MCP clients through Envoy + the filter, against a real authorization server.

One stack per module: `peers/auth-server.mjs` (npm oidc-provider: RFC 8414 metadata, dynamic
registration, PKCE, client credentials, RFC 9068 JWT access tokens bound to the RFC 8707
resource), the Python `mcp` MCP server (`peers/mcp_server.py`, no auth of its own), and Envoy
with the filter, whose keys come from the authorization server's JWKS through the `auth_server`
cluster (README, Remote keys: `jwks_uri` + `cluster`; the expiry test's Envoy uses `cluster` alone, i.e.
discovery). Each client runs as its own process and must end in a real tool result.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from harness import parse_www_authenticate
from harness.peers import PY1, PY2, AuthServer, FilterEnvoy, McpServer, peers_installed, py_client_command, run_client, \
    ts_client_command

pytestmark = pytest.mark.skipif(bool(peers_installed()), reason=peers_installed() or "")

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def http(method: str, url: str, *, token: str | None = None, body: dict | None = None) -> tuple[int, dict, bytes]:
    headers = {"accept": "application/json, text/event-stream"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with OPENER.open(request, timeout=15) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


@pytest.fixture(scope="module")
def stack(wasm_path):
    with AuthServer() as auth, McpServer() as mcp, \
            FilterEnvoy.for_auth_server(auth, mcp.port, wasm_path=wasm_path) as envoy:
        yield auth, mcp, envoy


def _explain(outcome: dict) -> str:
    trace = outcome.get("trace") or []
    lines = [json.dumps({k: v for k, v in outcome.items() if k != "trace"})[:2000]]
    for step in trace:
        lines.append(json.dumps({k: (str(v)[:200] if k == "json" else v) for k, v in step.items()}))
    return "\n".join(lines)


CLIENTS = {
    "python-mcp2": lambda url, flow, auth, calls: py_client_command(PY2, url, flow, auth=auth, calls=calls),
    "python-mcp1": lambda url, flow, auth, calls: py_client_command(PY1, url, flow, auth=auth, calls=calls),
    "typescript-sdk": lambda url, flow, auth, calls: ts_client_command(url, flow, auth=auth, calls=calls),
}


@pytest.mark.parametrize("flow", ["code", "cc"])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_client_flow_ends_in_a_real_tool_result(stack, client, flow):
    auth, _mcp, envoy = stack
    if client == "python-mcp1" and not PY1.exists():
        pytest.skip(f"no {PY1}: run `make deps` (it creates peers/.venv-mcp1 with mcp<2)")
    outcome = run_client(CLIENTS[client](envoy.resource, flow, auth, [("add", {"a": 2, "b": 3}), ("whoami", {})]))
    assert outcome.get("ok") and outcome["exit_code"] == 0, _explain(outcome) + "\n" + outcome.get("stderr_tail", "")

    # The tools' real answers: add ran upstream, whoami saw the filter's x-mcp-subject = sub.
    expected_subject = auth.cc_client["client_id"] if flow == "cc" else "demo-user"
    assert [(r["tool"], r["text"]) for r in outcome["results"]] == [("add", "5"), ("whoami", expected_subject)]

    # The flow started from the filter's challenge and went through its metadata document.
    trace = [step for step in outcome["trace"] if "method" in step]
    first = trace[0]
    assert first["status"] == 401 and first["url"] == envoy.resource, _explain(outcome)
    challenge = parse_www_authenticate(first["www_authenticate"])[0]
    assert challenge.get("resource_metadata") == envoy.resource.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    assert any(step["url"] == challenge.get("resource_metadata") and step["status"] == 200 for step in trace)
    if flow == "code":
        assert any(step["url"] == f"{auth.issuer}/reg" and step["status"] == 201 for step in trace), _explain(outcome)

    # The token the authorization server minted is bound to this resource and issuer.
    claims = outcome["tokens"][-1]["claims"]
    assert claims["aud"] == envoy.resource and claims["iss"] == auth.issuer and claims["sub"] == expected_subject
    assert "mcp:read" in claims["scope"].split()


def test_discovery_is_exact(stack):
    """The 401's resource_metadata URL serves metadata whose `resource` is byte for byte the URL
    the client used and whose `authorization_servers` is the AS's `issuer` string, and that
    issuer's RFC 8414 metadata names itself identically (clients compare these exactly)."""
    auth, _mcp, envoy = stack
    status, headers, _ = http("POST", envoy.resource, body=INITIALIZE)
    assert status == 401
    challenge = parse_www_authenticate(headers["www-authenticate"])[0]
    assert challenge.scheme.lower() == "bearer" and challenge.get("error") is None
    assert challenge.get("scope") == "mcp:read"
    status, headers, body = http("GET", challenge.get("resource_metadata"))
    assert status == 200 and headers["content-type"].startswith("application/json")
    document = json.loads(body)
    assert document["resource"] == envoy.resource
    assert document["authorization_servers"] == [auth.issuer]
    status, _, body = http("GET", f"{auth.issuer}/.well-known/oauth-authorization-server")
    assert status == 200 and json.loads(body)["issuer"] == auth.issuer


def test_token_for_another_resource_is_refused(stack):
    """The same AS, the same keys, a valid token, but minted (client credentials, RFC 8707) for
    a different resource: its `aud` is not this resource, so 401 invalid_token."""
    auth, _mcp, envoy = stack
    good = auth.client_credentials_token(envoy.resource)["access_token"]
    assert http("POST", envoy.resource, token=good, body=INITIALIZE)[0] == 200
    other = auth.client_credentials_token("http://127.0.0.1:1/other-mcp")["access_token"]
    status, headers, body = http("POST", envoy.resource, token=other, body=INITIALIZE)
    assert status == 401, body
    challenge = parse_www_authenticate(headers["www-authenticate"])[0]
    assert challenge.get("error") == "invalid_token"
    assert json.loads(body)["error"] == "invalid_token"


@pytest.fixture(scope="module")
def short_ttl_stack(wasm_path, stack):
    """An AS whose access tokens live 2 s and an Envoy with no clock skew, keys found by
    discovery (`cluster` alone: RFC 8414 metadata, then its jwks_uri); the MCP server is shared."""
    _auth, mcp, _envoy = stack
    with AuthServer(access_token_ttl=2) as auth, FilterEnvoy.for_auth_server(
            auth, mcp.port, wasm_path=wasm_path, discovery=True, clock_skew_seconds=0) as envoy:
        yield auth, envoy


def test_expired_token_makes_the_client_reauthorize(short_ttl_stack):
    auth, envoy = short_ttl_stack
    store = tempfile.NamedTemporaryFile(prefix="mcp-tokens-", suffix=".json", delete=False)
    store.close()
    os.unlink(store.name)
    try:
        # A client that keeps its token between runs (without expires_in, so it cannot tell).
        extra = ["--forget-expiry", "--token-store", store.name]
        first = run_client(py_client_command(PY2, envoy.resource, "code", calls=[("add", {"a": 2, "b": 3})], extra=extra))
        assert first.get("ok"), _explain(first)
        time.sleep(3)  # TTL 2 s, skew 0
        second = run_client(py_client_command(PY2, envoy.resource, "code", calls=[("whoami", {})], extra=extra))
        assert second.get("ok"), _explain(second)
        assert second["results"] == [{"tool": "whoami", "text": "demo-user", "is_error": False}]
        trace = [step for step in second["trace"] if "method" in step]
        # The stored token went out first and the filter refused it as expired ...
        refused = trace[0]
        assert refused["status"] == 401, _explain(second)
        challenge = parse_www_authenticate(refused["www_authenticate"])[0]
        assert challenge.get("error") == "invalid_token" and "expired" in (challenge.get("error_description") or "")
        # ... then the SDK authorized again (same registration, new code) and got a new token.
        assert any(step["url"] == f"{auth.issuer}/token" and step["status"] == 200 for step in trace)
        assert not any(step["url"] == f"{auth.issuer}/reg" for step in trace)
        assert second["tokens"] and second["tokens"][-1]["claims"]["jti"] != first["tokens"][-1]["claims"]["jti"]
    finally:
        if os.path.exists(store.name):
            os.unlink(store.name)


def test_discovery_variant_fetched_keys(short_ttl_stack):
    """`cluster` alone: the filter found the jwks_uri in the AS's metadata and loaded its keys."""
    auth, envoy = short_ttl_stack
    token = auth.client_credentials_token(envoy.resource)["access_token"]
    assert http("POST", envoy.resource, token=token, body=INITIALIZE)[0] == 200
    stats = envoy.stats()
    assert any("fetch" in name and value > 0 for name, value in stats.items()), stats


def test_discovery_falls_back_to_openid_configuration_and_es256(wasm_path, stack):
    """`cluster` alone against an AS that serves only OpenID Connect discovery (no RFC 8414
    document: 404 at /.well-known/oauth-authorization-server) and signs its access tokens with
    ES256: the filter still finds the jwks_uri and accepts the token."""
    _auth, mcp, _envoy = stack
    with AuthServer(rfc8414=False, alg="ES256") as auth, FilterEnvoy.for_auth_server(
            auth, mcp.port, wasm_path=wasm_path, discovery=True) as envoy:
        assert http("GET", f"{auth.issuer}/.well-known/oauth-authorization-server")[0] == 404
        token = auth.client_credentials_token(envoy.resource)["access_token"]
        header = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[0] + "=="))
        assert header["alg"] == "ES256" and header["typ"] == "at+jwt"
        status, _, body = http("POST", envoy.resource, token=token, body=INITIALIZE)
        assert status == 200, (body, envoy.log_tail())


@pytest.mark.parametrize("flags, steps", [([], 7), (["--opaque"], 8), (["--legacy"], 5)],
                         ids=["jwt", "opaque", "legacy"])
def test_demo_walkthrough_once(wasm_path, flags, steps):
    """`make demo ARGS=--once` (and `--once --opaque`, opaque tokens introspected; `--once
    --legacy`, a client of MCP 2025-03-26): the whole real stack, one real client, every step
    succeeds."""
    import subprocess
    import sys

    from harness.peers import REPO_ROOT

    env = {**os.environ, "MCP_OAUTH_WASM": str(wasm_path), "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "demo" / "demo.py"), "--once", *flags], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"All {steps} steps succeeded." in done.stdout
    assert "tools/call add → '5'" in done.stdout
    if "--opaque" in flags:
        assert "The filter asks the authorization server about it (RFC 7662 introspection)" in done.stdout
    if "--legacy" in flags:
        assert "It asks the MCP server's origin for the authorization server (MCP 2025-03-26)" in done.stdout
        assert "/.well-known/oauth-protected-resource" not in done.stdout
