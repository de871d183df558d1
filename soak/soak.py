#!/usr/bin/env python3
"""`make soak`: sustained mixed load on the real .wasm in a real Envoy (`--concurrency 2`).

wrk (2 threads, 16 connections, soak/mix.lua) cycles through six pre-minted request kinds for
SOAK_SECONDS (default 60):

    valid       GET /mcp, valid RS256 token            -> 200 (forwarded)
    expired     GET /mcp, token expired beyond skew    -> 401 invalid_token
    forged      GET /mcp, one bit of the signature off -> 401 invalid_token
    missing     GET /mcp, no Authorization             -> 401, challenge without error
    metadata    GET /.well-known/oauth-protected-resource/mcp -> 200 JSON (by the filter)
    preflight   OPTIONS /mcp + Origin + Access-Control-Request-Method -> 204 (by the filter)

The route behind the filter is an Envoy `direct_response` (200 "upstream-ok"), so the load
measures the filter and Envoy, not a Python upstream.

Fails (exit 1) on any of:
- a 5xx (wrk's Lua `response()` histogram, and Envoy's `http.soak.downstream_rq_5xx`), a wrk
  connect/read/write/timeout error, or a status outside {200, 204, 401};
- a status histogram that does not match the 2/6 : 3/6 : 1/6 mix of 200 : 401 : 204 (within
  the number of requests that can be in flight);
- a wrong decision in the sampled check: a Python sampler sends one request of each kind
  every ~0.5 s during the load and checks status, challenge and body;
- memory growth between the 10 s sample and the end above SOAK_MAX_GROWTH (default 0.20) of
  Envoy's `server.memory_allocated` (admin /memory `allocated`) or of the process RSS (the wasm
  VMs' linear memory is mmapped, so only RSS sees it);
- a wasm VM failure (`wasm.*` stats with fail/reload/crash), a re-created VM, or a log line with
  a panic or trap.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from harness import Client, EchoUpstream, Envoy, processes, scenario, tokens
from harness.envoy import direct_response_route
from harness.paths import REPO_ROOT
from harness.wasm import build_wasm, find_wasm

LUA = REPO_ROOT / "soak" / "mix.lua"
STAT_PREFIX = "soak"
WRK_THREADS, WRK_CONNECTIONS = 2, 16
FAILURE_LOG = re.compile(r"panicked|RuntimeError|wasm trap|Uncaught|VM .*fail|crash", re.IGNORECASE)


def make_kinds(duration: int) -> dict[str, tuple[str, str, list[tuple[str, str]]]]:
    valid = scenario.token(lifetime=duration + 900)
    expired = scenario.token(at=tokens.now() - 4000, lifetime=300)
    forged = tokens.mint(scenario.claims(lifetime=duration + 900), corrupt_signature=True)
    return {
        "valid": ("GET", scenario.MCP_PATH, [("Authorization", f"Bearer {valid}")]),
        "expired": ("GET", scenario.MCP_PATH, [("Authorization", f"Bearer {expired}")]),
        "forged": ("GET", scenario.MCP_PATH, [("Authorization", f"Bearer {forged}")]),
        "missing": ("GET", scenario.MCP_PATH, []),
        "metadata": ("GET", scenario.MCP_METADATA_PATH, []),
        "preflight": ("OPTIONS", scenario.MCP_PATH, [("Origin", "https://app.example"),
                                                      ("Access-Control-Request-Method", "POST"),
                                                      ("Access-Control-Request-Headers", "authorization")]),
    }


EXPECTED_STATUS = {"valid": 200, "expired": 401, "forged": 401, "missing": 401, "metadata": 200, "preflight": 204}


def check_reply(kind: str, reply) -> str | None:
    """None when `reply` is the right decision for `kind`, else what is wrong."""
    want = EXPECTED_STATUS[kind]
    if reply.status != want:
        return f"{kind}: status {reply.status}, want {want}: {reply.describe()}"
    try:
        if kind in ("expired", "forged"):
            challenge = reply.challenge()
            if challenge.get("error") != "invalid_token" or challenge.get("resource_metadata") != scenario.MCP_METADATA_URL:
                return f"{kind}: challenge {challenge}"
            if reply.json().get("error") != "invalid_token":
                return f"{kind}: body {reply.body[:200]!r}"
        elif kind == "missing":
            challenge = reply.challenge()
            if challenge.get("error") is not None or challenge.get("resource_metadata") != scenario.MCP_METADATA_URL:
                return f"{kind}: challenge {challenge}"
        elif kind == "metadata":
            if reply.json().get("resource") != scenario.MCP:
                return f"{kind}: body {reply.body[:200]!r}"
        elif kind == "preflight":
            if not reply.header("access-control-allow-origin"):
                return f"{kind}: no access-control-allow-origin: {reply.headers}"
        elif kind == "valid":
            if reply.body != b"upstream-ok":
                return f"{kind}: body {reply.body[:200]!r} (not the route's)"
    except (ValueError, AssertionError, json.JSONDecodeError) as err:
        return f"{kind}: {err}: {reply.describe()}"
    return None


class Sampler(threading.Thread):
    """One request of each kind every `interval` seconds, each decision checked."""

    def __init__(self, port: int, kinds, interval: float = 0.5):
        super().__init__(daemon=True, name="soak-sampler")
        self.client = Client(port, None, timeout=10)
        self.kinds = kinds
        self.interval = interval
        self.stop_event = threading.Event()
        self.checked = Counter()
        self.wrong: list[str] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            for kind, (method, path, headers) in self.kinds.items():
                try:
                    reply = self.client.request(method, path, headers=headers)
                    problem = check_reply(kind, reply)
                except OSError as err:
                    problem = f"{kind}: {type(err).__name__}: {err}"
                self.checked[kind] += 1
                if problem:
                    self.wrong.append(problem)
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))


def memory_sample(envoy: Envoy, t: float) -> dict:
    """Envoy's heap (admin /memory `allocated`, -1 if unreadable) and the process RSS."""
    memory = envoy.memory()
    return {"t": round(t, 1), "allocated": memory.get("allocated", -1), "rss": memory["rss"]}


def envoy_counter(envoy: Envoy, name: str) -> int:
    return envoy.stats(f"^{re.escape(name)}$").get(name, 0)


def wasm_stats(envoy: Envoy) -> dict[str, int]:
    return envoy.stats(filter_regex=r"^wasm\.")


def parse_wrk(output: str) -> dict:
    line = next((l for l in output.splitlines() if l.startswith("SOAK_WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no SOAK_WRK line:\n{output}")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    statuses = {int(k): int(v) for k, v in (p.split(":") for p in fields.pop("statuses").split(",") if p)}
    result = {k: int(v) for k, v in fields.items()}
    result["statuses"] = statuses
    return result


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "60")))
    ap.add_argument("--max-growth", type=float, default=float(os.environ.get("SOAK_MAX_GROWTH", "0.20")))
    args = ap.parse_args()
    duration = max(15, args.seconds)
    if duration != args.seconds:
        print(f"SOAK_SECONDS={args.seconds} raised to {duration} (the first memory sample is at 10 s)")
    if not shutil.which("wrk"):
        print("wrk missing: make bench-deps (or apt-get install wrk)", file=sys.stderr)
        return 2
    wasm = find_wasm()
    if not wasm.exists():
        build_wasm()

    kinds = make_kinds(duration)
    violations: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="mcp-oauth-soak-"))
    kinds_file = workdir / "kinds.txt"
    kinds_file.write_text("".join(
        "|".join([kind, method, path, *(f"{n}: {v}" for n, v in headers)]) + "\n"
        for kind, (method, path, headers) in kinds.items()
    ))

    with EchoUpstream() as upstream:
        envoy = Envoy(scenario.plugin_config(), upstream.port, wasm_path=wasm, concurrency=2, stat_prefix=STAT_PREFIX,
                      routes=[direct_response_route("upstream-ok")])
        envoy.start()
        try:
            # Every kind answers right before the load starts (else the soak proves nothing).
            client = Client(envoy.port, None)
            for kind, (method, path, headers) in kinds.items():
                problem = check_reply(kind, client.request(method, path, headers=headers))
                if problem:
                    violations.append(f"before the load: {problem}")
            if violations:
                raise SystemExit("\n".join(["SOAK FAILED (setup)", *violations]))

            wasm_before = wasm_stats(envoy)
            rq5xx_before = envoy_counter(envoy, f"http.{STAT_PREFIX}.downstream_rq_5xx")
            samples: list[dict] = []
            sampler = Sampler(envoy.port, kinds)
            cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{duration}s", "--timeout", "10s",
                   "-s", str(LUA), envoy.url, "--", str(kinds_file)]
            print(f"soak: {duration} s, Envoy --concurrency 2 on {envoy.url}, wrk {WRK_THREADS} threads "
                  f"{WRK_CONNECTIONS} connections, 6 request kinds; sampler every 0.5 s", flush=True)
            started = time.monotonic()
            wrk = processes.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            sampler.start()
            next_sample = 5.0
            while wrk.poll() is None:
                elapsed = time.monotonic() - started
                if elapsed >= next_sample:
                    samples.append(memory_sample(envoy, elapsed))
                    next_sample += 5.0
                time.sleep(0.2)
            samples.append(memory_sample(envoy, time.monotonic() - started))
            sampler.stop_event.set()
            sampler.join(timeout=15)
            output = wrk.stdout.read()
            processes.stop(wrk)
            if wrk.returncode != 0:
                violations.append(f"wrk exited {wrk.returncode}:\n{output}")
            result = parse_wrk(output)

            rq5xx = envoy_counter(envoy, f"http.{STAT_PREFIX}.downstream_rq_5xx") - rq5xx_before
            wasm_after = wasm_stats(envoy)
            log = envoy.log_text()
        finally:
            envoy.stop(cleanup=not violations)

    # -- judge --------------------------------------------------------------------------------
    statuses: dict[int, int] = result["statuses"]
    responses = sum(statuses.values())
    five = sum(n for s, n in statuses.items() if s >= 500)
    if five:
        violations.append(f"{five} 5xx responses seen by wrk")
    if rq5xx:
        violations.append(f"Envoy counted {rq5xx} downstream 5xx (http.{STAT_PREFIX}.downstream_rq_5xx)")
    unexpected = {s: n for s, n in statuses.items() if s not in (200, 204, 401)}
    if unexpected:
        violations.append(f"statuses outside 200/204/401: {unexpected}")
    for name in ("errors_connect", "errors_read", "errors_write", "errors_timeout"):
        if result[name]:
            violations.append(f"wrk {name} = {result[name]}")
    # Each thread cycles the six kinds in order, so the histogram is the mix, up to what was in flight.
    slack = WRK_CONNECTIONS * 2 + 6
    for status, share in ((200, 2 / 6), (401, 3 / 6), (204, 1 / 6)):
        want = responses * share
        if abs(statuses.get(status, 0) - want) > slack:
            violations.append(f"status {status}: {statuses.get(status, 0)} responses, want {want:.0f} +- {slack} "
                              f"(a wrong decision under load?)")
    if sampler.wrong:
        violations.append(f"{len(sampler.wrong)} wrong decisions in the sampled check, e.g.:\n  "
                          + "\n  ".join(sampler.wrong[:10]))
    if sum(sampler.checked.values()) < len(kinds) * duration:  # ~2 rounds a second expected; 1 is the floor
        violations.append(f"sampler made only {sum(sampler.checked.values())} checks")
    base = next((s for s in samples if s["t"] >= 10.0), None)
    end = samples[-1]
    growth = {}
    if base is None or base is end:
        violations.append("no memory sample at 10 s")
    else:
        for key in ("allocated", "rss"):
            growth[key] = (end[key] - base[key]) / base[key]
            if growth[key] > args.max_growth:
                violations.append(f"memory {key} grew {growth[key]:+.1%} from {mib(base[key])} at {base['t']} s "
                                  f"to {mib(end[key])} at {end['t']} s (bound {args.max_growth:.0%})")
    failing = {k: v for k, v in wasm_after.items() if re.search(r"fail|crash|reload|error", k) and v}
    if failing:
        violations.append(f"wasm failure stats: {failing}")
    for key in ("wasm.envoy.wasm.runtime.v8.created", "wasm.wasm_vm_count"):
        if wasm_after.get(key) != wasm_before.get(key):
            violations.append(f"{key} changed {wasm_before.get(key)} -> {wasm_after.get(key)} (VM re-created?)")
    bad_lines = [line for line in log.splitlines() if FAILURE_LOG.search(line)]
    if bad_lines:
        violations.append("log shows VM trouble:\n  " + "\n  ".join(bad_lines[:10]))

    # -- report -------------------------------------------------------------------------------
    seconds = result["duration_us"] / 1e6
    print(f"requests: {result['requests']} in {seconds:.1f} s = {result['requests'] / seconds:.0f} rps "
          f"(latency p50 {result['p50_us'] / 1000:.2f} ms, p99 {result['p99_us'] / 1000:.2f} ms, "
          f"max {result['max_us'] / 1000:.1f} ms)")
    print("statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
          + f"; 5xx: wrk {five}, envoy {rq5xx}")
    print(f"wrk errors: connect {result['errors_connect']} read {result['errors_read']} "
          f"write {result['errors_write']} timeout {result['errors_timeout']}")
    print(f"sampled checks: {sum(sampler.checked.values())} ({dict(sampler.checked)}), wrong: {len(sampler.wrong)}")
    print("memory (t s: allocated / rss): " + "; ".join(
        f"{s['t']:.0f}: {mib(s['allocated'])} / {mib(s['rss'])}" for s in samples))
    if growth:
        print(f"memory growth from {base['t']:.0f} s to {end['t']:.0f} s: allocated {growth['allocated']:+.1%}, "
              f"rss {growth['rss']:+.1%} (bound {args.max_growth:.0%})")
    print("wasm stats: " + ", ".join(f"{k}={v}" for k, v in sorted(wasm_after.items()) if not k.startswith("wasm.remote_load")))
    shutil.rmtree(workdir, ignore_errors=True)
    if violations:
        print("\nSOAK FAILED:\n- " + "\n- ".join(violations))
        return 1
    print("SOAK OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
