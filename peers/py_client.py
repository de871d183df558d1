#!/usr/bin/env python3
"""A real MCP client: the Python `mcp` SDK (works with 1.x and 2.x), OAuth included.

    python peers/py_client.py --url http://127.0.0.1:PORT/mcp --flow code
        [--call add '{"a": 2, "b": 3}'] [--call whoami '{}'] ...
    python peers/py_client.py --url ... --flow cc --client-id ID --client-secret SECRET --issuer ISS

`--flow code`: the SDK's `OAuthClientProvider` does everything from the first 401: Protected
Resource Metadata, authorization server metadata, dynamic client registration, PKCE. The
"browser" (`redirect_handler`) follows the authorization server's redirects over plain HTTP with
a cookie jar until the redirect URI, and hands `code`/`state` (and `iss`) back to the SDK.

`--flow cc`: the SDK's `ClientCredentialsOAuthProvider` extension with a pre-registered client.

`--token-store FILE --forget-expiry`: tokens (without `expires_in`) and the registration are kept
in FILE across runs, so a later run starts with a token the SDK cannot know has expired and
sends it; the server's 401 `invalid_token` then drives the re-authorization (the "expired
token" test).

`--list-tools`: the session first lists the tools (the SDK's `list_tools`, every page) and the
output gains "tools": [each tool as the SDK parsed it, `model_dump(by_alias=True,
exclude_none=True)`]; without `--call` no tool is called then.

Prints one JSON line: {"ok", "sdk", "results": [{"tool", "text", "is_error"}], "tokens": N,
"trace": [every HTTP exchange the SDK made: method, url, status, www-authenticate, json body]}.
Exit 0 only if every call succeeded.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import AsyncExitStack
from http.cookiejar import CookieJar

MCP_VERSION = importlib.metadata.version("mcp")
MCP2 = int(MCP_VERSION.split(".")[0]) >= 2

if MCP2:
    import httpx2 as httpx
else:
    import httpx

from mcp import ClientSession  # noqa: E402
from mcp.client.auth import OAuthClientProvider  # noqa: E402
from mcp.shared.auth import OAuthClientMetadata, OAuthToken  # noqa: E402

try:  # 2.x
    from mcp.client.streamable_http import streamable_http_client
except ImportError:  # pragma: no cover - older 1.x
    streamable_http_client = None  # type: ignore[assignment]

REDIRECT_URI = "http://127.0.0.1:{port}/callback"


def decode_jwt_claims(token: str) -> dict | None:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except Exception:  # noqa: BLE001 - opaque tokens are fine
        return None


class MemoryStorage:
    """Tokens and client registration, in memory or (`path`) in a JSON file that outlives the
    process, like a real client's credential store."""

    def __init__(self, forget_expiry: bool, path: str | None = None):
        self.tokens: OAuthToken | None = None
        self.client_info = None
        self.forget_expiry = forget_expiry
        self.issued: list[dict] = []
        self.path = path
        if path:
            try:
                with open(path, encoding="utf-8") as handle:
                    saved = json.load(handle)
            except FileNotFoundError:
                saved = {}
            from mcp.shared.auth import OAuthClientInformationFull

            if saved.get("tokens"):
                self.tokens = OAuthToken.model_validate(saved["tokens"])
            if saved.get("client_info"):
                self.client_info = OAuthClientInformationFull.model_validate(saved["client_info"])

    def _save(self) -> None:
        if self.path:
            with open(self.path, "w", encoding="utf-8") as handle:
                json.dump({"tokens": self.tokens.model_dump(mode="json") if self.tokens else None,
                           "client_info": self.client_info.model_dump(mode="json") if self.client_info else None},
                          handle)

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        claims = decode_jwt_claims(tokens.access_token)
        self.issued.append({"claims": claims, "scope": tokens.scope, "expires_in": tokens.expires_in,
                            "refresh_token": bool(tokens.refresh_token)})
        if self.forget_expiry:
            tokens = tokens.model_copy(update={"expires_in": None})
        self.tokens = tokens
        self._save()

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info
        self._save()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: D102
        return None


def headless_browser(authorization_url: str, redirect_uri: str, trace: list) -> dict[str, str]:
    """What a person's browser would do, for an authorization server that approves on its own:
    follow redirects (keeping cookies) until one points at the redirect URI; return its query."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect()
    )
    url = authorization_url
    for _ in range(20):
        if url.startswith(redirect_uri):
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
            trace.append({"browser": "redirect_uri", "url": redirect_uri, "params": sorted(query)})
            return query
        try:
            with opener.open(url, timeout=10) as resp:
                status, location, body = resp.status, resp.headers.get("location"), resp.read()
        except urllib.error.HTTPError as err:
            status, location, body = err.code, err.headers.get("location"), err.read()
        trace.append({"browser": "GET", "url": url.split("?")[0], "status": status})
        if not location:
            raise RuntimeError(f"authorization stopped at {url.split('?')[0]}: {status} {body[:300]!r}")
        url = urllib.parse.urljoin(url, location)
    raise RuntimeError("too many redirects during authorization")


def make_provider(args, storage: MemoryStorage, trace: list):
    if args.flow == "cc":
        from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

        scope_kw = "scope" if MCP2 else "scopes"
        return ClientCredentialsOAuthProvider(
            server_url=args.url,
            storage=storage,
            client_id=args.client_id,
            client_secret=args.client_secret,
            issuer=args.issuer,
            **{scope_kw: args.scope},
        )

    redirect_uri = REDIRECT_URI.format(port=args.redirect_port)
    pending: dict[str, str] = {}

    async def redirect_handler(authorization_url: str) -> None:
        trace.append({"browser": "authorize", "url": authorization_url.split("?")[0],
                      "params": dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorization_url).query))})
        pending.update(await asyncio.to_thread(headless_browser, authorization_url, redirect_uri, trace))

    async def callback_handler():
        if "error" in pending:
            raise RuntimeError(f"authorization error: {pending}")
        code, state, iss = pending.pop("code"), pending.pop("state", None), pending.pop("iss", None)
        pending.clear()
        if MCP2:
            from mcp.shared.auth import AuthorizationCodeResult

            return AuthorizationCodeResult(code=code, state=state, iss=iss)
        return code, state

    metadata = OAuthClientMetadata(
        client_name=f"mcp-oauth-filter e2e (python mcp {MCP_VERSION})",
        redirect_uris=[redirect_uri],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope=args.scope,
    )
    return OAuthClientProvider(
        server_url=args.url,
        client_metadata=metadata,
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )


def tool_text(result) -> str:
    parts = []
    for item in result.content or []:
        text = getattr(item, "text", None)
        if text is not None:
            parts.append(text)
    return "\n".join(parts)


async def run(args) -> dict:
    trace: list = []
    storage = MemoryStorage(args.forget_expiry, args.token_store)
    provider = make_provider(args, storage, trace)

    async def on_response(response):
        entry = {"method": response.request.method, "url": str(response.request.url).split("?")[0],
                 "status": response.status_code}
        if "www-authenticate" in response.headers:
            entry["www_authenticate"] = response.headers["www-authenticate"]
        if response.headers.get("content-type", "").startswith("application/json"):
            try:  # never read an SSE body here: it may stay open for the whole session
                await response.aread()
                entry["json"] = response.json()
            except ValueError:
                pass
        if response.request.method == "POST" and "/mcp" not in entry["url"]:
            try:
                entry["request_form"] = sorted(urllib.parse.parse_qs(response.request.content.decode()).keys())
            except Exception:  # noqa: BLE001
                pass
        trace.append(entry)

    if streamable_http_client is None:
        # Releases before 1.10 make their OAuth requests with httpx clients of their own: every
        # client they create gets the hook, so the trace shows those requests too.
        original_init = httpx.AsyncClient.__init__

        def traced_init(self, *a, **kw):
            hooks = dict(kw.pop("event_hooks", None) or {})
            hooks["response"] = [*hooks.get("response", []), on_response]
            kw.setdefault("trust_env", False)
            original_init(self, *a, event_hooks=hooks, **kw)

        httpx.AsyncClient.__init__ = traced_init

    results = []
    http_client = httpx.AsyncClient(auth=provider, timeout=30, trust_env=False,
                                    event_hooks={"response": [on_response]})
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(http_client)
        if streamable_http_client is not None:
            streams = await stack.enter_async_context(streamable_http_client(args.url, http_client=http_client))
        else:  # pragma: no cover
            from mcp.client.streamable_http import streamablehttp_client

            streams = await stack.enter_async_context(streamablehttp_client(args.url, auth=provider))
        session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
        await session.initialize()
        if args.list_tools:
            listed, cursor = [], None
            for _ in range(100):
                page = await (session.list_tools(cursor=cursor) if cursor else session.list_tools())
                listed += [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in page.tools]
                cursor = getattr(page, "next_cursor", None) or getattr(page, "nextCursor", None)
                if not cursor:
                    break
        default_calls = [] if args.list_tools else [("add", '{"a": 2, "b": 3}')]
        for index, (name, arguments) in enumerate(args.call or default_calls):
            if index and args.pause:
                await asyncio.sleep(args.pause)
            result = await session.call_tool(name, json.loads(arguments))
            results.append({"tool": name, "text": tool_text(result), "is_error": bool(getattr(result, "is_error", getattr(result, "isError", False)))})
    ok = (bool(results) or args.list_tools) and not any(r["is_error"] for r in results)
    outcome = {"ok": ok, "sdk": f"python mcp {MCP_VERSION}", "results": results, "tokens": storage.issued,
               "trace": trace}
    if args.list_tools:
        outcome["tools"] = listed
    return outcome


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--flow", choices=["code", "cc"], default="code")
    parser.add_argument("--scope", default="mcp:read mcp:write")
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret")
    parser.add_argument("--issuer")
    parser.add_argument("--redirect-port", type=int, default=53682)
    parser.add_argument("--call", nargs=2, action="append", metavar=("TOOL", "JSON_ARGS"))
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between calls")
    parser.add_argument("--forget-expiry", action="store_true",
                        help="store tokens without expires_in (a later run cannot know they expired)")
    parser.add_argument("--token-store", help="keep tokens and the registration in this JSON file across runs")
    parser.add_argument("--list-tools", action="store_true", help="list the tools (every page) before any call")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        outcome = asyncio.run(run(args))
    except BaseException as err:  # noqa: BLE001 - report, never hang
        detail = err
        while isinstance(detail, BaseExceptionGroup) and detail.exceptions:
            detail = detail.exceptions[0]
        outcome = {"ok": False, "sdk": f"python mcp {MCP_VERSION}", "error": f"{type(detail).__name__}: {detail}"}
    outcome["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(outcome))
    return 0 if outcome.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
