#!/usr/bin/env python3
"""`make bench`: throughput, latency and memory of mcp-oauth-filter against its floors and Envoy's
native jwt_authn, all in ONE Envoy (`--concurrency 1`), one listener per variant, every listener
with the same direct-response route (200 "ok"). Reports numbers; asserts nothing but that it ran.

Variants (listeners):  none | noop (bench/noop, the floor of any wasm filter) | noop_trim (the same
module with its exports trimmed like ours, see tools/trim_exports.py; hot, noauth and metadata
only) | reply (the same trimmed module given our 401 and metadata responses: reads `:path` and
sends the matching one, the least any filter that answers a request itself costs; noauth and
metadata only) | jwt (jwt_authn, default config) | jwt_cache (jwt_authn + jwt_cache_config) |
ours (the filter under test).

Scenarios: hot (one valid RS256 token reused), cold (a distinct valid RS256 token per request),
forged (distinct tokens with random signatures), noauth (no Authorization header: 401 from
ours, reply and jwt_authn, 200 from none/noop), metadata (GET /.well-known/oauth-protected-resource/mcp;
ours and reply answer it, none/noop answer "ok"). Rounds are interleaved (round r runs every scenario on
every variant, variant order rotated), and every number reported is a median over rounds, so
load from other processes on the machine hits all variants alike: read the ratios, not the
absolute numbers.

Then a memory check on a separate Envoy with only our filter: memory after 10k distinct valid
tokens vs after many more (up to --mem-tokens, within --mem-seconds).

    .venv/bin/python bench/bench.py [--rounds 3] [--duration 4] [--connections 4] [--quick]

Writes bench/results.md, bench/results.json, bench/results.svg (when matplotlib is present) and
prints the table. Token pools are cached in bench/.cache (minted once, valid 30 days).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness import tokens as tk  # noqa: E402  (fixture keys and the JWS minting code)
from harness.envoy import find_envoy_binary  # noqa: E402

CACHE = BENCH / ".cache"
WRK_SCRIPT = BENCH / "wrk_tokens.lua"
OURS_WASM = REPO / "target/wasm32-wasip1/release/mcp_oauth_filter.wasm"
NOOP_WASM = BENCH / "noop/target/wasm32-wasip1/release/bench_noop.wasm"
NOOP_TRIM_WASM = BENCH / ".cache/bench_noop_trimmed.wasm"  # written from NOOP_WASM at start

ISSUER = "https://auth.example.com"
RESOURCE = "https://mcp.example.com/mcp"
PROTECTED_PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"
TOKEN_LIFETIME = 30 * 24 * 3600  # pools are reused across runs while they stay valid

VARIANTS = ["none", "noop", "noop_trim", "reply", "jwt", "jwt_cache", "ours"]
FLOORS = ["none", "noop", "noop_trim"]
LABELS = {
    "none": "no filter",
    "noop": "no-op wasm",
    "noop_trim": "no-op wasm, trimmed exports",
    "reply": "local-reply wasm floor",
    "jwt": "jwt_authn",
    "jwt_cache": "jwt_authn+cache",
    "ours": "mcp-oauth-filter",
}
# scenario -> (variants it runs on, token pool, path, expected status per variant)
SCENARIOS = {
    "hot": ([v for v in VARIANTS if v != "reply"], "hot", PROTECTED_PATH, {v: 200 for v in VARIANTS}),
    "cold": ([v for v in VARIANTS if v not in ("noop_trim", "reply")], "cold", PROTECTED_PATH,
             {v: 200 for v in VARIANTS}),
    "forged": ([v for v in VARIANTS if v not in ("noop_trim", "reply")], "forged", PROTECTED_PATH,
               {"none": 200, "noop": 200, "jwt": 401, "jwt_cache": 401, "ours": 401}),
    "noauth": (VARIANTS, None, PROTECTED_PATH,
               {"none": 200, "noop": 200, "noop_trim": 200, "reply": 401, "jwt": 401, "jwt_cache": 401, "ours": 401}),
    "metadata": (FLOORS + ["reply", "ours"], None, METADATA_PATH,
                 {"none": 200, "noop": 200, "noop_trim": 200, "reply": 200, "ours": 200}),
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------ token pools

def _claims(i: int, prefix: str) -> dict:
    now = tk.now()
    return {
        "iss": ISSUER,
        "aud": RESOURCE,
        "sub": f"{prefix}-user-{i}",
        "scope": "mcp:read",
        "iat": now,
        "exp": now + TOKEN_LIFETIME,
        "jti": f"{prefix}-{i}-{now}",
    }


def _mint_chunk(job: tuple[str, str, int, int]) -> list[str]:
    kind, key, start, stop = job
    alg = tk.DEFAULT_ALG[key]
    sig_len = len(tk.sign(alg, key, b"length")) if kind == "forged" else 0
    out = []
    for i in range(start, stop):
        if kind == "forged":
            # Valid-looking: right header, right claims, a signature of the right length that is
            # random bytes (so distinct, and never valid).
            head = tk.b64url(tk.compact_json({"alg": alg, "typ": "JWT", "kid": key}))
            body = tk.b64url(tk.compact_json(_claims(i, "forged")))
            out.append(f"{head}.{body}.{tk.b64url(os.urandom(sig_len))}")
        else:
            out.append(tk.mint(_claims(i, kind), key=key))
    return out


class Pool:
    """A token file (one a line) and the byte offset of each line, for wrk's start offset."""

    def __init__(self, path: Path):
        self.path = path
        self.offsets = []
        pos = 0
        with open(path, "rb") as f:
            for line in f:
                self.offsets.append(pos)
                pos += len(line)
        self.cursor = 0  # next unused line

    def __len__(self) -> int:
        return len(self.offsets)

    def take(self, expected: int) -> int:
        """Byte offset where the next run starts; the cursor is advanced by `expected` afterwards
        by the caller (advance())."""
        return self.offsets[self.cursor % len(self)]

    def advance(self, used: int) -> bool:
        """Move past `used` lines; False when the pool wrapped (tokens were reused)."""
        self.cursor += used
        return self.cursor <= len(self)


def token_pool(kind: str, key: str, count: int, workers: int, grow: bool = False) -> Pool:
    """bench/.cache/<kind>-<key>-<count>.txt, minted (in parallel) unless a fresh one exists.
    With `grow`, the file is bench/.cache/<kind>-<key>.txt and is only ever extended (by minting
    the missing tokens) until it holds `count`: the memory check's pool builds up across runs."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / (f"{kind}-{key}.txt" if grow else f"{kind}-{key}-{count}.txt")
    meta = path.with_suffix(".json")
    have = 0
    if path.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("exp", 0) > tk.now() + 24 * 3600:
            have = info.get("count", 0)
            if have == count or (grow and have >= count):
                return Pool(path)
    if not grow:
        have = 0
    log(f"minting {count - have} {kind} tokens ({key}) with {workers} processes ...")
    t0 = time.monotonic()
    chunk = 2000
    jobs = [(kind, key, s, min(s + chunk, count)) for s in range(have, count, chunk)]
    tmp = path.with_suffix(".tmp")
    if have:
        shutil.copyfile(path, tmp)
    with open(tmp, "a" if have else "w") as f, multiprocessing.Pool(workers) as mp:
        for part in mp.imap(_mint_chunk, jobs):
            f.write("\n".join(part) + "\n")
    tmp.replace(path)
    old_exp = json.loads(meta.read_text()).get("exp") if have else None
    exp = tk.now() + TOKEN_LIFETIME - 3600
    meta.write_text(json.dumps({"count": count, "exp": min(exp, old_exp) if old_exp else exp}))
    log(f"  minted in {time.monotonic() - t0:.1f}s -> {path.relative_to(REPO)}")
    return Pool(path)


# ----------------------------------------------------------------------------------- envoy

def _addr(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _wasm_filter(name: str, wasm: Path, config: str) -> dict:
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": "",
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config},
                "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(wasm)}}},
                "fail_open": False,
            },
        },
    }


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


def plugin_config(jwks: dict) -> dict:
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


def _listener(name: str, filters: list[dict]) -> dict:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "AUTO",
        "route_config": {
            "name": "direct",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}],
                }
            ],
        },
        "http_filters": filters
        + [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "name": name,
        "address": _addr(0),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def bootstrap(variants: list[str]) -> dict:
    jwks = tk.fixture_jwks()
    ours = json.dumps(plugin_config(jwks))
    filters = {
        "none": [],
        "noop": [_wasm_filter("bench_noop", NOOP_WASM, "")],
        "noop_trim": [_wasm_filter("bench_noop_trim", NOOP_TRIM_WASM, "")],
        "reply": [_wasm_filter("bench_reply", NOOP_TRIM_WASM, reply_rules())],
        "jwt": [_jwt_filter(jwks, cached=False)],
        "jwt_cache": [_jwt_filter(jwks, cached=True)],
        "ours": [_wasm_filter("mcp_oauth", OURS_WASM, ours)],
    }
    return {
        "admin": {"address": _addr(0)},
        "static_resources": {"listeners": [_listener(v, filters[v]) for v in variants]},
    }


class EnvoyProc:
    def __init__(self, variants: list[str], tag: str):
        self.variants = variants
        self.dir = Path(tempfile.mkdtemp(prefix=f"mcp-oauth-bench-{tag}-"))
        self.proc: subprocess.Popen | None = None
        self.admin_port = None
        self.ports: dict[str, int] = {}

    def start(self) -> "EnvoyProc":
        import yaml

        cfg = self.dir / "envoy.yaml"
        cfg.write_text(yaml.safe_dump(bootstrap(self.variants), sort_keys=False))
        admin_file = self.dir / "admin"
        self.log_path = self.dir / "envoy.log"
        self.proc = subprocess.Popen(
            [find_envoy_binary(), "-c", str(cfg), "--concurrency", "1", "--use-dynamic-base-id",
             "--admin-address-path", str(admin_file), "-l", "warning", "--log-path", str(self.log_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.admin_port is None and admin_file.exists() and admin_file.read_text().strip():
                    self.admin_port = int(admin_file.read_text().strip().rsplit(":", 1)[1])
                if self.admin_port and self.admin("/ready")[0] == 200:
                    listeners = json.loads(self.admin("/listeners?format=json")[1])["listener_statuses"]
                    self.ports = {l["name"]: l["local_address"]["socket_address"]["port_value"] for l in listeners}
                    if all(self.ports.get(v) for v in self.variants):
                        return self
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("envoy not ready in 60s")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def admin(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def memory(self) -> dict:
        """Envoy heap (tcmalloc, admin /memory), process RSS, and the RSS of V8's wasm memory
        reservations (mappings of >= 4 GiB in /proc/PID/smaps: each wasm instance's linear memory
        sits in such a guard-page reservation, so their Rss is the wasm VMs' touched memory)."""
        out = {}
        status, body = self.admin("/memory")
        if status == 200:
            m = json.loads(body)
            out["allocated"] = int(m.get("allocated", 0))
            out["heap_size"] = int(m.get("heap_size", 0))
        pid = self.proc.pid
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss"] = int(line.split()[1]) * 1024
        # smaps: a header line per mapping ("start-end perms ..."), then "Key: value kB" lines.
        vmas = []
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(None, 2)
                if head and "-" in head[0] and not head[0].endswith(":"):
                    start, end = (int(x, 16) for x in head[0].split("-"))
                    vmas.append({"start": start, "end": end, "perms": head[1], "rss": 0})
                elif line.startswith("Rss:") and vmas:
                    vmas[-1]["rss"] = int(line.split()[1]) * 1024
        regions = []  # (accessible size, rss) per wasm linear memory
        for a, b in zip(vmas, vmas[1:]):
            if a["perms"].startswith("rw") and a["end"] == b["start"] and b["perms"].startswith("---") \
                    and b["end"] - b["start"] >= 4 << 30:
                regions.append((a["end"] - a["start"], a["rss"]))
        regions.sort(reverse=True)
        out["wasm_sizes"] = [r[0] for r in regions]
        out["wasm_size"] = sum(r[0] for r in regions)
        regions = [r[1] for r in regions]
        out["wasm_regions"] = sorted(regions, reverse=True)
        out["wasm_rss"] = sum(regions)
        return out

    def cpu_ns(self) -> int:
        """CPU time Envoy's threads have used so far (sum of /proc/PID/task/*/schedstat, ns)."""
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return total

    def stats(self, regex: str) -> dict[str, int]:
        status, body = self.admin(f"/stats?filter={regex}")
        out = {}
        for line in body.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[name.strip()] = int(value)
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def probe(port: int, path: str, token: str | None) -> int:
    return answer(port, path, token)[0]


def answer(port: int, path: str, token: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers (without the ones Envoy adds: date, server) and body of one request."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status, headers, body = r.status, r.headers.items(), r.read()
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, e.headers.items(), e.read()
    return status, [(n.lower(), v) for n, v in headers if n.lower() not in ("date", "server")], body


def same_answers(ports: dict[str, int]) -> list[str]:
    """Where the local-reply floor does not answer exactly as ours (a stale REPLIES)."""
    problems = []
    for path in (PROTECTED_PATH, METADATA_PATH):
        ours, floor = answer(ports["ours"], path), answer(ports["reply"], path)
        if ours != floor:
            problems.append(f"{path}: ours {ours!r} != local-reply floor {floor!r}")
    return problems


# -------------------------------------------------------------------------------------- wrk

def run_wrk(port: int, path: str, pool: Pool | None, duration: float, connections: int,
            envoy: "EnvoyProc | None" = None) -> dict:
    offset = pool.take(0) if pool else 0
    cpu0 = envoy.cpu_ns() if envoy else 0
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "-s", str(WRK_SCRIPT),
           f"http://127.0.0.1:{port}", "--", str(pool.path) if pool else "-", path, str(offset)]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=duration + 60)
    m = re.search(r"^BENCH_JSON (\{.*\})$", res.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no result ({res.returncode}):\n{res.stdout}")
    out = json.loads(m.group(1))
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    if envoy:
        # Envoy's CPU per request: what the request cost, nearly independent of how much CPU
        # other processes on the machine left to Envoy (unlike requests/s).
        out["cpu_us"] = (envoy.cpu_ns() - cpu0) / 1e3 / max(out["requests"], 1)
    if pool:
        out["fresh"] = pool.advance(out["requests"] + connections)
    return out


# ---------------------------------------------------------------------------------- reports

def median(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_bytes(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


def summarize(raw: dict) -> dict:
    """Medians over rounds per (scenario, variant)."""
    out = {}
    for scen, per_var in raw.items():
        out[scen] = {}
        for var, runs in per_var.items():
            out[scen][var] = {
                "rps": median([r["rps"] for r in runs]),
                "cpu_us": median([r["cpu_us"] for r in runs if "cpu_us" in r]),
                "p50_ms": median([r["p50_us"] for r in runs]) / 1000,
                "p99_ms": median([r["p99_us"] for r in runs]) / 1000,
                "rounds": len(runs),
                "rps_all": [round(r["rps"]) for r in runs],
                "errors_status": sum(r["errors_status"] for r in runs),
                "errors_other": sum(r["errors_connect"] + r["errors_read"] + r["errors_write"] + r["errors_timeout"] for r in runs),
                "requests": sum(r["requests"] for r in runs),
                "tokens_reused": scen in ("cold", "forged") and var in ("jwt_cache", "ours") and any(not r.get("fresh", True) for r in runs),
            }
    return out


TARGETS = [
    # (scenario, reference variant, target, stretch, label[, measured variant: ours if absent])
    ("hot", "noop", 0.95, None, "hot ÷ no-op floor"),
    ("hot", "noop_trim", None, None, "hot ÷ no-op, trimmed exports"),
    ("hot", "jwt", 1.5, None, "hot ÷ jwt_authn"),
    ("hot", "jwt_cache", None, None, "hot ÷ jwt_authn+cache"),
    ("cold", "jwt", 0.25, 0.5, "cold ÷ jwt_authn"),
    ("cold", "jwt_cache", None, None, "cold ÷ jwt_authn+cache"),
    ("cold", "noop", None, None, "cold ÷ no-op floor"),
    ("forged", "jwt", 0.25, 0.5, "forged ÷ jwt_authn"),
    ("forged", "jwt_cache", None, None, "forged ÷ jwt_authn+cache"),
    ("forged", "noop", None, None, "forged ÷ no-op floor"),
    ("noauth", "noop", 0.95, None, "401 ÷ no-op floor"),
    ("noauth", "noop_trim", None, None, "401 ÷ no-op, trimmed exports"),
    ("noauth", "reply", None, None, "401 ÷ local-reply wasm floor"),
    ("noauth", "jwt", None, None, "401 ÷ jwt_authn"),
    ("metadata", "noop", 0.95, None, "metadata ÷ no-op floor"),
    ("metadata", "noop_trim", None, None, "metadata ÷ no-op, trimmed exports"),
    ("metadata", "reply", None, None, "metadata ÷ local-reply wasm floor"),
    # Where the floor itself stands: the least a 401 or metadata answer from wasm costs.
    ("noauth", "noop", None, None, "local-reply floor's 401 ÷ no-op floor", "reply"),
    ("metadata", "noop", None, None, "local-reply floor's metadata ÷ no-op floor", "reply"),
]


def ratios(raw: dict) -> list[dict]:
    """Per round, ours ÷ reference (runs of the same round are seconds apart, so they saw the
    same machine load); then the median over rounds. Two measures: requests/s, and Envoy CPU
    per request (reference ÷ ours, so > 1 means ours is cheaper), the robust one on a busy box."""
    rows = []
    for scen, ref, target, stretch, label, *measured in TARGETS:
        subject = measured[0] if measured else "ours"
        if scen not in raw or not raw[scen].get(subject) or not raw[scen].get(ref):
            continue
        pairs = list(zip(raw[scen][subject], raw[scen][ref]))
        r = median([o["rps"] / f["rps"] for o, f in pairs])
        c = median([f["cpu_us"] / o["cpu_us"] for o, f in pairs if o.get("cpu_us") and f.get("cpu_us")])

        def judge(x: float) -> str:
            if target is None:
                return ""
            return verdict(x, target) + (" (stretch PASS)" if stretch is not None and x >= stretch else "")

        rows.append({"label": label, "ratio": r, "cpu_ratio": c, "target": target, "stretch": stretch,
                     "status": judge(r), "cpu_status": judge(c)})
    return rows


def render_markdown(meta: dict, summary: dict, ratio_rows: list[dict], memory: dict, memcheck: dict) -> str:
    L = []
    L.append("# mcp-oauth-filter benchmark\n")
    L.append(f"- Date: {meta['date']}")
    L.append(f"- Envoy: {meta['envoy_version']}, `--concurrency 1`, V8 wasm runtime; one listener per variant, "
             "all with the same `direct_response` route (200 \"ok\").")
    L.append(f"- Machine: {meta['machine']}. Shared with other jobs: absolute numbers are noise, "
             "**read the ratios** (all variants run interleaved in the same rounds).")
    L.append(f"- Load: wrk, 1 thread, {meta['connections']} connections, {meta['duration']} s per run, "
             f"{meta['rounds']} rounds (variant order rotated each round); numbers are medians over rounds.")
    L.append(f"- `.wasm` sizes: ours {meta['wasm_size_ours']:,} bytes; no-op {meta['wasm_size_noop']:,} bytes.")
    L.append(f"- Tokens: RS256, fixture key `rsa-a` (2048-bit, kid `rsa-a`); cold pool {meta['cold_pool']:,} distinct, "
             f"forged pool {meta['forged_pool']:,} distinct (random 256-byte signatures).")
    L.append(f"- Command: `{meta['command']}`\n")

    L.append("## Ratios: ours ÷ reference\n")
    L.append("Median over rounds of the per-round ratio. **req/s**: ours' requests/s ÷ the reference's "
             "(the targets' definition). **CPU**: the reference's Envoy CPU time per request ÷ ours "
             "(same direction: > 1× means ours is cheaper); it barely depends on what else runs on the "
             "machine, so trust it when the two disagree on a busy machine. The last two rows measure the "
             "local-reply floor, not ours: where the least any wasm answer costs stands against the no-op.\n")
    L.append("| ratio | req/s | result | CPU/request | result | target |")
    L.append("|---|---:|---|---:|---|---:|")
    for r in ratio_rows:
        tgt = "" if r["target"] is None else f"≥ {r['target']}×" + (f" (stretch {r['stretch']}×)" if r["stretch"] else "")
        L.append(f"| {r['label']} | {r['ratio']:.2f}× | {r['status']} | {r['cpu_ratio']:.2f}× | {r['cpu_status']} | {tgt} |")
    if memcheck:
        L.append(f"| wasm linear memory after {memcheck['large_n']:,} distinct tokens vs after {memcheck['small_n']:,} "
                 f"| {fmt_bytes(memcheck['large']['wasm_size'])} vs {fmt_bytes(memcheck['small']['wasm_size'])} "
                 f"| {memcheck['status']} | | | not larger |")
    L.append("")

    L.append("## Throughput and latency\n")
    L.append("| scenario | variant | req/s (median) | Envoy CPU µs/req | p50 ms | p99 ms | statuses | runs req/s |")
    L.append("|---|---|---:|---:|---:|---:|---|---|")
    for scen, per_var in summary.items():
        for var, s in per_var.items():
            exp = SCENARIOS[scen][3][var]
            if exp == 200:
                st = "200" if s["errors_status"] == 0 else f"200 ({s['errors_status']} non-2xx!)"
            else:
                st = f"{exp}" if s["errors_status"] == s["requests"] else f"{exp}? ({s['errors_status']}/{s['requests']} non-2xx)"
            if s["errors_other"]:
                st += f", {s['errors_other']} socket errors"
            if s["tokens_reused"]:
                st += ", pool wrapped"
            L.append(f"| {scen} | {LABELS[var]} | {s['rps']:,.0f} | {s['cpu_us']:.1f} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | {st} | {s['rps_all']} |")
    L.append("")

    L.append("## Memory after each scenario (main Envoy, after the last round)\n")
    L.append("| after | wasm linear memories: total size (each) | their RSS | Envoy heap (tcmalloc) | process RSS |")
    L.append("|---|---|---:|---:|---:|")
    for scen, m in memory.items():
        each = ", ".join(f"{x / (1 << 20):.1f}" for x in m["wasm_sizes"])
        L.append(f"| {scen} | {fmt_bytes(m['wasm_size'])} ({each}) | {fmt_bytes(m['wasm_rss'])} | "
                 f"{fmt_bytes(m.get('allocated', 0))} | {fmt_bytes(m['rss'])} |")
    L.append("")
    if memcheck:
        L.append("## Memory check: distinct valid tokens (separate Envoy, our filter only)\n")
        short = memcheck["large_n"] < memcheck["target_n"]
        L.append(f"Distinct valid tokens signed by fixture key `{memcheck['key']}` ({memcheck['alg']}: the fastest "
                 "fixture key to mint; a verified-token cache does not care which algorithm signed), sent with wrk "
                 f"as fast as the filter takes them. Target {memcheck['target_n']:,} tokens within "
                 f"{memcheck['budget_s']:.0f} s: **{memcheck['large_n']:,} were sent** "
                 f"({memcheck['large_rps']:,.0f} req/s"
                 + (f"; {memcheck['target_n']:,} would take ~{memcheck['target_n'] / max(memcheck['large_rps'], 1) / 60:.0f} min "
                    f"at this rate, so the pool was sized to what the budget allows: rate × budget, "
                    f"rounded up)." if short else ").") + "\n")
        L.append("| point | distinct tokens | wasm linear memory (size) | its RSS | Envoy heap | process RSS | counters |")
        L.append("|---|---:|---:|---:|---:|---:|---|")
        for m in memcheck["snaps"]:
            L.append(f"| {m['label']} | {m['n']:,} | {fmt_bytes(m['wasm_size'])} | {fmt_bytes(m['wasm_rss'])} | "
                     f"{fmt_bytes(m.get('allocated', 0))} | {fmt_bytes(m['rss'])} | {m.get('counters', '')} |")
        L.append("")
    L.append("## How memory is measured (and the limits)\n")
    L.append(
        "- **wasm linear memory**: V8 places each wasm instance's linear memory at the start of its own "
        "8 GiB guard reservation; in `/proc/<envoy>/smaps` that is a `rw-p` mapping immediately followed "
        "by a `---p` mapping of ≥ 4 GiB. The bench reports the size of each such `rw-p` mapping (= the "
        "instance's linear memory, i.e. what `memory.grow` gave it) and its `Rss` (pages touched). "
        "Linear memory only grows (wasm has no `memory.shrink`) and freed pages stay with the "
        "instance, so this is the high-water mark of the VM's heap: exactly what a bounded cache must "
        "keep flat (the `PASS/MISS` compares sizes). Limits: it relies on V8's layout (not an API); it "
        "does not count V8's own heap and compiled code (in process RSS). Envoy runs one VM per worker plus one on "
        "the main thread per plugin, so the main Envoy lists several regions (ours and the no-op's; the "
        "no-op's stay at a few hundred KiB); the memory check runs a separate Envoy with only our "
        "filter, so its regions are ours alone.\n"
        "- **Envoy heap**: admin `/memory` `allocated` (tcmalloc; `server.memory_allocated` in `/stats`). "
        "It does not include wasm linear memory (V8 maps it directly), only Envoy's own structures "
        "(jwt_authn's cache lives here).\n"
        "- **process RSS**: `VmRSS` of the Envoy process: everything, including V8 code and heaps.\n"
        "- Envoy exposes no per-VM memory stat for V8 (only `wasm.envoy.wasm.runtime.v8.*` VM counts).\n"
    )
    L.append("## Notes\n")
    L.append(
        "- jwt_authn is configured with the same JWKS (inline `local_jwks`), issuer and audience; it does not "
        "check scopes (ours requires `mcp:read`), and with the `requires` rule it also answers 401 to a "
        "request without a token (\"Jwt is missing\"), without the MCP `resource_metadata` challenge.\n"
        "- `none`/`noop` answer 200 to every scenario (they check nothing): they are floors, the cost of the "
        "request itself and of entering a wasm VM. In the 401 and metadata scenarios the no-op's one header "
        "read finds nothing (no `authorization`), so nothing is copied into the VM: a floor below any filter "
        "that must read the path.\n"
        "- `local-reply wasm floor` is the trimmed no-op module configured with ours' two answers: it reads "
        "`:path` and sends the matching one (checked byte for byte against ours before measuring), and "
        "decides nothing. It is the least any proxy-wasm filter that answers a request itself costs; ours "
        "÷ it is the price of ours' deciding.\n"
        "- Ours is built with `make build`, which trims the module's exports to the proxy-wasm callbacks it "
        "implements (`tools/trim_exports.py`): Envoy then skips the VM entries for response headers, "
        "response body, on_log and on_done that the SDK's default exports cost every request. The no-op "
        "floor keeps the SDK's default exports (what a typical Rust filter ships); `no-op wasm, trimmed "
        "exports` is the same no-op with the same trim, the floor for a filter that does this too.\n"
        "- Cold: each (variant, round) continues where the previous run on that variant stopped in the "
        "pool, so a caching variant never sees a token twice unless the table says `pool wrapped` "
        "(then tokens repeat after the pool size; jwt_authn's cache of 1000 entries cannot keep them).\n"
        "- Requests are `GET /mcp` (metadata: `GET " + METADATA_PATH + "`), HTTP/1.1 keep-alive.\n"
    )
    return "\n".join(L)


def render_chart(summary: dict, ratio_rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no chart")
        return False
    scens = list(summary)
    colors = {"none": "#bbbbbb", "noop": "#7f7f7f", "noop_trim": "#c7b299", "reply": "#8c564b",
              "jwt": "#1f77b4", "jwt_cache": "#9ecae1", "ours": "#d62728"}
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(19, 6), gridspec_kw={"width_ratios": [3, 3, 2.4]})
    width = 0.12
    for ax, key, title, ylabel in (
        (ax1, "rps", "Throughput (higher is better)", "requests/s (median, 1 Envoy worker)"),
        (ax3, "cpu_us", "Envoy CPU per request (lower is better)", "µs of Envoy CPU / request (median)"),
    ):
        for i, var in enumerate(VARIANTS):
            xs, ys = [], []
            for j, scen in enumerate(scens):
                if var in summary[scen]:
                    xs.append(j + (i - (len(VARIANTS) - 1) / 2) * width)
                    ys.append(summary[scen][var][key])
            ax.bar(xs, ys, width, label=LABELS[var], color=colors[var])
        ax.set_xticks(range(len(scens)))
        ax.set_xticklabels(scens)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    rows = [r for r in ratio_rows if r["target"] is not None]
    h = 0.38
    for k, (key, name, alpha) in enumerate((("ratio", "req/s", 1.0), ("cpu_ratio", "CPU/request", 0.55))):
        ys = [y + (k - 0.5) * h for y in range(len(rows))]
        vals = [r[key] for r in rows]
        cols = ["#2ca02c" if v >= r["target"] else "#d62728" for v, r in zip(vals, rows)]
        ax2.barh(ys, vals, h, color=cols, alpha=alpha, label=name)
        for y, v in zip(ys, vals):
            ax2.text(v, y, f" {v:.2f}× {name}", va="center", fontsize=7)
    for y, r in enumerate(rows):
        ax2.plot([r["target"], r["target"]], [y - 0.45, y + 0.45], color="black", lw=2)
    ax2.set_yticks(range(len(rows)))
    ax2.set_yticklabels([r["label"] for r in rows], fontsize=8)
    ax2.invert_yaxis()
    ax2.set_title("Ours ÷ reference vs target (black tick)\ngreen PASS, red MISS; solid req/s, pale CPU/request")
    ax2.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# -------------------------------------------------------------------------------------- main

def memory_check(args, workers: int, expected_rps: float | None) -> dict:
    """A separate Envoy with only our filter: snapshots of its memory after 1 token, after 10k
    distinct valid tokens, then after each further wrk run until the pool or the time is spent."""
    small_n = 10_000
    pool = token_pool("mem", args.mem_key, small_n + 2_000, workers, grow=True)
    envoy = EnvoyProc(["ours"], "mem").start()
    snaps = []
    try:
        port = envoy.ports["ours"]
        first = open(pool.path).readline().strip()
        status = probe(port, PROTECTED_PATH, first)
        if status != 200:
            log(f"memory check: first token answered {status}, expected 200")

        def snap(n: int, label: str) -> dict:
            m = envoy.memory()
            m["n"] = n
            m["label"] = label
            c = envoy.stats("mcp_oauth_(token_cache|requests_allowed|requests_denied)")
            m["counters"] = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(c.items()))
            snaps.append(m)
            log(f"  {label}: {n:,} tokens, wasm linear memory {fmt_bytes(m['wasm_size'])} "
                f"(rss {fmt_bytes(m['wasm_rss'])}), envoy rss {fmt_bytes(m['rss'])}")
            return m

        snap(1, "start")
        sent = 1

        def send(upto: int, budget: float, label: str) -> float:
            """Send tokens [sent, upto) in wrk runs of <= 20 s until done or the budget is spent."""
            nonlocal sent
            t0 = time.monotonic()
            done_requests = 0
            while sent < upto and time.monotonic() - t0 < budget - 1:
                remaining = upto - sent
                if done_requests:
                    rate = done_requests / (time.monotonic() - t0)
                    dur = max(1, min(20, remaining / max(rate, 1) * 0.95, budget - (time.monotonic() - t0)))
                else:
                    dur = 1  # first run: measure the rate
                pool.cursor = sent
                r = run_wrk(port, PROTECTED_PATH, pool, dur, args.connections)
                sent += r["requests"] + args.connections
                done_requests += r["requests"]
                if label == "large":
                    snap(min(sent, len(pool)), f"after {min(sent, len(pool)):,}")
            return done_requests / max(time.monotonic() - t0, 1e-9)

        small_rps = send(small_n, 120, "small")
        small = snap(min(sent, len(pool)), "~10k")
        # Mint only what the filter can take in the budget at the rate just seen (the pool file
        # only grows, so later runs reuse it); minting happens while Envoy idles.
        want = min(args.mem_tokens, (int(small_rps * args.mem_seconds * 1.15) // 10_000 + 1) * 10_000)
        cursor = pool.cursor
        pool = token_pool("mem", args.mem_key, max(want, small_n + 2_000), workers, grow=True)
        pool.cursor = cursor
        limit = min(len(pool), args.mem_tokens)
        t0 = time.monotonic()
        large_rps = send(limit, args.mem_seconds, "large")
        large = snaps[-1]
        return {
            "key": args.mem_key,
            "alg": tk.DEFAULT_ALG[args.mem_key],
            "small_n": small["n"],
            "large_n": large["n"],
            "target_n": args.mem_tokens,
            "budget_s": args.mem_seconds,
            "elapsed_s": round(time.monotonic() - t0),
            "large_rps": large_rps,
            "snaps": snaps,
            "small": small,
            "large": large,
            "status": "PASS" if large["wasm_size"] <= small["wasm_size"] else "MISS",
        }
    finally:
        envoy.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per wrk run (whole seconds)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--cold-tokens", type=int, default=200_000, help="distinct RS256 tokens in the cold pool (minted once, cached)")
    ap.add_argument("--mem-tokens", type=int, default=1_000_000, help="distinct tokens for the memory check (target)")
    ap.add_argument("--mem-seconds", type=float, default=300, help="time budget for sending them")
    ap.add_argument("--mem-key", default="ed25519", help="fixture key for the memory-check tokens (fast to mint)")
    ap.add_argument("--no-memcheck", action="store_true")
    ap.add_argument("--only-memcheck", action="store_true", help="skip the throughput rounds")
    ap.add_argument("--quick", action="store_true", help="3 rounds x 1 s, 100k-token memory check in 30 s")
    ap.add_argument("--out", type=Path, default=BENCH)
    ap.add_argument("--render", type=Path, metavar="RESULTS_JSON", help="only re-render md/svg from a results.json")
    args = ap.parse_args()
    if args.render:
        d = json.loads(args.render.read_text())
        summary, rows = summarize(d["raw"]), ratios(d["raw"])
        md = render_markdown(d["meta"], summary, rows, d["memory"], d["memcheck"])
        md += f"\nTotal bench time: {d['meta']['elapsed_s']} s.\n"
        (args.out / "results.md").write_text(md)
        render_chart(summary, rows, args.out / "results.svg")
        print(md)
        return 0
    if args.quick:
        args.rounds, args.duration = 3, 1.0
        args.mem_tokens, args.mem_seconds = min(args.mem_tokens, 100_000), min(args.mem_seconds, 30)
    command = " ".join(["python", "bench/bench.py"] + sys.argv[1:])
    for f in (OURS_WASM, NOOP_WASM):
        if not f.exists():
            print(f"missing {f} (make build; cargo build in bench/noop)", file=sys.stderr)
            return 1
    sys.path.insert(0, str(REPO / "tools"))
    import trim_exports

    CACHE.mkdir(exist_ok=True)
    NOOP_TRIM_WASM.write_bytes(trim_exports.trim(NOOP_WASM.read_bytes())[0])
    if not shutil.which("wrk"):
        print("wrk missing: make bench-deps", file=sys.stderr)
        return 1
    workers = max(1, os.cpu_count() or 1)
    t_start = time.monotonic()

    pools = {
        "hot": None,
        "cold": token_pool("cold", "rsa-a", args.cold_tokens, workers),
        "forged": token_pool("forged", "rsa-a", args.cold_tokens, workers),
    }
    CACHE.mkdir(exist_ok=True)
    hot_file = CACHE / "hot.txt"
    hot_file.write_text(tk.mint(_claims(0, "hot"), key="rsa-a") + "\n")
    pools["hot"] = Pool(hot_file)
    pools["cold"].cursor = 0

    envoy_bin = find_envoy_binary()
    version = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True).stdout.strip()
    version = re.sub(r"^.*version:\s*", "", version)
    meta = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "envoy_version": version,
        "machine": f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), {platform.system()} {platform.release()}, load avg at start {os.getloadavg()[0]:.2f}",
        "connections": args.connections,
        "duration": args.duration,
        "rounds": args.rounds,
        "wasm_size_ours": OURS_WASM.stat().st_size,
        "wasm_size_noop": NOOP_WASM.stat().st_size,
        "cold_pool": len(pools["cold"]),
        "forged_pool": len(pools["forged"]),
        "command": command,
    }

    if args.only_memcheck:
        mc = memory_check(args, workers, None)
        print(json.dumps({k: v for k, v in mc.items() if k not in ("snaps", "small", "large")}, indent=1))
        return 0

    envoy = EnvoyProc(VARIANTS, "main").start()
    raw: dict = {s: {v: [] for v in SCENARIOS[s][0]} for s in SCENARIOS}
    memory: dict = {}
    cursors = {v: {"cold": 0, "forged": 0} for v in VARIANTS}
    try:
        log(f"envoy up: {envoy.ports} (admin {envoy.admin_port})")
        hot_token = hot_file.read_text().strip()
        forged_token = open(pools["forged"].path).readline().strip()
        # Sanity: each variant answers each scenario as expected (the tokens are right).
        for scen, (variants, pool_name, path, expect) in SCENARIOS.items():
            token = {"hot": hot_token, "cold": hot_token, "forged": forged_token}.get(pool_name or "", None)
            for v in variants:
                got = probe(envoy.ports[v], path, token)
                if got != expect[v]:
                    log(f"WARNING: {scen} on {v} answered {got}, expected {expect[v]}")
        for problem in same_answers(envoy.ports):
            log(f"WARNING: {problem}")
        # Warm-up: let V8 tier up the wasm code and every path get hot (hot, forged, 401, metadata).
        log("warm-up ...")
        for v in VARIANTS:
            for scen in ("hot", "noauth", "metadata"):
                if v in SCENARIOS[scen][0]:
                    run_wrk(envoy.ports[v], SCENARIOS[scen][2], pools[SCENARIOS[scen][1]] if SCENARIOS[scen][1] else None,
                            1, args.connections)
        for r in range(args.rounds):
            for scen, (variants, pool_name, path, _) in SCENARIOS.items():
                order = variants[r % len(variants):] + variants[: r % len(variants)]
                for v in order:
                    pool = pools[pool_name] if pool_name else None
                    if pool_name in ("cold", "forged"):
                        pool.cursor = cursors[v][pool_name]
                    res = run_wrk(envoy.ports[v], path, pool, args.duration, args.connections, envoy)
                    if pool_name in ("cold", "forged"):
                        cursors[v][pool_name] = pool.cursor
                    raw[scen][v].append(res)
                memory[scen] = envoy.memory()
                log(f"round {r + 1}/{args.rounds} {scen:8s} " + "  ".join(
                    f"{v}={raw[scen][v][-1]['rps']:,.0f}" for v in variants))
        log("ours counters: " + json.dumps(envoy.stats("mcp_oauth")))
    finally:
        envoy.stop()

    memcheck = {}
    if not args.no_memcheck:
        log(f"memory check: up to {args.mem_tokens:,} distinct {args.mem_key} tokens within {args.mem_seconds:.0f}s ...")
        expected = None
        if args.mem_key == "rsa-a" and raw["cold"]["ours"]:
            expected = median([r["rps"] for r in raw["cold"]["ours"]])
        memcheck = memory_check(args, workers, expected)

    summary = summarize(raw)
    ratio_rows = ratios(raw)
    meta["elapsed_s"] = round(time.monotonic() - t_start)
    md = render_markdown(meta, summary, ratio_rows, memory, memcheck)
    md += f"\nTotal bench time: {meta['elapsed_s']} s.\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(md)
    (args.out / "results.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "ratios": ratio_rows, "memory": memory, "memcheck": memcheck, "raw": raw},
        indent=1))
    charted = render_chart(summary, ratio_rows, args.out / "results.svg")
    print()
    print(md)
    print(f"written: {args.out / 'results.md'}, results.json" + (", results.svg" if charted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
