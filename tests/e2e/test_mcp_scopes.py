"""Per-tool and per-method scopes, the scope hierarchy, and the JSON-RPC body checks (README,
MCP-aware authorization), on the wire: the real .wasm in a real Envoy (concurrency 2), judged by what the client gets
back and by what the echo upstream received (by `x-test-id`).

Most tests run on an Envoy with `allow_on_headers_stop_iteration: true` on the wasm filter: the
filter then holds the headers while it reads the body, and the upstream must see nothing of a
denied request. One class runs on an Envoy without it and `hold_headers_for_body: false`, where
the filter lets the headers go first and still stops a denied request's body.
"""
from __future__ import annotations

import concurrent.futures
import gzip
import json
import time

import pytest

import expect
import scenario
from expect import forwarded_with_body, insufficient_scope, invalid_request, nothing_upstream, settled_upstream, too_large
from harness import Client, h2c, tokens
from scenario import (HOLD_HEADERS, MAX_BODY_BYTES, MCP_METADATA_URL, MCP_PATH, SUBJECT_HEADER, TOOLS_PATH, body_of,
                      chunks_of, mcp_scopes_config, mcp_token, post, raw_post, read_resource, rpc, tool_call, tools_token)

TOOLS_METADATA_URL = scenario.TOOLS_METADATA_URL


# ------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def gw(envoys) -> Client:
    """The Envoy with allow_on_headers_stop_iteration (concurrency 2)."""
    return envoys.client(mcp_scopes_config(), wasm_config_extra=HOLD_HEADERS)


@pytest.fixture
def gw_envoy(envoys):
    return envoys.get(mcp_scopes_config(), wasm_config_extra=HOLD_HEADERS)


# ------------------------------------------------------------------------------------------
# tools/call by tool name


ALLOWED_TOOL_CALLS = {
    # token scopes, tool
    "unconfigured-tool-needs-required-only": ("mcp:read", "echo"),
    "tool-scope-equal-to-required": ("mcp:read", "read_notes"),
    "write-tool-with-write": ("mcp:write", "write_file"),
    "admin-tool-with-admin": ("mcp:admin", "delete_all"),
    "tool-with-two-scopes": ("mcp:read audit:view", "audit_log"),
    "extra-scopes-are-fine": ("mcp:read mcp:write other", "write_file"),
}


@pytest.mark.parametrize("scopes, tool", ALLOWED_TOOL_CALLS.values(), ids=ALLOWED_TOOL_CALLS.keys())
def test_allowed_tool_call_reaches_the_upstream_with_its_body(gw, scopes, tool):
    body = body_of(tool_call(tool))
    reply = post(gw, body, token=mcp_token(scopes))
    forwarded_with_body(reply, body)


DENIED_TOOL_CALLS = {
    # token scopes, tool, scope param of the 403 (required + tool, no duplicates)
    "write-tool-with-read": ("mcp:read", "write_file", "mcp:read mcp:write"),
    "admin-tool-with-read": ("mcp:read", "delete_all", "mcp:read mcp:admin"),
    "admin-tool-with-write": ("mcp:write", "delete_all", "mcp:read mcp:admin"),
    "tool-with-two-scopes-lacking-one": ("mcp:read", "audit_log", "mcp:read audit:view"),
    "tool-scope-only-without-required": ("audit:view", "audit_log", "mcp:read audit:view"),
    "unconfigured-tool-without-required": ("other", "echo", "mcp:read"),
}


@pytest.mark.parametrize("scopes, tool, challenge_scope", DENIED_TOOL_CALLS.values(), ids=DENIED_TOOL_CALLS.keys())
def test_denied_tool_call_gets_403_with_every_scope_and_upstream_sees_nothing(gw, scopes, tool, challenge_scope):
    reply = post(gw, tool_call(tool), token=mcp_token(scopes))
    insufficient_scope(reply, challenge_scope)
    nothing_upstream(gw, reply)


def test_order_is_required_then_method_then_tool_without_duplicates(gw):
    # /tools: required "base", every tools/call needs "tools:invoke", deploy needs
    # "tools:invoke ops:deploy" (the method's scope repeated).
    reply = post(gw, tool_call("deploy"), token=tools_token("base"), path=TOOLS_PATH)
    insufficient_scope(reply, "base tools:invoke ops:deploy", TOOLS_METADATA_URL)
    nothing_upstream(gw, reply)

    reply = post(gw, tool_call("deploy"), token=tools_token("base tools:invoke"), path=TOOLS_PATH)
    insufficient_scope(reply, "base tools:invoke ops:deploy", TOOLS_METADATA_URL)
    nothing_upstream(gw, reply)

    # Another tool still needs the method scope.
    reply = post(gw, tool_call("status"), token=tools_token("base"), path=TOOLS_PATH)
    insufficient_scope(reply, "base tools:invoke", TOOLS_METADATA_URL)
    nothing_upstream(gw, reply)

    body = body_of(tool_call("deploy"))
    forwarded_with_body(post(gw, body, token=tools_token("ops:deploy tools:invoke base"), path=TOOLS_PATH), body)
    body = body_of(tool_call("status"))
    forwarded_with_body(post(gw, body, token=tools_token("base tools:invoke"), path=TOOLS_PATH), body)
    # Methods without configured scopes need the required scopes only.
    body = body_of(rpc("tools/list"))
    forwarded_with_body(post(gw, body, token=tools_token("base"), path=TOOLS_PATH), body)


# ------------------------------------------------------------------------------------------
# method_scopes, batches, JSON-RPC responses


def test_method_scopes(gw):
    reply = post(gw, read_resource(), token=mcp_token("mcp:read"))
    insufficient_scope(reply, "mcp:read files:read")
    nothing_upstream(gw, reply)

    reply = post(gw, rpc("prompts/get", {"name": "summarize"}), token=mcp_token("mcp:read files:read"))
    insufficient_scope(reply, "mcp:read prompts:read")
    nothing_upstream(gw, reply)

    body = body_of(read_resource())
    forwarded_with_body(post(gw, body, token=mcp_token("mcp:read files:read")), body)
    body = body_of(rpc("prompts/get", {"name": "summarize"}))
    forwarded_with_body(post(gw, body, token=mcp_token("prompts:read mcp:read")), body)
    # Methods not in method_scopes: required only.
    for message in (rpc("tools/list"), rpc("initialize", {"protocolVersion": "2026-07-28"}), rpc("ping")):
        body = body_of(message)
        forwarded_with_body(post(gw, body, token=mcp_token("mcp:read")), body)


def test_method_scope_without_the_required_scope_names_both(gw):
    reply = post(gw, read_resource(), token=mcp_token("files:read"))
    insufficient_scope(reply, "mcp:read files:read")
    nothing_upstream(gw, reply)


def test_notification_and_jsonrpc_response_need_only_the_required_scopes(gw):
    for message in (
        rpc("notifications/initialized", id=None),
        {"jsonrpc": "2.0", "id": 7, "result": {"content": []}},
        {"jsonrpc": "2.0", "id": 8, "error": {"code": -1, "message": "declined"}},
    ):
        body = body_of(message)
        forwarded_with_body(post(gw, body, token=mcp_token("mcp:read")), body)
    # ... and still the required ones.
    reply = post(gw, {"jsonrpc": "2.0", "id": 7, "result": {}}, token=mcp_token("other"))
    insufficient_scope(reply, "mcp:read")
    nothing_upstream(gw, reply)


def test_batch_with_one_forbidden_member_gets_403_with_the_union(gw):
    batch = [rpc("tools/list", id=1), read_resource(id=2), tool_call("echo", id=3), tool_call("delete_all", id=4)]
    reply = post(gw, batch, token=mcp_token("mcp:read files:read"))
    insufficient_scope(reply, "mcp:read files:read mcp:admin")
    nothing_upstream(gw, reply)

    # Two members lacking different scopes: one challenge with the whole set.
    batch = [tool_call("write_file", id=1), read_resource(id=2)]
    reply = post(gw, batch, token=mcp_token("mcp:read"))
    insufficient_scope(reply, "mcp:read mcp:write files:read")
    nothing_upstream(gw, reply)


def test_batch_all_allowed_is_forwarded_whole(gw):
    batch = [
        rpc("tools/list", id=1),
        read_resource(id=2),
        tool_call("write_file", id=3),
        tool_call("echo", id=4),
        rpc("notifications/progress", {"progressToken": 1, "progress": 1}, id=None),
        {"jsonrpc": "2.0", "id": 99, "result": {}},
    ]
    body = body_of(batch)
    forwarded_with_body(post(gw, body, token=mcp_token("mcp:write files:read")), body)


# ------------------------------------------------------------------------------------------
# scope_implies


HIERARCHY_CASES = {
    # token scopes, body, None when allowed else the 403's scope param
    "admin-passes-required-read-via-two-steps": ("mcp:admin", rpc("tools/list"), None),
    "write-passes-required-read": ("mcp:write", rpc("tools/list"), None),
    "admin-passes-write-tool": ("mcp:admin", tool_call("write_file"), None),
    "admin-passes-read-tool": ("mcp:admin", tool_call("read_notes"), None),
    "write-passes-read-tool": ("mcp:write", tool_call("read_notes"), None),
    "write-does-not-imply-admin": ("mcp:write", tool_call("delete_all"), "mcp:read mcp:admin"),
    "read-does-not-imply-write": ("mcp:read", tool_call("write_file"), "mcp:read mcp:write"),
    "admin-does-not-imply-unrelated": ("mcp:admin", read_resource(), "mcp:read files:read"),
    "admin-plus-files-read": ("mcp:admin files:read", read_resource(), None),
    "admin-batch-of-everything-but-audit": (
        "mcp:admin",
        [tool_call("delete_all", 1), tool_call("write_file", 2), tool_call("audit_log", 3)],
        "mcp:read mcp:admin mcp:write audit:view",
    ),
}


@pytest.mark.parametrize("scopes, message, challenge_scope", HIERARCHY_CASES.values(), ids=HIERARCHY_CASES.keys())
def test_scope_hierarchy_applies_to_tool_and_required_scopes(gw, scopes, message, challenge_scope):
    body = body_of(message)
    reply = post(gw, body, token=mcp_token(scopes))
    if challenge_scope is None:
        forwarded_with_body(reply, body)
    else:
        insufficient_scope(reply, challenge_scope)
        nothing_upstream(gw, reply)


def test_scope_hierarchy_applies_to_get_and_scp_arrays(gw):
    # GET needs required_scopes only, and mcp:admin implies mcp:read (two steps).
    reply = gw.get(MCP_PATH, token=mcp_token("mcp:admin"))
    expect.forwarded_once(reply)
    # scp arrays are expanded too.
    token = scenario.token(scope=None, scp=["mcp:admin"])
    body = body_of(tool_call("write_file"))
    forwarded_with_body(post(gw, body, token=token), body)


# ------------------------------------------------------------------------------------------
# Mcp-Method / Mcp-Name


MISMATCHES = {
    "method-differs": ([("Mcp-Method", "tools/list")], tool_call("echo")),
    "name-differs": ([("Mcp-Name", "delete_all")], tool_call("echo")),
    "both-set-name-differs": ([("Mcp-Method", "tools/call"), ("Mcp-Name", "echo2")], tool_call("echo")),
    "uri-differs": ([("Mcp-Name", "file:///other")], read_resource("file:///notes/a.txt")),
    "name-on-call-without-name": ([("Mcp-Name", "echo")], rpc("tools/list")),
    "batch-member-differs": ([("Mcp-Method", "tools/call")], [tool_call("echo", 1), rpc("tools/list", id=2)]),
    "batch-member-name-differs": ([("Mcp-Name", "echo")], [tool_call("echo", 1), tool_call("write_file", 2)]),
    "method-header-on-a-response-only-body": ([("Mcp-Method", "tools/call")], {"jsonrpc": "2.0", "id": 1, "result": {}}),
    # MCP 2026-07-28 base64 wrapper: decoded, then compared; a broken wrapper matches nothing.
    "wrapped-name-differs": ([("Mcp-Name", "=?base64?ZGVsZXRlX2FsbA==?=")], tool_call("echo")),
    "wrapped-name-not-base64": ([("Mcp-Name", "=?base64?!!?=")], tool_call("echo")),
    "wrapped-name-not-utf8": ([("Mcp-Name", "=?base64?//4=?=")], tool_call("echo")),
}


@pytest.mark.parametrize("headers, message", MISMATCHES.values(), ids=MISMATCHES.keys())
def test_mcp_headers_disagreeing_with_the_body_get_400(gw, headers, message):
    # The token has every scope: the 400 is about the headers, not about scopes.
    token = mcp_token("mcp:admin files:read prompts:read audit:view")
    reply = post(gw, message, token=token, headers=headers)
    invalid_request(reply)
    nothing_upstream(gw, reply)


AGREEMENTS = {
    "method-and-name": ([("Mcp-Method", "tools/call"), ("Mcp-Name", "write_file")], tool_call("write_file")),
    "method-only": ([("Mcp-Method", "tools/call")], tool_call("echo")),
    "name-only": ([("Mcp-Name", "echo")], tool_call("echo")),
    "uri": ([("Mcp-Method", "resources/read"), ("Mcp-Name", "file:///notes/a.txt")], read_resource("file:///notes/a.txt")),
    "tools-list": ([("Mcp-Method", "tools/list")], rpc("tools/list")),
    "batch-same-tool": ([("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")], [tool_call("echo", 1), tool_call("echo", 2)]),
    # A name that is not plain ASCII travels base64-wrapped (MCP 2026-07-28).
    "wrapped-non-ascii-name": ([("Mcp-Method", "tools/call"), ("Mcp-Name", "=?base64?Y2Fmw6k=?=")], tool_call("café")),
    "wrapped-ascii-name": ([("Mcp-Name", "=?base64?ZWNobw==?=")], tool_call("echo")),
}


@pytest.mark.parametrize("headers, message", AGREEMENTS.values(), ids=AGREEMENTS.keys())
def test_mcp_headers_agreeing_with_the_body_pass(gw, headers, message):
    body = body_of(message)
    reply = post(gw, body, token=mcp_token("mcp:write files:read"), headers=headers)
    seen = forwarded_with_body(reply, body)
    for name, value in headers:
        assert seen.header_values(name) == [value], seen.headers


def test_agreeing_headers_do_not_lift_a_scope_denial(gw):
    reply = post(
        gw, tool_call("delete_all"), token=mcp_token("mcp:read"),
        headers=[("Mcp-Method", "tools/call"), ("Mcp-Name", "delete_all")],
    )
    insufficient_scope(reply, "mcp:read mcp:admin")
    nothing_upstream(gw, reply)


# ------------------------------------------------------------------------------------------
# Bodies refused: too large, not JSON-RPC


def test_body_over_max_body_bytes_gets_413(gw):
    message = tool_call("echo")
    message["params"]["arguments"]["text"] = "x" * (MAX_BODY_BYTES + 100)
    reply = post(gw, message, token=mcp_token("mcp:read"))
    too_large(reply)
    nothing_upstream(gw, reply)


def test_body_just_under_max_body_bytes_is_checked_and_forwarded(gw):
    message = tool_call("echo")
    base = len(body_of(message))
    message["params"]["arguments"]["text"] += "y" * (MAX_BODY_BYTES - base - 10)
    body = body_of(message)
    assert MAX_BODY_BYTES - 20 < len(body) <= MAX_BODY_BYTES
    forwarded_with_body(post(gw, body, token=mcp_token("mcp:read")), body)
    # The same size for a forbidden tool is still decided on the body.
    message["params"]["name"] = "delete_all"
    reply = post(gw, message, token=mcp_token("mcp:read"))
    insufficient_scope(reply, "mcp:read mcp:admin")
    nothing_upstream(gw, reply)


def test_default_max_body_bytes_body_of_exactly_one_mib_passes_and_larger_gets_the_json_413(envoys):
    # max_body_bytes defaults to 1048576 (README, Configuration). Envoy's own default buffer limit is also
    # 1 MiB: the filter's JSON 413 must still be what a client gets for a larger body.
    config = mcp_scopes_config()
    del config["max_body_bytes"]
    client = envoys.client(config, wasm_config_extra=HOLD_HEADERS)
    message = tool_call("echo")
    message["params"]["arguments"]["text"] += "y" * (1048576 - len(body_of(message)))
    body = body_of(message)
    assert len(body) == 1048576
    forwarded_with_body(post(client, body, token=mcp_token("mcp:read")), body)
    message["params"]["arguments"]["text"] += "y"
    reply = post(client, message, token=mcp_token("mcp:read"))
    too_large(reply)
    nothing_upstream(client, reply)


MALFORMED = {
    "not-json": "this is not json",
    "truncated-json": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"',
    "empty-batch": "[]",
    "no-method-no-result": '{"id":1}',
    "number": "42",
    "method-not-a-string": '{"jsonrpc":"2.0","id":1,"method":7}',
    "batch-with-non-object": '[{"jsonrpc":"2.0","id":1,"method":"ping"},1]',
    "empty-body": "",
    # A tool call must name its tool as a string, or its tool scopes could be skipped.
    "tool-name-an-array": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_all"]}}',
    "tool-call-without-name": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_body_that_is_not_json_rpc_gets_400(gw, body):
    reply = post(gw, body, token=mcp_token("mcp:admin files:read prompts:read audit:view"))
    invalid_request(reply)
    nothing_upstream(gw, reply)


# ------------------------------------------------------------------------------------------
# Bodies in many pieces (several on_http_request_body calls)


def test_chunked_forbidden_call_gets_403_and_upstream_sees_nothing(gw):
    body = body_of(tool_call("delete_all")).encode()
    reply = raw_post(gw, token=mcp_token("mcp:read"), chunks=chunks_of(body, 10), delay=0.02)
    assert len(chunks_of(body, 10)) >= 8
    assert reply.unsent_chunks == 0, "the filter answered before the body was complete"
    insufficient_scope(reply, "mcp:read mcp:admin")
    nothing_upstream(gw, reply)


def test_chunked_allowed_call_reaches_the_upstream_whole(gw):
    body = body_of(tool_call("write_file")).encode()
    reply = raw_post(gw, token=mcp_token("mcp:write"), chunks=chunks_of(body, 10), delay=0.02)
    assert reply.status == 200, reply.describe()
    seen = gw.upstream.requests_with_test_id(reply.test_id)
    assert len(seen) == 1, seen
    assert seen[0].body == body
    # The echo upstream's answer is what it received.
    assert reply.json()["body"] == body.decode()


def test_chunked_batch_split_inside_strings_is_decided_on_the_whole(gw):
    batch = [tool_call("echo", 1), read_resource(id=2), tool_call("delete_all", 3)]
    body = body_of(batch).encode()
    reply = raw_post(gw, token=mcp_token("mcp:write files:read"), chunks=chunks_of(body, 7), delay=0.01)
    insufficient_scope(reply, "mcp:read files:read mcp:admin")
    nothing_upstream(gw, reply)


def test_chunked_oversized_body_gets_413(gw):
    message = tool_call("echo")
    message["params"]["arguments"]["text"] = "z" * (2 * MAX_BODY_BYTES)
    body = body_of(message).encode()
    reply = raw_post(gw, token=mcp_token("mcp:admin"), chunks=chunks_of(body, 512), delay=0.01)
    too_large(reply)
    nothing_upstream(gw, reply)


def test_chunked_header_mismatch_gets_400(gw):
    body = body_of(tool_call("echo")).encode()
    reply = raw_post(gw, token=mcp_token("mcp:read"), chunks=chunks_of(body, 10), headers=[("Mcp-Name", "other")])
    invalid_request(reply)
    nothing_upstream(gw, reply)


# ------------------------------------------------------------------------------------------
# What the filter decides on is what the MCP server will read


def test_escaped_tool_name_is_decoded_before_matching(gw):
    body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete\\u005fall","arguments":{}}}'
    assert json.loads(body)["params"]["name"] == "delete_all"
    reply = post(gw, body, token=mcp_token("mcp:read"))
    insufficient_scope(reply, "mcp:read mcp:admin")
    nothing_upstream(gw, reply)


def test_duplicate_name_key_is_not_a_way_around_the_tool_scope(gw):
    # Most JSON parsers (Python, JavaScript, serde) keep the last duplicate: the server would
    # run delete_all, so the filter must not let it through as "echo".
    body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_all","arguments":{}}}'
    reply = post(gw, body, token=mcp_token("mcp:read"))
    assert reply.status in (400, 403), reply.describe()
    nothing_upstream(gw, reply)


def test_compressed_body_is_refused_not_let_through_unchecked(gw):
    payload = gzip.compress(body_of(tool_call("delete_all")).encode())
    reply = gw.request(
        "POST", MCP_PATH, token=mcp_token("mcp:read"),
        headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip")], body=payload,
    )
    invalid_request(reply)
    nothing_upstream(gw, reply)


@pytest.mark.parametrize("path", ["/mcp/", "/mcp?session=1", "/mcp/sub/path?x=y"])
def test_paths_below_the_resource_are_inspected_too(gw, path):
    reply = post(gw, tool_call("delete_all"), token=mcp_token("mcp:read"), path=path)
    insufficient_scope(reply, "mcp:read mcp:admin")
    nothing_upstream(gw, reply)
    body = body_of(tool_call("write_file"))
    seen = forwarded_with_body(post(gw, body, token=mcp_token("mcp:write"), path=path), body)
    assert seen.path == path


def test_http2_bodies_are_inspected(gw):
    token = mcp_token("mcp:read")
    headers = [("authorization", f"Bearer {token}"), ("content-type", "application/json")]
    denied = body_of(tool_call("delete_all")).encode()
    reply = h2c.request(gw.port, "POST", MCP_PATH, headers, body=denied, timeout=5.0)
    assert reply.status == 403, reply
    nothing_upstream(gw, reply)
    allowed = body_of(tool_call("echo")).encode()
    reply = h2c.request(gw.port, "POST", MCP_PATH, headers, body=allowed, timeout=5.0)
    assert reply.status == 200, reply
    seen = gw.upstream.requests_with_test_id(reply.test_id)
    assert len(seen) == 1 and seen[0].body == allowed, seen


# ------------------------------------------------------------------------------------------
# The token is still checked at the headers


def test_bad_token_gets_401_without_waiting_for_the_body(gw):
    token = scenario.token(audience="https://elsewhere.example.com/mcp", scope="mcp:admin")
    # Headers announce a body that never comes: the 401 must not wait for it.
    reply = raw_post(gw, token=token, content_length=500)
    expect.challenge(
        reply,
        401,
        [("error", "invalid_token"), ("error_description", None), ("resource_metadata", MCP_METADATA_URL), ("scope", "mcp:read")],
    )
    assert reply.elapsed < 3.0, f"401 took {reply.elapsed:.2f}s"
    nothing_upstream(gw, reply)


def test_missing_token_gets_the_challenge_without_waiting_for_the_body(gw):
    reply = raw_post(gw, token=None, content_length=500)
    expect.challenge(reply, 401, [("resource_metadata", MCP_METADATA_URL), ("scope", "mcp:read")])
    assert reply.elapsed < 3.0, f"401 took {reply.elapsed:.2f}s"
    nothing_upstream(gw, reply)


def test_bad_token_with_a_body_is_401_not_a_body_error(gw):
    token = tokens.mint(scenario.claims(scope="mcp:admin"), corrupt_signature=True)
    reply = post(gw, "not json at all", token=token)
    assert reply.status == 401, reply.describe()
    assert reply.challenge().get("error") == "invalid_token"
    nothing_upstream(gw, reply)


# ------------------------------------------------------------------------------------------
# GET (SSE) and DELETE: required_scopes only


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_with_a_read_only_token_pass(gw, method):
    reply = gw.request(method, MCP_PATH, token=mcp_token("mcp:read"), headers=[("Accept", "text/event-stream"), ("Mcp-Session-Id", "s-1")])
    seen = expect.forwarded_once(reply)
    assert seen.method == method
    assert seen.header_values(SUBJECT_HEADER) == ["user-123"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_without_the_required_scope_get_403_naming_only_it(gw, method):
    reply = gw.request(method, MCP_PATH, token=mcp_token("files:read"))
    insufficient_scope(reply, "mcp:read")
    nothing_upstream(gw, reply)


# ------------------------------------------------------------------------------------------
# Counters


def test_counters_after_a_known_mix(gw, gw_envoy):
    before = gw_envoy.stats()
    read = mcp_token("mcp:read")
    statuses = [
        post(gw, tool_call("delete_all"), token=read).status,  # 403, tool delete_all
        post(gw, tool_call("delete_all"), token=mcp_token("mcp:write")).status,  # 403, tool delete_all
        post(gw, tool_call("write_file"), token=read).status,  # 403, tool write_file
        post(gw, read_resource(), token=read).status,  # 403, method only
        post(gw, [tool_call("echo", 1), tool_call("delete_all", 2)], token=read).status,  # 403, tool delete_all
        post(gw, tool_call("echo"), token=read).status,  # 200
        post(gw, "x" * (MAX_BODY_BYTES + 1), token=read).status,  # 413
        post(gw, "not json", token=read).status,  # 400 invalid body
        post(gw, "[]", token=read).status,  # 400 invalid body
        post(gw, tool_call("echo"), token=read, headers=[("Mcp-Method", "tools/list")]).status,  # 400 mismatch
    ]
    assert statuses == [403, 403, 403, 403, 403, 200, 413, 400, 400, 400]
    after = gw_envoy.stats()
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in set(after) | set(before)}
    expected = {
        "mcp_oauth_tool_denied_delete_all": 3,
        "mcp_oauth_tool_denied_write_file": 1,
        "mcp_oauth_requests_denied_insufficient_scope": 5,
        "mcp_oauth_requests_denied_body_too_large": 1,
        "mcp_oauth_requests_denied_invalid_body": 2,
        "mcp_oauth_requests_denied_mcp_header_mismatch": 1,
        "mcp_oauth_requests_allowed": 1,
    }
    got = {name: delta.get(name, 0) for name in expected}
    assert got == expected, {name: value for name, value in delta.items() if value}
    # A tool that was allowed, or that has no scopes of its own, has no denial counted.
    assert delta.get("mcp_oauth_tool_denied_echo", 0) == 0, delta


# ------------------------------------------------------------------------------------------
# Slow clients, with allow_on_headers_stop_iteration


class TestSlowClientsWithHeaderHold:
    """With allow_on_headers_stop_iteration the upstream sees nothing of a denied request, in
    whole or in part. A client that is slow to send its body (a mobile network, or on purpose)
    must not change that: neither for its own request nor, afterwards, for anybody else's.
    (Filters that guess whether the host delivers bodies while headers are held have probed
    for about a second; these clients pause 2 s.)"""

    WARM_UP = 12  # connections: with two workers, all on one worker has odds 2**-11

    def _client(self, envoys, skew: int) -> Client:
        # A distinct configuration, so a fresh Envoy that no other test has touched.
        envoy = envoys.get(mcp_scopes_config(clock_skew_seconds=skew), wasm_config_extra=HOLD_HEADERS)
        client = Client(envoy.port, envoys.upstream, timeout=5.0)
        client.envoy = envoy
        return client

    def _warm_up(self, client: Client) -> None:
        read = mcp_token("mcp:read")
        for i in range(self.WARM_UP):
            body = body_of(tool_call("echo", i))
            forwarded_with_body(post(client, body, token=read), body)

    @staticmethod
    def _stall(client: Client, count: int = 6, seconds: float = 2.0) -> None:
        """`count` connections at once (so both workers get some) send the headers of an allowed
        call with a Content-Length, then nothing for `seconds`, then give up."""
        read = mcp_token("mcp:read")

        def stall(_) -> None:
            try:
                client.raw_request("POST", MCP_PATH, token=read, headers=[("Content-Type", "application/json")],
                                   content_length=200, timeout=seconds)
            except TimeoutError:
                pass  # no answer while the body is missing: the stall it was meant to be

        with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(stall, range(count)))

    @staticmethod
    def _no_denied_call_leaks(client: Client, count: int = 20) -> None:
        read = mcp_token("mcp:read")
        leaked = []
        for i in range(count):
            reply = post(client, tool_call("delete_all", i), token=read)
            insufficient_scope(reply, "mcp:read mcp:admin")
            seen = settled_upstream(client, reply.test_id, settle=0.1)
            if seen:
                leaked.append(seen[0].to_json())
        time.sleep(0.3)
        assert not leaked, (
            f"{len(leaked)} of {count} denied calls reached the upstream (their headers); first: {leaked[0]}"
        )

    def test_slow_body_of_a_denied_call_never_reaches_the_upstream(self, envoys):
        client = self._client(envoys, 58)
        self._warm_up(client)
        # The headers, 2 s of silence, then the body.
        reply = client.raw_request("POST", MCP_PATH, token=mcp_token("mcp:read"), headers=[("Content-Type", "application/json")],
                                   body=body_of(tool_call("delete_all")), pause=2.0, timeout=8.0)
        insufficient_scope(reply, "mcp:read mcp:admin")
        nothing_upstream(client, reply)
        self._no_denied_call_leaks(client)

    def test_a_stalled_client_after_warm_up_does_not_downgrade_later_requests(self, envoys):
        client = self._client(envoys, 57)
        self._warm_up(client)
        self._stall(client)
        self._no_denied_call_leaks(client)

    def test_stalled_first_clients_on_a_fresh_envoy_do_not_downgrade_later_requests(self, envoys):
        # The stalled requests are the first body-inspected requests each worker sees: the
        # filter cannot tell yet whether the host delivers bodies while headers are held.
        # Whatever it concludes from them must not make every later denied call leak its
        # headers on an Envoy that does have allow_on_headers_stop_iteration.
        client = self._client(envoys, 56)
        self._stall(client)
        self._no_denied_call_leaks(client)


# ------------------------------------------------------------------------------------------
# Without allow_on_headers_stop_iteration


class TestWithoutHeaderHold:
    """Envoy without `allow_on_headers_stop_iteration` (Istio's WasmPlugin, Envoy Gateway):
    Envoy turns the filter's "stop" on the headers into StopAllIteration, so no body chunk
    reaches the filter while it holds them. With `hold_headers_for_body: false` the filter lets
    the headers go first and still checks the body before forwarding it. So the upstream MAY
    see the headers of a denied request (Envoy resets that upstream request when the filter
    answers 403): the assertions below are about the body only, which must never arrive."""

    @pytest.fixture
    def plain(self, envoys) -> Client:
        envoy = envoys.get(mcp_scopes_config(hold_headers_for_body=False))
        client = Client(envoy.port, envoys.upstream, timeout=5.0)
        client.envoy = envoy
        return client

    def _body_never_upstream(self, client: Client, reply, body: bytes) -> None:
        seen = settled_upstream(client, reply.test_id, settle=0.5)
        for request in seen:
            assert request.body == b"", f"upstream received body bytes of a denied request: {request.to_json()}"
            assert body not in request.body

    def test_allowed_and_denied_calls_decide_on_the_body_and_never_hang(self, plain):
        read = mcp_token("mcp:read")
        # Enough requests, each on a new connection, to reach both workers several times.
        for round_ in range(6):
            body = body_of(tool_call("echo", round_))
            started = time.monotonic()
            reply = post(plain, body, token=read)
            elapsed = time.monotonic() - started
            forwarded_with_body(reply, body)
            assert elapsed < 1.0, f"allowed call took {elapsed:.2f}s: headers go first, nothing waits"

            denied = body_of(tool_call("delete_all", round_))
            started = time.monotonic()
            reply = post(plain, denied, token=read)
            elapsed = time.monotonic() - started
            insufficient_scope(reply, "mcp:read mcp:admin")
            assert elapsed < 1.0, f"denied call took {elapsed:.2f}s"
            self._body_never_upstream(plain, reply, denied.encode())

    def test_batch_mismatch_malformed_and_oversized(self, plain):
        read = mcp_token("mcp:read")
        body = body_of([tool_call("echo", 1), tool_call("write_file", 2)])
        reply = post(plain, body, token=read)
        insufficient_scope(reply, "mcp:read mcp:write")
        self._body_never_upstream(plain, reply, body.encode())

        body = body_of(tool_call("echo"))
        reply = post(plain, body, token=read, headers=[("Mcp-Method", "tools/list")])
        invalid_request(reply)
        self._body_never_upstream(plain, reply, body.encode())

        reply = post(plain, "not json", token=read)
        invalid_request(reply)
        self._body_never_upstream(plain, reply, b"not json")

        big = "x" * (MAX_BODY_BYTES + 10)
        reply = post(plain, big, token=read)
        too_large(reply)
        self._body_never_upstream(plain, reply, big.encode())

        body = body_of([tool_call("echo", 1), tool_call("write_file", 2)])
        forwarded_with_body(post(plain, body, token=mcp_token("mcp:write")), body)

    def test_chunked_calls(self, plain):
        body = body_of(tool_call("delete_all")).encode()
        reply = raw_post(plain, token=mcp_token("mcp:read"), chunks=chunks_of(body, 10))
        insufficient_scope(reply, "mcp:read mcp:admin")
        self._body_never_upstream(plain, reply, body)

        body = body_of(tool_call("write_file")).encode()
        reply = raw_post(plain, token=mcp_token("mcp:admin"), chunks=chunks_of(body, 10))
        assert reply.status == 200, reply.describe()
        seen = plain.upstream.requests_with_test_id(reply.test_id)
        assert len(seen) == 1 and seen[0].body == body, seen

    def test_bad_token_is_refused_at_the_headers(self, plain):
        reply = raw_post(plain, token="abc", content_length=300)
        assert reply.status == 401, reply.describe()
        assert reply.elapsed < 3.0
        nothing_upstream(plain, reply)

    def test_concurrent_first_requests_do_not_hang(self, envoys):
        # A fresh Envoy (distinct configuration): nothing is learned, nothing waits.
        envoy = envoys.get(mcp_scopes_config(clock_skew_seconds=61, hold_headers_for_body=False))
        client = Client(envoy.port, envoys.upstream, timeout=5.0)
        read = mcp_token("mcp:read")

        def one(i: int):
            if i % 2:
                body = body_of(tool_call("delete_all", i))
            else:
                body = body_of(tool_call("echo", i))
            started = time.monotonic()
            return i, body, post(client, body, token=read), time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(one, range(8)))
        for i, body, reply, elapsed in results:
            assert elapsed < 4.5, f"request {i} took {elapsed:.2f}s"
            if i % 2:
                insufficient_scope(reply, "mcp:read mcp:admin")
                self._body_never_upstream(client, reply, body.encode())
            else:
                forwarded_with_body(reply, body)
