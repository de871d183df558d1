"""The audit trail on the wire (README, "Audit trail in the access log"): the filter sets
filter state `mcp_oauth.outcome`, `subject`, `client_id`, `issuer`, `scopes` and `tool`, and a
real Envoy prints them in its access log with `%FILTER_STATE(wasm.mcp_oauth.NAME:PLAIN)%`,
exactly the format the README shows. Values from a token never break the log line."""
from __future__ import annotations

import json
import time

import pytest

import expect
import scenario
from harness import Client, Envoy
from scenario import HOLD_HEADERS, MCP_PATH, mcp_scopes_config, post, tool_call

FIELDS = ["outcome", "subject", "client_id", "issuer", "scopes", "tool"]
# The access-log format of README, "Audit trail in the access log" (JSON lines).
LOG_FORMAT = {name: f"%FILTER_STATE(wasm.mcp_oauth.{name}:PLAIN)%" for name in FIELDS}
LOG_FORMAT.update({"test_id": "%REQ(X-TEST-ID)%", "status": "%RESPONSE_CODE%"})


@pytest.fixture(scope="module")
def logged(upstream, wasm_path, tmp_path_factory):
    """An Envoy (concurrency 2) with the per-tool configuration and a JSON access log."""
    path = tmp_path_factory.mktemp("access-log") / "access.log"
    # Envoy flushes access-log files every 10 s by default: every 100 ms here.
    envoy = Envoy(mcp_scopes_config(), upstream.port, wasm_path=wasm_path, wasm_config_extra=HOLD_HEADERS,
                  extra_args=["--file-flush-interval-msec", "100"])
    envoy.http_connection_manager()["access_log"] = [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": {"json_format": LOG_FORMAT},
        },
    }]
    with envoy:
        client = Client(envoy.port, upstream)
        client.envoy = envoy
        yield client, path


def _line(path, test_id: str) -> dict:
    """The access-log line of the request tagged `test_id` (Envoy writes it at the stream's end,
    flushed every 100 ms)."""
    for _ in range(60):
        if path.exists():
            for raw in path.read_text().splitlines():
                entry = json.loads(raw)
                if entry.get("test_id") == test_id:
                    return entry
        time.sleep(0.1)
    raise AssertionError(f"no access-log line for {test_id}: {path.read_text() if path.exists() else '(no file)'}")


def _token(scope: str, **claims) -> str:
    subject = claims.pop("sub", "user-123")
    return scenario.token(scope=scope, subject=subject, **claims)


def test_an_allowed_tool_call_logs_who_called_which_tool(logged):
    client, path = logged
    token = _token("mcp:read", client_id="vscode-mcp", sub="alice@example.com")
    reply = post(client, tool_call("echo"), token=token)
    expect.forwarded_once(reply)
    line = _line(path, reply.test_id)
    assert line["outcome"] == "allowed"
    assert line["subject"] == "alice@example.com"
    assert line["client_id"] == "vscode-mcp"
    assert line["issuer"] == scenario.ISSUER
    assert line["scopes"] == "mcp:read"
    assert line["tool"] == "echo"
    assert line["status"] == 200


def test_a_refused_tool_call_still_names_the_verified_caller(logged):
    client, path = logged
    token = _token("mcp:read", azp="claude-desktop", sub="bob")
    reply = post(client, tool_call("delete_all"), token=token)
    assert reply.status == 403, reply.describe()
    line = _line(path, reply.test_id)
    assert (line["outcome"], line["subject"], line["client_id"], line["tool"]) == (
        "insufficient_scope", "bob", "claude-desktop", "delete_all")


@pytest.mark.parametrize("claims, outcome", [
    ({"exp": int(time.time()) - 3600}, "token_expired"),
    ({"aud": "https://other.example.com/mcp"}, "audience_not_accepted"),
], ids=["expired", "other-audience"])
def test_an_unverified_token_names_nobody(logged, claims, outcome):
    client, path = logged
    reply = client.get(MCP_PATH, token=_token("mcp:read", sub="mallory", **claims))
    assert reply.status == 401, reply.describe()
    line = _line(path, reply.test_id)
    assert line["outcome"] == outcome
    assert all(line[name] is None for name in ["subject", "client_id", "issuer", "scopes", "tool"]), line


def test_no_token_logs_only_the_outcome(logged):
    client, path = logged
    reply = client.get(MCP_PATH)
    line = _line(path, reply.test_id)
    assert line["outcome"] == "missing_token"
    assert line["subject"] is None


def test_a_claim_with_line_breaks_stays_on_one_log_line(logged):
    client, path = logged
    token = _token("mcp:read", sub='eve\n{"outcome":"allowed"}\r\n', client_id="a\\b")
    reply = post(client, tool_call("echo"), token=token)
    expect.forwarded_once(reply)
    line = _line(path, reply.test_id)
    assert "\n" not in line["subject"] and "\r" not in line["subject"]
    assert line["subject"].startswith("eve\\u000a")
    assert line["client_id"] == "a\\u005cb"
    text = path.read_text()
    assert all(raw.startswith("{") for raw in text.splitlines()), text
