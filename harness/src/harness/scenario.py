"""The plugin configurations and tokens the wire tests and the soak test share: two resources
(README, Configuration), one issuer with the fixture keys inline.

Resources are fictional https hosts: requests go to Envoy on 127.0.0.1, and the filter must
build every URL from its configuration, never from the request's Host. Test modules read this
as `import scenario` (tests/e2e/scenario.py re-exports it).
"""
from __future__ import annotations

import copy
from typing import Any

from . import tokens

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
