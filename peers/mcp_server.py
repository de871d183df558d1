#!/usr/bin/env python3
"""The upstream MCP server for the e2e tests and the demo: the Python `mcp` SDK (2.x,
`MCPServer`, formerly FastMCP), streamable HTTP at /mcp, on 127.0.0.1.

    python peers/mcp_server.py [--port 0]
    python peers/mcp_server.py --port 0 --auth-issuer ISSUER [--jwks-uri URL] [--required-scope mcp:read ...]
    python peers/mcp_server.py --port 0 [--json-response] [--extra-tools write_file,delete_all]
        [--slow-list SECONDS] [--list-cursor CURSOR] [--list-cache-scope public --list-ttl-ms 60000]
        [--event-store [--retry-ms 200] [--close-list-stream]] [--transport sse]

Without `--auth-issuer` the server has no authentication of its own (Envoy + mcp-oauth-filter
sit in front). With it, the SDK's own resource-server mode is on: `AuthSettings` (Protected
Resource Metadata, 401/403 challenges) and a `TokenVerifier` that validates the authorization
server's JWT access tokens against its JWKS with PyJWT (signature, `iss`, `aud` = this server's
/mcp URL, `exp`). The differential test compares the two.

Tools: `add(a, b)`, `echo(text)`, `whoami()` (the `x-mcp-subject` header the filter sets from
the token's `sub`; in resource-server mode, the verified token's `sub`).

Options for the `tools/list` filtering tests (all off by default: the server above, unchanged):
`--json-response` answers every POST with one `application/json` body instead of an event
stream (the SDK's `json_response=True`); `--extra-tools a,b,...` registers more tools of those
names (each takes an optional `text` and returns `"<name>:<text>"`, with a description naming
it); `--slow-list S`: the `tools/list` handler first sends a `notifications/message` log
notification related to the request (so, in SSE mode, on that request's stream), then waits S
seconds, then answers; `--list-cursor C`, `--list-cache-scope public|private`, `--list-ttl-ms N`
and `--list-meta JSON` add `nextCursor`, `cacheScope`, `ttlMs` and `_meta` to every
`tools/list` result. `--event-store` makes streams resumable (an in-memory `EventStore`: every
event gets an `id`, each POST stream starts with a priming event, a `GET` with `Last-Event-ID`
replays what followed; `--retry-ms` is the `retry` the priming event suggests);
`--close-list-stream` (with `--event-store` and `--slow-list`): after its notification the
`tools/list` handler closes its request's stream (the SDK's `close_sse_stream`, SSE polling of
MCP 2025-11-25), so the client gets the result only by resuming with `GET` + `Last-Event-ID`.
`--transport sse`: the HTTP+SSE transport of MCP 2024-11-05 instead (the SDK's `sse_app`): a
`GET /mcp/sse` stream that announces `/mcp/messages/?session_id=...`, where messages are
POSTed (`202`) and every answer comes on the `GET` stream.

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

    server = _server_class(args)("mcp-oauth-filter test upstream", version="1.0.0", **options)

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

    for name in _extra_tool_names(args):
        server.add_tool(_trivial_tool(name), name=name, description=f"The extra tool {name}.")

    return server


def _extra_tool_names(args: argparse.Namespace) -> list[str]:
    return [name.strip() for name in (getattr(args, "extra_tools", None) or "").split(",") if name.strip()]


def _trivial_tool(name: str):
    def tool(text: str = "") -> str:
        return f"{name}:{text}"

    tool.__name__ = "extra_" + "".join(ch if ch.isalnum() else "_" for ch in name)
    return tool


def _server_class(args: argparse.Namespace) -> type:
    """MCPServer, or (any `--slow-list` / `--list-*` option) a subclass whose tools/list handler
    sends a log notification and waits first, and adds the result members asked for."""
    slow = getattr(args, "slow_list", None)
    close_stream = getattr(args, "close_list_stream", False)
    extras = {
        "next_cursor": getattr(args, "list_cursor", None),
        "cache_scope": getattr(args, "list_cache_scope", None),
        "ttl_ms": getattr(args, "list_ttl_ms", None),
    }
    extras = {key: value for key, value in extras.items() if value is not None}
    meta = json.loads(args.list_meta) if getattr(args, "list_meta", None) else None
    if slow is None and not extras and meta is None:
        return MCPServer

    from mcp_types import ListToolsResult

    class ListingServer(MCPServer):
        async def _handle_list_tools(self, ctx, params):
            if slow is not None:
                await ctx.session.send_log_message(  # the notification goes on this request's stream
                    level="info", data="listing tools", logger="mcp-server", related_request_id=ctx.request_id)
                if close_stream:
                    if ctx.close_sse_stream is None:
                        raise RuntimeError("close_sse_stream unavailable: needs --event-store and 2025-11-25")
                    await ctx.close_sse_stream()
                await asyncio.sleep(slow)
            fields = dict(extras)
            if meta is not None:
                fields["_meta"] = meta
            return ListToolsResult(tools=await self.list_tools(), **fields)

    return ListingServer


def memory_event_store():
    """An in-memory `EventStore`: events in order, ids unique; a replay sends the events of the
    stream of `last_event_id` that came after it."""
    import uuid

    from mcp.server.streamable_http import EventMessage, EventStore

    class MemoryEventStore(EventStore):
        def __init__(self) -> None:
            self.events: list[tuple[str, str, object]] = []  # (event id, stream id, message or None)

        async def store_event(self, stream_id, message):
            event_id = uuid.uuid4().hex
            self.events.append((event_id, stream_id, message))
            return event_id

        async def replay_events_after(self, last_event_id, send_callback):
            at = next((i for i, (event_id, _, _) in enumerate(self.events) if event_id == last_event_id), None)
            if at is None:
                return None
            stream_id = self.events[at][1]
            for event_id, stream, message in self.events[at + 1:]:
                if stream == stream_id and message is not None:
                    await send_callback(EventMessage(message, event_id))
            return stream_id

    return MemoryEventStore()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--auth-issuer", help="turn on the SDK's own resource-server mode for this issuer")
    parser.add_argument("--jwks-uri", help="default: <issuer>/jwks")
    parser.add_argument("--required-scope", action="append", default=[])
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--json-response", action="store_true",
                        help="answer POSTs with application/json instead of text/event-stream")
    parser.add_argument("--extra-tools", default="", help="comma-separated names of more (trivial) tools")
    parser.add_argument("--slow-list", type=float, default=None, metavar="SECONDS",
                        help="tools/list: send a log notification on its stream, wait SECONDS, then answer")
    parser.add_argument("--list-cursor", help="nextCursor of every tools/list result")
    parser.add_argument("--list-cache-scope", choices=["public", "private"], help="cacheScope of tools/list results")
    parser.add_argument("--list-ttl-ms", type=int, help="ttlMs of tools/list results")
    parser.add_argument("--list-meta", help="_meta (JSON object) of tools/list results")
    parser.add_argument("--event-store", action="store_true", help="resumable streams (in-memory event store)")
    parser.add_argument("--retry-ms", type=int, default=None, help="retry of the priming event (with --event-store)")
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    parser.add_argument("--close-list-stream", action="store_true",
                        help="tools/list closes its stream after the notification (with --event-store, --slow-list)")
    args = parser.parse_args(argv)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    resource = f"http://127.0.0.1:{port}/mcp"

    server = build_server(args, resource)
    if args.transport == "sse":
        app = server.sse_app(sse_path="/mcp/sse", message_path="/mcp/messages/", host="127.0.0.1")
    else:
        streams = {"event_store": memory_event_store(), "retry_interval": args.retry_ms} if args.event_store else {}
        app = server.streamable_http_app(host="127.0.0.1", json_response=args.json_response, **streams)
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
