"""What the benchmark runs against: one Envoy (`--concurrency 1`, the harness's launcher), one
listener per variant, every listener with the same direct-response route (200 "ok"), and
which variant runs which scenario with which expected answer.

Variants: none | noop (bench/noop, the floor of any wasm filter) | noop_trim (the same module
with its exports trimmed like ours, see tools/trim_exports.py) | reply (the trimmed module
given our 401 and metadata responses: reads `:path`, sends the matching one) | jwt (Envoy's
jwt_authn) | jwt_cache (jwt_authn + jwt_cache_config) | ours (the filter under test) |
ours_opaque (ours, its issuer also introspecting opaque tokens) | ours_tools, ours_tools_off,
ours_tools_sse, ours_tools_sse_off (ours with `tool_scopes` hiding 10 of a 50-tool list from the
hot token, `filter_tools_list` on / off; their route answers that `tools/list` result, as
`application/json` or as one `text/event-stream` event: the tools_list scenario only).
"""
from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path
from typing import Callable

from harness import Client, Envoy, tokens
from harness.envoy import direct_response_route, listener, socket_address, wasm_filter
from harness.paths import REPO_ROOT, WASM_RELATIVE
from harness.wasm import trim_exports

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
OURS_WASM = REPO_ROOT / WASM_RELATIVE
NOOP_WASM = BENCH / "noop/target/wasm32-wasip1/release/bench_noop.wasm"
NOOP_TRIM_WASM = CACHE / "bench_noop_trimmed.wasm"  # written from NOOP_WASM by trim_noop()

ISSUER = "https://auth.example.com"
RESOURCE = "https://mcp.example.com/mcp"
PROTECTED_PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"

# The variants of the GET scenarios (route: 200 "ok"), then those of tools_list (route: a tool list).
BASE_VARIANTS = ["none", "noop", "noop_trim", "reply", "jwt", "jwt_cache", "ours", "ours_opaque"]
TOOLS_VARIANTS = ["ours_tools", "ours_tools_off", "ours_tools_sse", "ours_tools_sse_off"]
# Ours without the audit trail (`audit_filter_state: false`): what its five host calls cost.
VARIANTS = BASE_VARIANTS + TOOLS_VARIANTS + ["ours_noaudit"]
FLOORS = ["none", "noop", "noop_trim"]
LABELS = {
    "none": "no filter",
    "noop": "no-op wasm",
    "noop_trim": "no-op wasm, trimmed exports",
    "reply": "local-reply wasm floor",
    "jwt": "jwt_authn",
    "jwt_cache": "jwt_authn+cache",
    "ours": "mcp-oauth-filter",
    "ours_opaque": "mcp-oauth-filter, opaque token (introspected, cached)",
    "ours_noaudit": "mcp-oauth-filter, audit_filter_state: false",
    "ours_tools": "mcp-oauth-filter, tools/list filtered (JSON)",
    "ours_tools_off": "mcp-oauth-filter, tools/list passed through (JSON)",
    "ours_tools_sse": "mcp-oauth-filter, tools/list filtered (SSE)",
    "ours_tools_sse_off": "mcp-oauth-filter, tools/list passed through (SSE)",
}
INTROSPECTION_CLUSTER = "introspection"
INTROSPECTION_ENDPOINT = "http://auth.example.com/introspect"
# Per introspecting worker: below the flood's connections, so the flood meets the bound.
OPAQUE_MAX_IN_FLIGHT = 16
# scenario -> (variants it runs on, token pool, path, expected status per variant). The hot
# scenario's pool for ours_opaque is "opaque_hot" (see `pool_of`): one opaque token, reused.
# Every scenario sends `GET path` unless REQUESTS says otherwise (see `request_of`).
SCENARIOS = {
    "hot": ([v for v in BASE_VARIANTS if v != "reply"] + ["ours_noaudit"], "hot", PROTECTED_PATH,
            {v: 200 for v in BASE_VARIANTS + ["ours_noaudit"]}),
    "cold": ([v for v in BASE_VARIANTS if v not in ("noop_trim", "reply", "ours_opaque")], "cold", PROTECTED_PATH,
             {v: 200 for v in BASE_VARIANTS}),
    "forged": ([v for v in BASE_VARIANTS if v not in ("noop_trim", "reply", "ours_opaque")], "forged", PROTECTED_PATH,
               {"none": 200, "noop": 200, "jwt": 401, "jwt_cache": 401, "ours": 401}),
    "noauth": ([v for v in BASE_VARIANTS if v != "ours_opaque"], None, PROTECTED_PATH,
               {"none": 200, "noop": 200, "noop_trim": 200, "reply": 401, "jwt": 401, "jwt_cache": 401, "ours": 401}),
    "metadata": (FLOORS + ["reply", "ours"], None, METADATA_PATH,
                 {"none": 200, "noop": 200, "noop_trim": 200, "reply": 200, "ours": 200}),
    "tools_list": (TOOLS_VARIANTS, "hot", PROTECTED_PATH, {v: 200 for v in TOOLS_VARIANTS}),
}

# The MCP `tools/list` call of the tools_list scenario (JSON-RPC id 1, as the lists' answer).
TOOLS_LIST_CALL = '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
MCP_POST_HEADERS = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")]
REQUESTS = {"tools_list": ("POST", TOOLS_LIST_CALL, MCP_POST_HEADERS)}


def request_of(scenario: str) -> dict:
    """The method, body and extra headers `scenario` sends (for `run_wrk` and `answer`)."""
    method, body, headers = REQUESTS.get(scenario, ("GET", None, []))
    return {"method": method, "body": body, "headers": list(headers)}


def pool_of(scenario: str, variant: str) -> str | None:
    """The token pool `variant` gets in `scenario`."""
    pool = SCENARIOS[scenario][1]
    return "opaque_hot" if pool == "hot" and variant == "ours_opaque" else pool


# What ours answers in the noauth and metadata scenarios (checked against ours before the
# bench measures, see `same_answers`): the local-reply floor sends exactly these.
REPLIES = [
    (METADATA_PATH, 200,
     json.dumps({"resource": RESOURCE, "authorization_servers": [ISSUER],
                 "scopes_supported": ["mcp:read", "mcp:write"], "bearer_methods_supported": ["header"]},
                separators=(",", ":")),
     [("content-type", "application/json"), ("cache-control", "public, max-age=3600"),
      ("access-control-allow-origin", "*")]),
    ("/", 401, '{"error":"invalid_token","error_description":"bearer token required"}',
     [("content-type", "application/json"),
      ("www-authenticate", f'Bearer resource_metadata="{RESOURCE.removesuffix(PROTECTED_PATH)}{METADATA_PATH}", scope="mcp:read"'),
      ("cache-control", "no-store")]),
]


def reply_rules() -> str:
    """REPLIES in bench/noop's rule format: one line per rule, tab-separated fields."""
    return "\n".join("\t".join([prefix, str(status), body] + [f"{n}: {v}" for n, v in headers])
                     for prefix, status, body, headers in REPLIES)


def plugin_config(jwks: dict) -> dict:
    """Ours: the resource with required scope mcp:read, the issuer's keys inline."""
    return {
        "resources": [
            {
                "resource": RESOURCE,
                "authorization_servers": [ISSUER],
                "scopes_supported": ["mcp:read", "mcp:write"],
                "required_scopes": ["mcp:read"],
            }
        ],
        "issuers": [{"issuer": ISSUER, "jwks": jwks}],
    }


def plugin_config_opaque(jwks: dict) -> dict:
    """ours_opaque: ours, its issuer also introspecting opaque tokens (inline secret: a bench)."""
    config = plugin_config(jwks)
    config["issuers"][0].update({
        "cluster": INTROSPECTION_CLUSTER,
        "introspection": {"endpoint": INTROSPECTION_ENDPOINT, "client_id": "mcp-gateway", "client_secret": "bench",
                          "cache_seconds": 86400, "max_in_flight": OPAQUE_MAX_IN_FLIGHT},
    })
    return config


# The tools/list answer of the ours_tools* routes: 50 tools as an MCP server lists them (name,
# description, inputSchema), 10 resources x 5 actions; the 10 delete_* tools need mcp:admin, which
# the hot token (mcp:read) lacks, so the filter hides them.
TOOL_RESOURCES = [
    ("issue", "issues"), ("pull_request", "pull requests"), ("branch", "branches"), ("release", "releases"),
    ("label", "labels"), ("milestone", "milestones"), ("webhook", "webhooks"), ("deploy_key", "deploy keys"),
    ("workflow_run", "workflow runs"), ("discussion", "discussions"),
]
ADMIN_SCOPE = "mcp:admin"
TOOL_COUNT, HIDDEN_COUNT = 5 * len(TOOL_RESOURCES), len(TOOL_RESOURCES)


def _tool(action: str, kind: str, plural: str) -> dict:
    repo = {"owner": {"type": "string"}, "repo": {"type": "string"}}
    one = {"number": {"type": "integer", "description": "Number or id"}}
    props, required, description = {
        "list": ({**repo, "state": {"type": "string", "enum": ["open", "closed", "all"]},
                  "page": {"type": "integer", "minimum": 1}, "per_page": {"type": "integer", "maximum": 100}},
                 ["owner", "repo"], f"List the {plural} of a repository, newest first, one page at a time."),
        "get": ({**repo, **one}, ["owner", "repo", "number"],
                f"Get one of a repository's {plural} with all its details."),
        "create": ({**repo, "title": {"type": "string", "description": "Title"},
                    "body": {"type": "string", "description": "Markdown text"},
                    "labels": {"type": "array", "items": {"type": "string"}}},
                   ["owner", "repo", "title"], f"Create a new entry among a repository's {plural}."),
        "update": ({**repo, **one, "title": {"type": "string"}, "state": {"type": "string", "enum": ["open", "closed"]}},
                   ["owner", "repo", "number"], f"Change the title or state of one of a repository's {plural}."),
        "delete": ({**repo, **one, "confirm": {"type": "boolean", "description": "Must be true"}},
                   ["owner", "repo", "number", "confirm"],
                   f"Delete one of a repository's {plural} for good. Cannot be undone."),
    }[action]
    return {"name": f"{action}_{plural.replace(' ', '_') if action == 'list' else kind}", "description": description,
            "inputSchema": {"type": "object", "properties": props, "required": required}}


def tool_list() -> list[dict]:
    return [_tool(action, kind, plural) for kind, plural in TOOL_RESOURCES
            for action in ("list", "get", "create", "update", "delete")]


def admin_tools() -> list[str]:
    """The tools `tool_scopes` reserves to mcp:admin: those the hot token may not call."""
    return [t["name"] for t in tool_list() if t["name"].startswith("delete_")]


def tools_list_result() -> str:
    """The upstream's JSON-RPC answer (id 1) to TOOLS_LIST_CALL: all 50 tools, compact JSON."""
    return json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": tool_list()}}, separators=(",", ":"))


def tools_list_event() -> str:
    """The same answer as one event of an MCP event stream."""
    return f"event: message\ndata: {tools_list_result()}\n\n"


def plugin_config_tools(jwks: dict, filter_tools_list: bool) -> dict:
    """ours_tools*: ours plus `tool_scopes` reserving the 10 delete_* tools to mcp:admin, the
    filter of tool lists on (its default with tool_scopes) or explicitly off."""
    config = plugin_config(jwks)
    config["resources"][0]["scopes_supported"].append(ADMIN_SCOPE)
    config["resources"][0]["tool_scopes"] = {name: [ADMIN_SCOPE] for name in admin_tools()}
    if not filter_tools_list:
        config["resources"][0]["filter_tools_list"] = False
    return config


def tools_list_route(sse: bool) -> dict:
    """A direct response with the 50-tool answer (Envoy encodes it through the HTTP filters, so
    ours sees it as it would an upstream's) and its content type."""
    route = direct_response_route("")
    # As bytes (base64 in the YAML Envoy reads): the event's closing blank line survives exactly.
    body = (tools_list_event() if sse else tools_list_result()).encode()
    route["direct_response"]["body"] = {"inline_bytes": base64.b64encode(body).decode()}
    route["response_headers_to_add"] = [{
        "header": {"key": "content-type", "value": "text/event-stream" if sse else "application/json"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }]
    return route


def _jwt_filter(jwks: dict, cached: bool) -> dict:
    provider = {
        "issuer": ISSUER,
        "audiences": [RESOURCE],
        "local_jwks": {"inline_string": json.dumps(jwks)},
    }
    if cached:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def build_arg(reserved: tuple[str, ...], flags: tuple[str, ...] = ()) -> Callable[[str], tuple[str, Path, str]]:
    """An argparse `type` for a build of ours on its own listener (bench/ab.py, bench/callgrind.py):
    `NAME=PATH.wasm`, or `NAME=PATH.wasm,FLAG` with FLAG one of `flags`; NAME a word not in
    `reserved` (the floors' listeners). Gives (NAME, PATH, FLAG or "")."""
    shape = "NAME=PATH.wasm" + (f"[,{'|'.join(flags)}]" if flags else "")

    def parse(text: str) -> tuple[str, Path, str]:
        name, sep, rest = text.partition("=")
        path, comma, flag = rest.partition(",")
        if not sep or not name.isidentifier() or name in reserved or (comma and flag not in flags):
            raise argparse.ArgumentTypeError(
                f"expected {shape} (NAME a word, not {' or '.join(reserved)}), got {text!r}")
        if not Path(path).is_file():
            raise argparse.ArgumentTypeError(f"no such file: {path}")
        return name, Path(path), flag

    return parse


def variant_filters(variant: str) -> list[dict]:
    """The HTTP filters (before the router) of a variant's listener."""
    jwks = tokens.fixture_jwks()
    return {
        "none": lambda: [],
        "noop": lambda: [wasm_filter("", name="bench_noop", wasm_path=NOOP_WASM)],
        "noop_trim": lambda: [wasm_filter("", name="bench_noop_trim", wasm_path=NOOP_TRIM_WASM)],
        "reply": lambda: [wasm_filter(reply_rules(), name="bench_reply", wasm_path=NOOP_TRIM_WASM)],
        "jwt": lambda: [_jwt_filter(jwks, cached=False)],
        "jwt_cache": lambda: [_jwt_filter(jwks, cached=True)],
        "ours": lambda: [wasm_filter(plugin_config(jwks), wasm_path=OURS_WASM)],
        "ours_noaudit": lambda: [wasm_filter({**plugin_config(jwks), "audit_filter_state": False},
                                             name="mcp_oauth_noaudit", wasm_path=OURS_WASM)],
        "ours_opaque": lambda: [wasm_filter(plugin_config_opaque(jwks), name="mcp_oauth_opaque", wasm_path=OURS_WASM)],
        # tool_scopes: the filter holds the headers while it reads the body (hold_headers_for_body,
        # default true), which needs allow_on_headers_stop_iteration on Envoy's wasm filter.
        **{v: (lambda v=v: [wasm_filter(plugin_config_tools(jwks, filter_tools_list=not v.endswith("_off")),
                                        name=f"mcp_oauth_{v.removeprefix('ours_').replace('tools', 'list')}", wasm_path=OURS_WASM,
                                        extra={"allow_on_headers_stop_iteration": True})])
           for v in TOOLS_VARIANTS},
    }[variant]()


def variant_routes(variant: str) -> list[dict]:
    """The routes of a variant's listener: the tools_list variants' answer a tool list, the
    others 200 "ok"."""
    if variant in TOOLS_VARIANTS:
        return [tools_list_route(sse="_sse" in variant)]
    return [direct_response_route("ok")]


def bench_listener(name: str, filters: list[dict], routes: list[dict] | None = None) -> dict:
    """A listener named `name` (its stat prefix too) with `filters` and `routes` (default: the
    direct response "ok"); direct responses may be up to 1 MiB (Envoy's default limit is 4 KiB)."""
    out = listener(name, filters, routes=routes or [direct_response_route("ok")])
    hcm = out["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["max_direct_response_body_size_bytes"] = 1 << 20
    return out


def bootstrap_of(listeners: list[dict], clusters: list[dict] = ()) -> dict:
    """Admin and `listeners` on 127.0.0.1, ports chosen by the OS; no upstream (the routes answer
    themselves), only `clusters` for the filter's own calls."""
    return {"admin": {"address": socket_address("127.0.0.1", 0)},
            "static_resources": {"listeners": listeners, **({"clusters": list(clusters)} if clusters else {})}}


def bootstrap(variants: list[str], introspection_cluster: dict | None = None) -> dict:
    """A listener per variant, named after it; ours_opaque needs `introspection_cluster`."""
    clusters = [introspection_cluster] if introspection_cluster and "ours_opaque" in variants else []
    return bootstrap_of([bench_listener(v, variant_filters(v), variant_routes(v)) for v in variants], clusters)


def trim_noop() -> None:
    """NOOP_TRIM_WASM: the no-op module with the exports tools/trim_exports.py keeps for ours."""
    CACHE.mkdir(exist_ok=True)
    trim_exports(NOOP_WASM, out=NOOP_TRIM_WASM)


def start_envoy(bootstrap_config: dict) -> Envoy:
    """One Envoy worker on `bootstrap_config`, ready: `envoy.ports[variant]`."""
    return Envoy(bootstrap=bootstrap_config, concurrency=1, log_level="warning").start(timeout=60)


def answer(port: int, path: str, token: str | None = None, method: str = "GET", body: str | None = None,
           headers: list[tuple[str, str]] = ()) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers (without the ones Envoy adds: date, server) and body of one request."""
    reply = Client(port, timeout=5).request(method, path, token=token, headers=list(headers), body=body)
    return reply.status, [(n, v) for n, v in reply.headers if n not in ("date", "server")], reply.body


def probe(port: int, path: str, token: str | None, **request) -> int:
    return answer(port, path, token, **request)[0]


def same_answers(ports: dict[str, int]) -> list[str]:
    """Where the local-reply floor does not answer exactly as ours (a stale REPLIES)."""
    problems = []
    for path in (PROTECTED_PATH, METADATA_PATH):
        ours, floor = answer(ports["ours"], path), answer(ports["reply"], path)
        if ours != floor:
            problems.append(f"{path}: ours {ours!r} != local-reply floor {floor!r}")
    return problems


def _listed(headers: list[tuple[str, str]], body: bytes) -> dict:
    """The JSON-RPC message of a tools/list answer: the body, or the data of its one event."""
    content_type = dict(headers).get("content-type", "")
    text = body.decode()
    if content_type.startswith("text/event-stream"):
        events = [e for e in text.split("\n\n") if e.strip()]
        if len(events) != 1:
            raise ValueError(f"{len(events)} events, expected 1")
        text = "\n".join(line.removeprefix("data:").removeprefix(" ")
                         for line in events[0].split("\n") if line.startswith("data:"))
    return json.loads(text)


def tools_answers(ports: dict[str, int], token: str) -> list[str]:
    """Where a tools_list variant does not answer the scenario's call as it must: the filtered
    ones the 40 tools the token may call and `cacheScope: "private"`, the pass-through ones the
    route's 50 tools byte for byte."""
    problems = []
    hidden = set(admin_tools())
    for v in [v for v in TOOLS_VARIANTS if v in ports]:
        sse = "_sse" in v
        status, headers, body = answer(ports[v], PROTECTED_PATH, token, **request_of("tools_list"))
        want_type = "text/event-stream" if sse else "application/json"
        if status != 200 or not dict(headers).get("content-type", "").startswith(want_type):
            problems.append(f"{v}: {status} {dict(headers).get('content-type')!r}, expected 200 {want_type}: {body[:300]!r}")
            continue
        try:
            message = _listed(headers, body)
            result = message["result"]
            names = [t["name"] for t in result["tools"]]
        except (ValueError, KeyError, TypeError) as err:
            problems.append(f"{v}: not a tools/list result ({err!r}): {body[:300]!r}")
            continue
        if v.endswith("_off"):
            want = (tools_list_event() if sse else tools_list_result()).encode()
            if body != want:
                problems.append(f"{v}: pass-through changed the answer ({len(names)} tools, "
                                f"cacheScope {result.get('cacheScope')!r}, {len(body)} bytes vs {len(want)})")
        else:
            if (len(names) != TOOL_COUNT - HIDDEN_COUNT or hidden & set(names) or result.get("cacheScope") != "private"
                    or message.get("id") != 1):
                problems.append(f"{v}: {len(names)} tools (expected {TOOL_COUNT - HIDDEN_COUNT}, none of "
                                f"{sorted(hidden & set(names))}), cacheScope {result.get('cacheScope')!r} "
                                f"(expected 'private'), id {message.get('id')!r}")
            if not sse and "content-length" in dict(headers) and int(dict(headers)["content-length"]) != len(body):
                problems.append(f"{v}: content-length {dict(headers)['content-length']} but {len(body)} bytes")
    return problems
