"""The `mcp-oauth-filter` command line (README, Command line): the native binary that shares the core.

Runs the real binary (`cargo build --bin mcp-oauth-filter`) on configuration files and tokens
and asserts on exit codes and what a person reads.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness import tokens

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / "target" / "debug" / "mcp-oauth-filter"
ISSUER = "https://auth.example.com"
RESOURCE = "https://mcp.example.com/mcp"


@pytest.fixture(scope="module")
def cli():
    subprocess.run(["cargo", "build", "--quiet", "--bin", "mcp-oauth-filter"], cwd=REPO, check=True)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=60)

    return run


def write(tmp_path: Path, name: str, content) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def config(**extra) -> dict:
    base = {
        "resources": [
            {
                "resource": RESOURCE,
                "authorization_servers": [ISSUER],
                "required_scopes": ["mcp:read"],
            }
        ],
        "issuers": [{"issuer": ISSUER, "jwks": tokens.fixture_jwks()}],
        "claims_to_headers": {"x-mcp-subject": "sub"},
    }
    base.update(extra)
    return base


def token(**claim_overrides) -> str:
    return tokens.mint(tokens.claims(ISSUER, RESOURCE, scope="mcp:read", **claim_overrides))


def test_check_accepts_a_valid_configuration_and_summarizes_it(cli, tmp_path):
    result = cli("check", write(tmp_path, "c.json", config()))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "configuration OK" in out
    assert RESOURCE in out
    assert "https://mcp.example.com/.well-known/oauth-protected-resource/mcp" in out
    assert ISSUER in out and "inline jwks, 5 key(s)" in out


def test_check_summarizes_fetched_key_sources(cli, tmp_path):
    cfg = config(issuers=[{"issuer": ISSUER, "cluster": "auth", "jwks_uri": "https://auth.example.com/jwks"}])
    result = cli("check", write(tmp_path, "c.json", cfg))
    assert result.returncode == 0, result.stderr
    assert 'fetched from https://auth.example.com/jwks through Envoy cluster "auth"' in result.stdout

    cfg = config(issuers=[{"issuer": ISSUER, "cluster": "auth"}])
    result = cli("check", write(tmp_path, "d.json", cfg))
    assert result.returncode == 0, result.stderr
    assert 'discovered through Envoy cluster "auth"' in result.stdout
    assert f"{ISSUER}/.well-known/openid-configuration" in result.stdout


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda c: c["resources"][0].update(authorization_servers=["https://other"]), "resources[0].authorization_servers[0]"),
        (lambda c: c.update(unknown=1), "unknown"),
        (lambda c: c["issuers"][0].update(algorithms=["HS256"]), "issuers[0].algorithms[0]"),
        (lambda c: c.update(scope_implies={"a": ["b"], "b": ["a"]}), "scope_implies.a"),
    ],
)
def test_check_names_the_field_at_fault_and_exits_1(cli, tmp_path, mutate, field):
    cfg = config()
    mutate(cfg)
    result = cli("check", write(tmp_path, "c.json", cfg))
    assert result.returncode == 1
    assert field in result.stderr, result.stderr


def test_check_exits_1_for_a_configuration_it_cannot_read(cli, tmp_path):
    result = cli("check", str(tmp_path / "missing.json"))
    assert result.returncode == 1, result
    assert "missing.json" in result.stderr


def test_check_refuses_text_that_is_not_json(cli, tmp_path):
    result = cli("check", write(tmp_path, "c.json", "{not json"))
    assert result.returncode == 1
    assert "syntax" in result.stderr


def test_explain_allows_a_valid_token_and_shows_the_forwarded_headers(cli, tmp_path):
    result = cli("explain", "--config", write(tmp_path, "c.json", config()), "--token", token())
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "decision: ALLOW" in out
    assert "x-mcp-subject: user-123" in out
    assert "authorization: removed" in out
    assert '"https://auth.example.com"' in out


@pytest.mark.parametrize(
    "make_token, args, status, reason",
    [
        (lambda: token(lifetime=-3600), [], "401", "token_expired"),
        (lambda: tokens.mint(tokens.claims(ISSUER, "https://elsewhere/mcp", scope="mcp:read")), [], "401", "audience_not_accepted"),
        (lambda: tokens.mint(tokens.claims("https://evil", RESOURCE, scope="mcp:read")), [], "401", "issuer_not_accepted"),
        (lambda: tokens.mint(tokens.claims(ISSUER, RESOURCE, scope="mcp:read"), corrupt_signature=True), [], "401", "bad_signature"),
        (lambda: tokens.mint(tokens.claims(ISSUER, RESOURCE, scope="mcp:read"), kid="nope"), [], "401", "unknown_kid"),
        (lambda: tokens.mint(tokens.claims(ISSUER, RESOURCE, scope="other")), [], "403", "insufficient_scope"),
        (lambda: "not-a-token", [], "401", "malformed_token"),
    ],
)
def test_explain_denies_with_the_status_challenge_and_reason(cli, tmp_path, make_token, args, status, reason):
    result = cli("explain", "--config", write(tmp_path, "c.json", config()), "--token", make_token(), *args)
    assert result.returncode == 1, result.stdout
    assert f"decision: {status} ({reason})" in result.stdout
    assert f"status: {status}" in result.stdout
    assert "WWW-Authenticate: Bearer" in result.stdout


def test_explain_uses_now_and_reads_the_token_from_a_file(cli, tmp_path):
    t = token()
    token_file = write(tmp_path, "t.txt", t + "\n")
    cfg = write(tmp_path, "c.json", config())
    later = str(tokens.now() + 10_000)
    assert cli("explain", "--config", cfg, "--token", "@" + token_file).returncode == 0
    expired = cli("explain", "--config", cfg, "--token", "@" + token_file, "--now", later)
    assert expired.returncode == 1
    assert "token_expired" in expired.stdout


def test_explain_takes_fetched_keys_from_a_jwks_file(cli, tmp_path):
    cfg = write(tmp_path, "c.json", config(issuers=[{"issuer": ISSUER, "cluster": "auth"}]))
    without = cli("explain", "--config", cfg, "--token", token())
    assert without.returncode == 1 and "--jwks" in without.stdout
    jwks = str(REPO / "tests" / "fixtures" / "jwks.json")
    assert cli("explain", "--config", cfg, "--token", token(), "--jwks", jwks).returncode == 0


def test_explain_decides_tool_calls_from_the_body(cli, tmp_path):
    resource = {
        "resource": RESOURCE,
        "authorization_servers": [ISSUER],
        "required_scopes": ["mcp:read"],
        "tool_scopes": {"delete_all": ["mcp:admin"]},
    }
    cfg = write(tmp_path, "c.json", config(resources=[resource]))
    call = lambda name: {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}}
    allowed = cli("explain", "--config", cfg, "--token", token(), "--body", write(tmp_path, "a.json", call("add")))
    assert allowed.returncode == 0, allowed.stdout
    denied = cli("explain", "--config", cfg, "--token", token(), "--body", write(tmp_path, "d.json", call("delete_all")))
    assert denied.returncode == 1
    assert 'scope="mcp:read mcp:admin"' in denied.stdout


def test_explain_passes_unprotected_paths_through(cli, tmp_path):
    result = cli("explain", "--config", write(tmp_path, "c.json", config()), "--token", token(), "--path", "/health")
    assert result.returncode == 0
    assert "PASS THROUGH" in result.stdout


def test_usage_errors_exit_2(cli):
    assert cli("explain", "--config").returncode == 2
    assert cli("frobnicate").returncode == 2


def test_explain_walks_the_checks_in_order_and_names_the_one_that_failed(cli, tmp_path):
    cfg = write(tmp_path, "c.json", config())
    allowed = cli("explain", "--config", cfg, "--token", token()).stdout
    assert "- signature: ok" in allowed and "- scopes (required" in allowed
    expired = cli("explain", "--config", cfg, "--token", token(lifetime=-3600)).stdout
    lines = [line.strip() for line in expired.splitlines() if line.strip().startswith("- ")]
    failed = [i for i, line in enumerate(lines) if "FAILED" in line]
    assert len(failed) == 1 and lines[failed[0]].startswith("- expiry (exp)"), lines
    assert lines[failed[0]].endswith("FAILED: token expired")
    assert all(line.endswith(": ok") for line in lines[: failed[0]]), lines
    assert all(line.endswith("not reached") for line in lines[failed[0] + 1:]), lines


def introspecting_config(endpoint: str | None = "https://auth.example.com/introspect", **introspection) -> dict:
    spec = {"client_id": "mcp-gateway", "client_secret_env": "MCP_INTROSPECTION_SECRET", **introspection}
    if endpoint:
        spec["endpoint"] = endpoint
    return config(issuers=[{"issuer": ISSUER, "cluster": "auth_server", "introspection": spec}])


def test_check_lists_the_introspection_endpoint_and_where_the_secret_comes_from(cli, tmp_path):
    result = cli("check", write(tmp_path, "c.json", introspecting_config()))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "introspection: https://auth.example.com/introspect through Envoy cluster \"auth_server\"" in out, out
    assert "secret from environment variable MCP_INTROSPECTION_SECRET of the wasm VM" in out, out
    assert "key source:  none: its tokens, JWTs included, are introspected" in out, out
    discovered = cli("check", write(tmp_path, "d.json", introspecting_config(endpoint=None)))
    assert "introspection_endpoint of the issuer's metadata" in discovered.stdout, discovered.stdout
    assert "https://auth.example.com/.well-known/oauth-authorization-server" in discovered.stdout


def test_check_never_prints_an_inline_client_secret(cli, tmp_path):
    cfg = introspecting_config(client_secret="hunter2-very-secret")
    del cfg["issuers"][0]["introspection"]["client_secret_env"]
    result = cli("check", write(tmp_path, "c.json", cfg))
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert "inline client_secret (for development)" in result.stdout


def test_check_names_the_field_of_a_bad_introspection_setting(cli, tmp_path):
    result = cli("check", write(tmp_path, "c.json", introspecting_config(max_in_flight=0)))
    assert result.returncode == 1
    assert "issuers[0].introspection.max_in_flight" in result.stderr


def test_explain_says_an_opaque_token_would_be_introspected_and_where(cli, tmp_path):
    path = write(tmp_path, "c.json", introspecting_config())
    result = cli("explain", "--config", path, "--token", "2YotnFZFEjr1zCsicMWpAA")
    assert result.returncode == 1
    assert "opaque token: would be introspected at https://auth.example.com/introspect" in result.stdout, result.stdout
    assert "2YotnFZFEjr1zCsicMWpAA" not in result.stdout, "the token is never echoed"


def legacy_config() -> dict:
    cfg = config(issuers=[{"issuer": ISSUER, "cluster": "auth_server"}])
    cfg["resources"][0]["origin_authorization_server_metadata"] = True
    return cfg


def test_check_prints_the_origin_paths_answered_for_clients_of_mcp_2025_03_26(cli, tmp_path):
    result = cli("check", write(tmp_path, "c.json", legacy_config()))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "authorization server metadata at resource origins (clients of MCP 2025-03-26):" in out, out
    assert "https://mcp.example.com/.well-known/oauth-authorization-server\n" in out, out
    assert "https://mcp.example.com/.well-known/openid-configuration\n" in out, out
    assert f'the metadata of "{ISSUER}", fetched through Envoy cluster "auth_server"' in out, out
    plain = cli("check", write(tmp_path, "p.json", config()))
    assert "resource origins" not in plain.stdout


def test_check_says_why_an_origin_cannot_serve_the_metadata(cli, tmp_path):
    cfg = config()
    cfg["resources"][0]["origin_authorization_server_metadata"] = True
    result = cli("check", write(tmp_path, "c.json", cfg))
    assert result.returncode == 1
    assert "resources[0].origin_authorization_server_metadata" in result.stderr, result.stderr
    assert "no cluster to fetch its metadata through" in result.stderr, result.stderr


def test_explain_says_the_origin_answers_the_authorization_server_metadata(cli, tmp_path):
    path = write(tmp_path, "c.json", legacy_config())
    result = cli("explain", "--config", path, "--path", "/.well-known/oauth-authorization-server",
                 "--method", "GET", "--token", "x")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the origin answers its authorization server's metadata here" in result.stdout, result.stdout
    assert f'RFC 8414 metadata of "{ISSUER}" as fetched' in result.stdout, result.stdout
