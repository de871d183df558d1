#!/usr/bin/env python3
"""The upstream MCP server for the e2e tests and the demo: the Python `mcp` SDK (2.x,
`MCPServer`, formerly FastMCP), streamable HTTP at /mcp, on 127.0.0.1.

    python peers/mcp_server.py [--port 0]
    python peers/mcp_server.py --port 0 --auth-issuer ISSUER [--jwks-uri URL] [--required-scope mcp:read ...]

Without `--auth-issuer` the server has no authentication of its own (Envoy + mcp-oauth-filter
sit in front). With it, the SDK's own resource-server mode is on: `AuthSettings` (Protected
Resource Metadata, 401/403 challenges) and a `TokenVerifier` that validates the authorization
server's JWT access tokens against its JWKS with PyJWT (signature, `iss`, `aud` = this server's
/mcp URL, `exp`). The differential test compares the two.

Tools: `add(a, b)`, `echo(text)`, `whoami()` (the `x-mcp-subject` header the filter sets from
the token's `sub`; in resource-server mode, the verified token's `sub`).

Once listening it prints one JSON line on stdout: {"ready": true, "port": N, "url": ".../mcp"}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time

import uvicorn
from mcp.server.mcpserver import Context, MCPServer


def build_server(args: argparse.Namespace, resource: str) -> MCPServer:
    options: dict = {}
    if args.auth_issuer:
        import jwt  # PyJWT
        from mcp.server.auth.provider import AccessToken
        from mcp.server.auth.settings import AuthSettings

        jwks_uri = args.jwks_uri or f"{args.auth_issuer}/jwks"
        jwks = jwt.PyJWKClient(jwks_uri, cache_keys=True, lifespan=300)

        class JwtVerifier:
            """RFC 9068 JWT access tokens: signature by the issuer's JWKS, iss, aud, exp."""

            async def verify_token(self, token: str) -> AccessToken | None:
                try:
                    key = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
                    claims = jwt.decode(
                        token,
                        key.key,
                        algorithms=["RS256", "ES256"],
                        audience=resource,
                        issuer=args.auth_issuer,
                        options={"require": ["exp", "iss", "aud"]},
                        leeway=60,
                    )
                except Exception as err:  # noqa: BLE001 - any failure means "not a valid token"
                    print(f"[mcp-server] token refused: {err}", file=sys.stderr)
                    return None
                return AccessToken(
                    token=token,
                    client_id=str(claims.get("client_id", "")),
                    scopes=str(claims.get("scope", "")).split(),
                    expires_at=int(claims["exp"]),
                    resource=resource,
                    subject=claims.get("sub"),
                    claims=claims,
                )

        options["token_verifier"] = JwtVerifier()
        options["auth"] = AuthSettings(
            issuer_url=args.auth_issuer,
            resource_server_url=resource,
            required_scopes=args.required_scope or None,
            validate_token_resource=True,
        )

    server = MCPServer("mcp-oauth-filter test upstream", version="1.0.0", **options)

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def whoami(ctx: Context) -> str:
        """The caller's subject: the x-mcp-subject header set by the filter from the token's sub."""
        headers = ctx.headers or {}
        subject = headers.get("x-mcp-subject")
        if subject:
            return subject
        if args.auth_issuer:
            from mcp.server.auth.middleware.auth_context import get_access_token

            token = get_access_token()
            if token is not None and token.subject:
                return token.subject
        return "anonymous"

    return server


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--auth-issuer", help="turn on the SDK's own resource-server mode for this issuer")
    parser.add_argument("--jwks-uri", help="default: <issuer>/jwks")
    parser.add_argument("--required-scope", action="append", default=[])
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    resource = f"http://127.0.0.1:{port}/mcp"

    server = build_server(args, resource)
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level=args.log_level, lifespan="on")
    uv = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(uv.serve(sockets=[sock]))
        while not uv.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.02)
        print(json.dumps({"ready": True, "port": port, "url": resource, "started": time.time()}), flush=True)
        await task

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
