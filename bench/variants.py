"""What the benchmark runs against: one Envoy (`--concurrency 1`, the harness's launcher), one
listener per variant, every listener with the same direct-response route (200 "ok"), and
which variant runs which scenario with which expected answer.

Variants: none | noop (bench/noop, the floor of any wasm filter) | noop_trim (the same module
with its exports trimmed like ours, see tools/trim_exports.py) | reply (the trimmed module
given our 401 and metadata responses: reads `:path`, sends the matching one) | jwt (Envoy's
jwt_authn) | jwt_cache (jwt_authn + jwt_cache_config) | ours (the filter under test).
"""
from __future__ import annotations

import json
from pathlib import Path

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

VARIANTS = ["none", "noop", "noop_trim", "reply", "jwt", "jwt_cache", "ours", "ours_opaque"]
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
}
INTROSPECTION_CLUSTER = "introspection"
INTROSPECTION_ENDPOINT = "http://auth.example.com/introspect"
# Per introspecting worker: below the flood's connections, so the flood meets the bound.
OPAQUE_MAX_IN_FLIGHT = 16
# scenario -> (variants it runs on, token pool, path, expected status per variant). The hot
# scenario's pool for ours_opaque is "opaque_hot" (see `pool_of`): one opaque token, reused.
SCENARIOS = {
    "hot": ([v for v in VARIANTS if v != "reply"], "hot", PROTECTED_PATH, {v: 200 for v in VARIANTS}),
    "cold": ([v for v in VARIANTS if v not in ("noop_trim", "reply", "ours_opaque")], "cold", PROTECTED_PATH,
             {v: 200 for v in VARIANTS}),
    "forged": ([v for v in VARIANTS if v not in ("noop_trim", "reply", "ours_opaque")], "forged", PROTECTED_PATH,
               {"none": 200, "noop": 200, "jwt": 401, "jwt_cache": 401, "ours": 401}),
    "noauth": ([v for v in VARIANTS if v != "ours_opaque"], None, PROTECTED_PATH,
               {"none": 200, "noop": 200, "noop_trim": 200, "reply": 401, "jwt": 401, "jwt_cache": 401, "ours": 401}),
    "metadata": (FLOORS + ["reply", "ours"], None, METADATA_PATH,
                 {"none": 200, "noop": 200, "noop_trim": 200, "reply": 200, "ours": 200}),
}


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
        "ours_opaque": lambda: [wasm_filter(plugin_config_opaque(jwks), name="mcp_oauth_opaque", wasm_path=OURS_WASM)],
    }[variant]()


def bench_listener(name: str, filters: list[dict]) -> dict:
    """A listener named `name` (its stat prefix too) with `filters` and the direct response."""
    return listener(name, filters, routes=[direct_response_route("ok")])


def bootstrap_of(listeners: list[dict], clusters: list[dict] = ()) -> dict:
    """Admin and `listeners` on 127.0.0.1, ports chosen by the OS; no upstream (the routes answer
    themselves), only `clusters` for the filter's own calls."""
    return {"admin": {"address": socket_address("127.0.0.1", 0)},
            "static_resources": {"listeners": listeners, **({"clusters": list(clusters)} if clusters else {})}}


def bootstrap(variants: list[str], introspection_cluster: dict | None = None) -> dict:
    """A listener per variant, named after it; ours_opaque needs `introspection_cluster`."""
    clusters = [introspection_cluster] if introspection_cluster and "ours_opaque" in variants else []
    return bootstrap_of([bench_listener(v, variant_filters(v)) for v in variants], clusters)


def trim_noop() -> None:
    """NOOP_TRIM_WASM: the no-op module with the exports tools/trim_exports.py keeps for ours."""
    CACHE.mkdir(exist_ok=True)
    trim_exports(NOOP_WASM, out=NOOP_TRIM_WASM)


def start_envoy(bootstrap_config: dict) -> Envoy:
    """One Envoy worker on `bootstrap_config`, ready: `envoy.ports[variant]`."""
    return Envoy(bootstrap=bootstrap_config, concurrency=1, log_level="warning").start(timeout=60)


def answer(port: int, path: str, token: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers (without the ones Envoy adds: date, server) and body of one request."""
    reply = Client(port, timeout=5).request("GET", path, token=token)
    return reply.status, [(n, v) for n, v in reply.headers if n not in ("date", "server")], reply.body


def probe(port: int, path: str, token: str | None) -> int:
    return answer(port, path, token)[0]


def same_answers(ports: dict[str, int]) -> list[str]:
    """Where the local-reply floor does not answer exactly as ours (a stale REPLIES)."""
    problems = []
    for path in (PROTECTED_PATH, METADATA_PATH):
        ours, floor = answer(ports["ours"], path), answer(ports["reply"], path)
        if ours != floor:
            problems.append(f"{path}: ours {ours!r} != local-reply floor {floor!r}")
    return problems
