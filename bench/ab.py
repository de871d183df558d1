#!/usr/bin/env python3
"""A/B two or more builds of the filter in minutes, for a change to the per-request path.

One Envoy (`--concurrency 1`), one listener for the trimmed no-op floor and one per given
`.wasm` (each with the bench's plugin configuration), interleaved wrk runs per round (order
rotated), and per listener the median Envoy CPU time per request and its ratio to the floor.
`make bench` is the full benchmark; this is the quick loop while changing code:

    cp target/wasm32-wasip1/release/mcp_oauth_filter.wasm /tmp/before.wasm
    # ... change, make build ...
    .venv/bin/python bench/ab.py hot before=/tmp/before.wasm \\
        after=target/wasm32-wasip1/release/mcp_oauth_filter.wasm --rounds 7

Scenarios: hot (one valid RS256 token reused), cold and forged (a distinct valid token, or a
token with a random signature, per request: each listener reads its own part of the bench's
200k-token pools in bench/.cache, minted on first use), noauth (no token: 401), metadata. For
noauth and metadata the local-reply floor (`reply`: reads `:path`, sends ours' answer) runs too. Build the
no-op first (`make bench` does; or `cargo build --release --target wasm32-wasip1 --manifest-path
bench/noop/Cargo.toml`). Differences under ~1 µs are within run-to-run noise on a shared
machine: use more rounds, and repeat.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys

from harness import tokens as tk
from harness.envoy import wasm_filter
from load import Pool, claims, run_wrk, token_pool
from variants import (CACHE, METADATA_PATH, NOOP_WASM, PROTECTED_PATH, bench_listener, bootstrap_of, build_arg,
                      plugin_config, probe, start_envoy, trim_noop, variant_filters)

SCENARIOS = {
    "hot": PROTECTED_PATH,
    "cold": PROTECTED_PATH,
    "forged": PROTECTED_PATH,
    "noauth": PROTECTED_PATH,
    "metadata": METADATA_PATH,
}
POOLED = ("cold", "forged")
FLOOR = "noop_trim"
REPLY = "reply"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("variants", nargs="+", type=build_arg((FLOOR, REPLY)), metavar="NAME=PATH.wasm")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    ap.add_argument("--key", default="rsa-a", choices=sorted(tk.DEFAULT_ALG),
                    help="fixture key that signs the cold/forged pools (default rsa-a: RS256)")
    args = ap.parse_args()
    if not NOOP_WASM.exists():
        print(f"missing {NOOP_WASM}: build bench/noop first", file=sys.stderr)
        return 1
    if not shutil.which("wrk"):
        print("wrk missing: make bench-deps", file=sys.stderr)
        return 1
    trim_noop()
    wasms = {name: path for name, path, _ in args.variants}
    config = plugin_config(tk.fixture_jwks())
    # Where ours answers itself, the local-reply floor (bench.py's `reply`) is measured too.
    names = [FLOOR, *([REPLY] if args.scenario in ("noauth", "metadata") else []), *wasms]
    listeners = [bench_listener(n, variant_filters(n)) for n in names if n in (FLOOR, REPLY)]
    listeners += [bench_listener(n, [wasm_filter(config, name=f"ab_{n}", wasm_path=p)]) for n, p in wasms.items()]
    path = SCENARIOS[args.scenario]
    pools: dict[str, Pool | None] = dict.fromkeys(names)
    token = None
    if args.scenario == "hot":
        # One token for every request, as a one-line pool (what bench.py does).
        hot = CACHE / "ab-hot.txt"
        token = tk.mint(claims(0, "hot"), key="rsa-a")
        hot.write_text(token + "\n")
        pools = {n: Pool(hot) for n in names}
    elif args.scenario in POOLED:
        # One pool file, a separate cursor per listener, each starting at its own share, so no
        # listener's cache sees a token twice.
        whole = token_pool(args.scenario, args.key, 200_000, max(1, os.cpu_count() or 1))
        for i, n in enumerate(names):
            pools[n] = Pool(whole.path)
            pools[n].cursor = i * len(whole) // len(names)
    envoy = start_envoy(bootstrap_of(listeners))
    cpu: dict[str, list[float]] = {n: [] for n in names}
    non2xx: dict[str, int] = dict.fromkeys(names, 0)

    def run(n: str, seconds: int) -> float:
        out = run_wrk(envoy.ports[n], path, pools[n], seconds, 4, envoy)
        non2xx[n] += out["errors_status"]
        return out["cpu_us"]

    try:
        for n in names:  # check each answers as expected, then warm it up
            print(f"{n}: {probe(envoy.ports[n], path, token)}", flush=True)
            run(n, 1)
        for r in range(args.rounds):
            for n in names[r % len(names):] + names[: r % len(names)]:
                cpu[n].append(run(n, args.duration))
    finally:
        envoy.stop()
    floor = statistics.median(cpu[FLOOR])
    print(f"\n{args.scenario}: Envoy CPU µs per request, median of {args.rounds} rounds")
    for n in names:
        m = statistics.median(cpu[n])
        runs = ", ".join(f"{x:.1f}" for x in cpu[n])
        print(f"{n:>12}  {m:6.2f} µs  {m - floor:+6.2f} over the floor  floor/this {floor / m:.3f}  "
              f"non-2xx {non2xx[n]}  [{runs}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
