"""The plugin configurations and tokens the wire tests and the soak test share: two resources
(README, Configuration), one issuer with the fixture keys inline.

Resources are fictional https hosts: requests go to Envoy on 127.0.0.1, and the filter must
build every URL from its configuration, never from the request's Host. Test modules read this
as `import scenario` (tests/e2e/scenario.py re-exports it).
"""
from __future__ import annotations

import copy
import json
from typing import Any

from . import tokens
from .wire import Client, Reply

ISSUER = "https://auth.example.com"

MCP = "https://mcp.example.com/mcp"
MCP_PATH = "/mcp"
MCP_METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"
MCP_METADATA_URL = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
MCP_REQUIRED_SCOPE = "mcp:read"

TOOLS = "https://other.example.com/tools"
TOOLS_PATH = "/tools"
TOOLS_METADATA_PATH = "/.well-known/oauth-protected-resource/tools"
TOOLS_METADATA_URL = "https://other.example.com/.well-known/oauth-protected-resource/tools"

ROOT_METADATA_PATH = "/.well-known/oauth-protected-resource"
SUBJECT_HEADER = "x-mcp-subject"

MCP_RESOURCE = {
    "resource": MCP,
    "authorization_servers": [ISSUER],
    "scopes_supported": ["mcp:read", "mcp:write"],
    "required_scopes": [MCP_REQUIRED_SCOPE],
    "resource_name": "Example MCP",
}
TOOLS_RESOURCE = {"resource": TOOLS, "authorization_servers": [ISSUER]}

#: The metadata documents the filter must serve (RFC 9728 §2), exactly.
MCP_METADATA = {
    "resource": MCP,
    "authorization_servers": [ISSUER],
    "bearer_methods_supported": ["header"],
    "scopes_supported": ["mcp:read", "mcp:write"],
    "resource_name": "Example MCP",
}
TOOLS_METADATA = {"resource": TOOLS, "authorization_servers": [ISSUER], "bearer_methods_supported": ["header"]}


def plugin_config(**top_level: Any) -> dict:
    """Two resources (mcp.example.com/mcp with required scope mcp:read, other.example.com/tools
    without), one issuer with the fixture JWKS inline, x-mcp-subject from sub; `top_level`
    adds or overrides top-level fields."""
    config = {
        "resources": [copy.deepcopy(MCP_RESOURCE), copy.deepcopy(TOOLS_RESOURCE)],
        "issuers": [{"issuer": ISSUER, "jwks": tokens.fixture_jwks()}],
        "claims_to_headers": {SUBJECT_HEADER: "sub"},
    }
    config.update(top_level)
    return config


def single_resource_config(**resource_fields: Any) -> dict:
    """Only the mcp.example.com/mcp resource (with `resource_fields` added)."""
    config = plugin_config()
    config["resources"] = [{**copy.deepcopy(MCP_RESOURCE), **resource_fields}]
    return config


def claims(audience: str | list[str] = MCP, *, scope: str | None = MCP_REQUIRED_SCOPE, **kwargs: Any) -> dict:
    """Claims of a token the default configuration accepts for /mcp (override anything)."""
    kwargs.setdefault("issuer", ISSUER)
    return tokens.claims(kwargs.pop("issuer"), audience, scope=scope, **kwargs)


def token(audience: str | list[str] = MCP, *, key: str = "rsa-a", alg: str | None = None, **claim_kwargs: Any) -> str:
    """A valid token for /mcp (RS256, rsa-a, scope mcp:read) unless told otherwise."""
    return tokens.mint(claims(audience, **claim_kwargs), key=key, alg=alg)


# ------------------------------------------------------------------------------------------
# Paths (README, Which requests are checked)

#: Paths that reach /mcp (or /tools) for an upstream that percent-decodes (RFC 3986 §6.2.2.2:
#: `%6D` is `m`) or reads `\` as `/`, but does not resolve dot segments (the robustness test's
#: random paths found the class). Their plain spellings (`/mcp/../x`, the controls below) are
#: challenged, because "an upstream may not normalize" (README, Which requests are checked),
#: and the README promises 400 for `%2F` / `\` that could reach a protected path.
ENCODED_PREFIX_WITH_DOT_SEGMENTS = [
    "/mcp\\..\\x",
    "/tools\\%2E%2e\\x",
    "/mcp%2F..%2Fx",
    "/tools%2F%2E%2e%2Fx",
    "/%6Dcp/../x",
    "/%6d%63%70/../mcpx",
    "/%6Dcp/%2e%2e/x",
    "/%6Dcp//..//x",
    "/%6dcp/x/../../y",
    "/%74ools/../x",
    "/%6d%63%70%2F%2E%2e%2Fx",
]
PLAIN_PREFIX_WITH_DOT_SEGMENTS = ["/mcp/../x", "/mcp/../mcpx", "/mcp/%2e%2e/x", "/mcp/x/../../y", "/tools/../x"]


# ------------------------------------------------------------------------------------------
# MCP-aware authorization (README, MCP-aware authorization): per-tool and per-method scopes,
# the scope hierarchy, the JSON-RPC body checks

MAX_BODY_BYTES = 4096
#: The wasm filter option that lets it read a body while Envoy holds the headers.
HOLD_HEADERS = {"allow_on_headers_stop_iteration": True}

#: /mcp: required mcp:read; tools and methods that need more.
MCP_TOOL_SCOPES = {
    "delete_all": ["mcp:admin"],
    "write_file": ["mcp:write"],
    "read_notes": ["mcp:read"],  # the same as required: must not appear twice in a challenge
    "audit_log": ["mcp:read", "audit:view"],
}
MCP_METHOD_SCOPES = {"resources/read": ["files:read"], "prompts/get": ["prompts:read"]}
#: /tools: a method scope for every tools/call, plus a tool scope, to pin the order
#: required + method + tool (and no duplicates: deploy repeats the method's scope).
TOOLS_REQUIRED = ["base"]
TOOLS_METHOD_SCOPES = {"tools/call": ["tools:invoke"]}
TOOLS_TOOL_SCOPES = {"deploy": ["tools:invoke", "ops:deploy"]}
SCOPE_IMPLIES = {"mcp:admin": ["mcp:write"], "mcp:write": ["mcp:read"]}


def mcp_scopes_config(**top_level: Any) -> dict:
    """`plugin_config()` with tool and method scopes on both resources, `scope_implies` and a
    `max_body_bytes` of MAX_BODY_BYTES; `top_level` adds or overrides top-level fields."""
    config = plugin_config(scope_implies=copy.deepcopy(SCOPE_IMPLIES), max_body_bytes=MAX_BODY_BYTES)
    mcp, tools = config["resources"]
    mcp["scopes_supported"] = ["mcp:read", "mcp:write", "mcp:admin", "files:read", "prompts:read", "audit:view"]
    mcp["tool_scopes"] = copy.deepcopy(MCP_TOOL_SCOPES)
    mcp["method_scopes"] = copy.deepcopy(MCP_METHOD_SCOPES)
    tools["required_scopes"] = list(TOOLS_REQUIRED)
    tools["method_scopes"] = copy.deepcopy(TOOLS_METHOD_SCOPES)
    tools["tool_scopes"] = copy.deepcopy(TOOLS_TOOL_SCOPES)
    config.update(top_level)
    return config


def rpc(method: str, params: dict | None = None, id: int | None = 1) -> dict:
    message: dict = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        message["id"] = id
    if params is not None:
        message["params"] = params
    return message


def tool_call(tool: str, id: int = 1) -> dict:
    return rpc("tools/call", {"name": tool, "arguments": {"path": "/tmp/x", "text": "hello"}}, id)


def read_resource(uri: str = "file:///notes/a.txt", id: int = 1) -> dict:
    return rpc("resources/read", {"uri": uri}, id)


def body_of(message) -> str:
    return json.dumps(message, separators=(",", ":"))


def mcp_token(scope: str | None) -> str:
    return token(scope=scope)


def tools_token(scope: str | None) -> str:
    return token(TOOLS, scope=scope)


JSON_RPC_HEADERS = [("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")]


def post(client: Client, body, *, token: str | None, path: str = MCP_PATH, headers=()) -> Reply:
    """A JSON-RPC POST (`body`: a message, or the exact text) with `Client.request`."""
    text = body if isinstance(body, (str, bytes)) else body_of(body)
    return client.request("POST", path, token=token, headers=[*JSON_RPC_HEADERS, *headers], body=text)


def raw_post(client: Client, *, token: str | None, path: str = MCP_PATH, headers=(), timeout: float = 5.0,
             **sending: Any) -> Reply:
    """A JSON-RPC POST written by hand (`Client.raw_request`): `chunks=` (chunked, `delay`
    apart; stops sending once answered) or `content_length=` (headers announcing a body never
    sent)."""
    return client.raw_request("POST", path, token=token, headers=[*JSON_RPC_HEADERS, *headers], timeout=timeout,
                              **sending)


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]
