#!/usr/bin/env python3
"""`make bench`: throughput, latency and memory of mcp-oauth-filter against its floors and Envoy's
native jwt_authn, all in ONE Envoy (`--concurrency 1`), one listener per variant, every listener
with the same direct-response route (200 "ok"). Reports numbers; asserts nothing but that it ran.

Variants (listeners):  none | noop (bench/noop, the floor of any wasm filter) | noop_trim (the same
module with its exports trimmed like ours, see tools/trim_exports.py; hot, noauth and metadata
only) | reply (the same trimmed module given our 401 and metadata responses: reads `:path` and
sends the matching one, the least any filter that answers a request itself costs; noauth and
metadata only) | jwt (jwt_authn, default config) | jwt_cache (jwt_authn + jwt_cache_config) |
ours (the filter under test) | ours_opaque (the same, its issuer also introspecting opaque tokens
at bench/introspection_stub.py; hot only) | ours_tools, ours_tools_off, ours_tools_sse,
ours_tools_sse_off (ours with `tool_scopes` reserving 10 of a 50-tool list to mcp:admin,
`filter_tools_list` on / off, the route answering that list as application/json or as one
text/event-stream event; tools_list only).

Scenarios: hot (one valid RS256 token reused; for ours_opaque one opaque token, introspected once
and then answered from the introspection cache), cold (a distinct valid RS256 token per request),
forged (distinct tokens with random signatures), noauth (no Authorization header: 401 from
ours, reply and jwt_authn, 200 from none/noop), metadata (GET /.well-known/oauth-protected-resource/mcp;
ours and reply answer it, none/noop answer "ok"), tools_list (POST /mcp of a JSON-RPC `tools/list`
call with the hot token, which lacks mcp:admin: the filtering variants hide 10 of the 50 tools,
the pass-through ones answer all 50; checked before measuring). Rounds are interleaved (round r runs every scenario on
every variant, variant order rotated), and every number reported is a median over rounds, so
load from other processes on the machine hits all variants alike: read the ratios, not the
absolute numbers.

Then the opaque-token flood on the same Envoy: distinct random opaque tokens to ours_opaque
(`max_in_flight` 16) with 4 and with 64 connections, counting the calls the introspection
endpoint gets per second and how the requests were answered (401 inactive, 503 busy).

Then a memory check on a separate Envoy with only our filter: memory after 10k distinct valid
tokens vs after many more (up to --mem-tokens, within --mem-seconds).

    .venv/bin/python bench/bench.py [--rounds 3] [--duration 4] [--connections 4] [--quick]
    .venv/bin/python bench/bench.py --quick --scenarios tools_list --out /tmp/bench-tools

`--scenarios`/`--variants` restrict the rounds (and the Envoy's listeners) to those; such a run
skips the memory check, and the flood unless ours_opaque runs.

Writes bench/results.md, bench/results.json, bench/results.svg (when matplotlib is present) and
prints the table. Token pools are cached in bench/.cache (minted once, valid 30 days).

This file runs the rounds and the memory check; what is sent is bench/load.py (token pools,
wrk), what it runs against bench/variants.py (the listeners, one Envoy from the harness), how it
reports bench/report.py.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import tokens as tk
from harness.envoy import find_envoy_binary
from introspection_stub import IntrospectionStub
from load import Pool, claims, log, opaque_pools, run_wrk, token_pool
from report import fmt_bytes, median, rerender, write_results
from variants import (BENCH, CACHE, ISSUER, NOOP_WASM, OPAQUE_MAX_IN_FLIGHT, OURS_WASM, PROTECTED_PATH, RESOURCE,
                      SCENARIOS, TOOLS_VARIANTS, VARIANTS, bootstrap, pool_of, probe, request_of, same_answers,
                      start_envoy, tools_answers, trim_noop)

FLOOD_CONNECTIONS = (4, 64)


def opaque_flood(envoy, stub: IntrospectionStub, pool: Pool, seconds: float) -> list[dict]:
    """Distinct random opaque tokens to ours_opaque, with each of FLOOD_CONNECTIONS: requests/s,
    introspection calls/s at the authorization server, and the answers by reason."""
    port = envoy.ports["ours_opaque"]
    runs = []
    for connections in FLOOD_CONNECTIONS:
        time.sleep(0.6)  # the filter's counters flush on a 200 ms tick
        calls0, stats0 = stub.count(), envoy.stats("mcp_oauth")
        res = run_wrk(port, PROTECTED_PATH, pool, seconds, connections, envoy)
        time.sleep(0.6)
        calls, stats = stub.count() - calls0, envoy.stats("mcp_oauth")

        def delta(name: str) -> int:
            return stats.get(f"mcp_oauth_{name}", 0) - stats0.get(f"mcp_oauth_{name}", 0)

        seconds_run = res["duration_us"] / 1e6
        run = {
            "connections": connections,
            "max_in_flight": OPAQUE_MAX_IN_FLIGHT,
            "requests": res["requests"],
            "rps": res["rps"],
            "cpu_us": res.get("cpu_us"),
            "p50_ms": res["p50_us"] / 1000,
            "p99_ms": res["p99_us"] / 1000,
            "as_calls": calls,
            "as_calls_per_s": calls / seconds_run,
            "inactive": delta("requests_denied_token_inactive"),
            "busy": delta("requests_denied_introspection_busy"),
            "unavailable": delta("requests_denied_introspection_unavailable"),
            "allowed": delta("requests_allowed"),
            "non_2xx": res["errors_status"],
            "fresh": res.get("fresh", True),
        }
        runs.append(run)
        log(f"flood c={connections}: {run['rps']:,.0f} req/s, {run['as_calls_per_s']:,.0f} introspection calls/s "
            f"(inactive {run['inactive']}, busy {run['busy']}, unavailable {run['unavailable']}, "
            f"allowed {run['allowed']})")
    return runs


def memory_check(args, workers: int, expected_rps: float | None) -> dict:
    """A separate Envoy with only our filter: snapshots of its memory after 1 token, after 10k
    distinct valid tokens, then after each further wrk run until the pool or the time is spent."""
    small_n = 10_000
    pool = token_pool("mem", args.mem_key, small_n + 2_000, workers, grow=True)
    envoy = start_envoy(bootstrap(["ours"]))
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


def plan_of(scenarios: str | None, variants: str | None) -> dict[str, list[str]]:
    """scenario -> the variants it runs on, restricted to the comma-separated `scenarios` and
    `variants` (None: all); scenarios left with no variant are dropped."""
    def pick(arg: str | None, known: list[str], what: str) -> list[str]:
        if not arg:
            return known
        names = [n.strip() for n in arg.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"unknown {what} {unknown}: choose from {', '.join(known)}")
        return names
    scens = pick(scenarios, list(SCENARIOS), "scenarios")
    wanted = pick(variants, VARIANTS, "variants")
    plan = {s: [v for v in SCENARIOS[s][0] if v in wanted] for s in SCENARIOS if s in scens}
    return {s: vs for s, vs in plan.items() if vs}


FILTERED_2XX = ("http.ours_tools.downstream_rq_2xx", "http.ours_tools_sse.downstream_rq_2xx")


def tools_counters(envoy) -> dict[str, int]:
    """mcp_oauth_tools_hidden and the 2xx answers of the two filtering listeners (every request,
    in flight at wrk's end too), to count the tools hidden per filtered tools/list."""
    stats = envoy.stats("mcp_oauth_tools_hidden|downstream_rq_2xx")
    return {"hidden": stats.get("mcp_oauth_tools_hidden", 0), "requests": sum(stats.get(k, 0) for k in FILTERED_2XX)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per wrk run (whole seconds)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--cold-tokens", type=int, default=200_000, help="distinct RS256 tokens in the cold pool (minted once, cached)")
    ap.add_argument("--mem-tokens", type=int, default=1_000_000, help="distinct tokens for the memory check (target)")
    ap.add_argument("--mem-seconds", type=float, default=300, help="time budget for sending them")
    ap.add_argument("--mem-key", default="ed25519", help="fixture key for the memory-check tokens (fast to mint)")
    ap.add_argument("--flood-seconds", type=float, default=5.0, help="seconds per opaque-token flood run")
    ap.add_argument("--flood-tokens", type=int, default=300_000, help="distinct random opaque tokens for the flood")
    ap.add_argument("--no-memcheck", action="store_true")
    ap.add_argument("--only-memcheck", action="store_true", help="skip the throughput rounds")
    ap.add_argument("--quick", action="store_true", help="3 rounds x 1 s, 100k-token memory check in 30 s")
    ap.add_argument("--scenarios", metavar="A,B", help=f"only these scenarios ({','.join(SCENARIOS)}); no memory check")
    ap.add_argument("--variants", metavar="A,B", help=f"only these variants ({','.join(VARIANTS)}); no memory check")
    ap.add_argument("--out", type=Path, default=BENCH)
    ap.add_argument("--render", type=Path, metavar="RESULTS_JSON", help="only re-render md/svg from a results.json")
    args = ap.parse_args()
    if args.render:
        rerender(args.render, args.out)
        return 0
    if args.quick:
        args.rounds, args.duration = 3, 1.0
        args.mem_tokens, args.mem_seconds = min(args.mem_tokens, 100_000), min(args.mem_seconds, 30)
        args.flood_seconds = min(args.flood_seconds, 2.0)
    command = " ".join(["python", "bench/bench.py"] + sys.argv[1:])
    plan = plan_of(args.scenarios, args.variants)
    if not plan:
        print("no scenario left to run on the chosen variants", file=sys.stderr)
        return 1
    restricted = bool(args.scenarios or args.variants)
    variants = [v for v in VARIANTS if any(v in vs for vs in plan.values())]
    if restricted:
        args.no_memcheck = True
    for f in (OURS_WASM, NOOP_WASM):
        if not f.exists():
            print(f"missing {f} (make build; cargo build in bench/noop)", file=sys.stderr)
            return 1
    trim_noop()
    if not shutil.which("wrk"):
        print("wrk missing: make bench-deps", file=sys.stderr)
        return 1
    workers = max(1, os.cpu_count() or 1)
    t_start = time.monotonic()

    # The cold and forged pools only when those scenarios run (minting 200k takes a while).
    pools = {kind: token_pool(kind, "rsa-a", args.cold_tokens, workers) for kind in ("cold", "forged") if kind in plan}
    CACHE.mkdir(exist_ok=True)
    hot_file = CACHE / "hot.txt"
    hot_file.write_text(tk.mint(claims(0, "hot"), key="rsa-a") + "\n")
    pools["hot"] = Pool(hot_file)
    pools["opaque_hot"], pools["opaque_random"] = opaque_pools(args.flood_tokens)
    opaque_hot = open(pools["opaque_hot"].path).readline().strip()

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
        "cold_pool": len(pools["cold"]) if "cold" in pools else 0,
        "forged_pool": len(pools["forged"]) if "forged" in pools else 0,
        "command": command,
        "scenarios": list(plan),
    }

    if args.only_memcheck:
        mc = memory_check(args, workers, None)
        print(json.dumps({k: v for k, v in mc.items() if k not in ("snaps", "small", "large")}, indent=1))
        return 0

    stub = IntrospectionStub(live={opaque_hot}, issuer=ISSUER, resource=RESOURCE).start()
    envoy = start_envoy(bootstrap(variants, stub.cluster()))
    raw: dict = {s: {v: [] for v in vs} for s, vs in plan.items()}
    memory: dict = {}
    flood: dict = {}
    tools: dict = {}
    cursors = {v: {"cold": 0, "forged": 0} for v in variants}
    try:
        log(f"envoy up: {envoy.ports} (admin {envoy.admin_port})")
        hot_token = hot_file.read_text().strip()
        forged_token = open(pools["forged"].path).readline().strip() if "forged" in pools else None
        first = {"hot": hot_token, "cold": hot_token, "forged": forged_token, "opaque_hot": opaque_hot}
        # Sanity: each variant answers each scenario as expected (the tokens are right).
        for scen, scen_variants in plan.items():
            path, expect = SCENARIOS[scen][2], SCENARIOS[scen][3]
            for v in scen_variants:
                got = probe(envoy.ports[v], path, first.get(pool_of(scen, v) or ""), **request_of(scen))
                if got != expect[v]:
                    log(f"WARNING: {scen} on {v} answered {got}, expected {expect[v]}")
        if "ours" in envoy.ports and "reply" in envoy.ports:
            for problem in same_answers(envoy.ports):
                log(f"WARNING: {problem}")
        # tools_list: the filtering variants must hide the 10 tools, the others pass all 50 on;
        # measuring anything else would measure the wrong thing.
        if "tools_list" in plan:
            problems = tools_answers(envoy.ports, hot_token)
            for problem in problems:
                log(f"ERROR: tools_list: {problem}")
            if problems:
                log("ERROR: tools_list answers are not what the scenario measures (is the .wasm built "
                    "from a source with filter_tools_list?): stopping")
                return 1
            log(f"tools_list: {', '.join(v for v in TOOLS_VARIANTS if v in envoy.ports)} answer as expected")
        # Warm-up: let V8 tier up the wasm code and every path get hot (hot, forged, 401, metadata,
        # tools/list).
        log("warm-up ...")
        for v in variants:
            for scen in ("hot", "noauth", "metadata", "tools_list"):
                if v in plan.get(scen, ()):
                    pool_name = pool_of(scen, v)
                    run_wrk(envoy.ports[v], SCENARIOS[scen][2], pools[pool_name] if pool_name else None,
                            1, args.connections, **request_of(scen))
        calls_before_rounds = stub.count()
        tools_before = tools_counters(envoy) if "tools_list" in plan else None
        for r in range(args.rounds):
            for scen, scen_variants in plan.items():
                path = SCENARIOS[scen][2]
                order = scen_variants[r % len(scen_variants):] + scen_variants[: r % len(scen_variants)]
                for v in order:
                    pool_name = pool_of(scen, v)
                    pool = pools[pool_name] if pool_name else None
                    if pool_name in ("cold", "forged"):
                        pool.cursor = cursors[v][pool_name]
                    res = run_wrk(envoy.ports[v], path, pool, args.duration, args.connections, envoy,
                                  **request_of(scen))
                    if pool_name in ("cold", "forged"):
                        cursors[v][pool_name] = pool.cursor
                    raw[scen][v].append(res)
                memory[scen] = envoy.memory()
                log(f"round {r + 1}/{args.rounds} {scen:8s} " + "  ".join(
                    f"{v}={raw[scen][v][-1]['rps']:,.0f}" for v in scen_variants))
        if tools_before is not None:
            after = tools_counters(envoy)
            tools = {k: after[k] - tools_before[k] for k in after}
            tools["per_request"] = tools["hidden"] / max(tools["requests"], 1)
            log(f"tools_list rounds: mcp_oauth_tools_hidden +{tools['hidden']:,} over {tools['requests']:,} "
                f"filtered tools/list answers ({tools['per_request']:.2f} per request)")
        log("ours counters: " + json.dumps(envoy.stats("mcp_oauth")))
        if "ours_opaque" in variants:
            # The hot opaque token was introspected once (sanity probe); the rounds must not call again.
            flood["hot_calls"] = stub.count() - calls_before_rounds
            log(f"opaque-token flood: {args.flood_seconds:.0f} s per run, connections {FLOOD_CONNECTIONS} ...")
            flood["runs"] = opaque_flood(envoy, stub, pools["opaque_random"], args.flood_seconds)
    finally:
        envoy.stop()
        stub.stop()

    memcheck = {}
    if not args.no_memcheck:
        log(f"memory check: up to {args.mem_tokens:,} distinct {args.mem_key} tokens within {args.mem_seconds:.0f}s ...")
        expected = None
        if args.mem_key == "rsa-a" and raw.get("cold", {}).get("ours"):
            expected = median([r["rps"] for r in raw["cold"]["ours"]])
        memcheck = memory_check(args, workers, expected)

    meta["elapsed_s"] = round(time.monotonic() - t_start)
    write_results(args.out, meta, raw, memory, memcheck, flood, tools)
    return 0


if __name__ == "__main__":
    sys.exit(main())
