#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: a deterministic A/B for the per-request path.

wrk's A/B (bench/ab.py) is noisy to about ±5 µs on a shared machine; this counts every
instruction Envoy executes (its own, V8's and the filter's jitted code) for a fixed number of
requests, repeatable to about 0.3 %. Envoy runs under `valgrind --tool=callgrind` with one
worker and one listener per variant: the untrimmed no-op (`noop`, the floor `make bench`
compares against), in `noauth` and `metadata` also the local-reply floor (`reply`, see
bench/variants.py: the least any filter that answers itself costs), and up to three builds of
ours (two with `reply`), each with the bench's plugin configuration.
Every listener first gets WARMUP requests on one keep-alive connection (V8 compiles lazily),
then, per listener, the counters are zeroed, REQUESTS requests sent and the counters dumped:

    .venv/bin/python bench/callgrind.py hot before=/tmp/before.wasm \\
        after=target/wasm32-wasip1/release/mcp_oauth_filter.wasm after_noaudit=target/...wasm,noaudit

A `,noaudit` suffix runs that build with `audit_filter_state: false`. The ratio printed is the
floor's instructions per request over the variant's: about what `make bench` reports as the
CPU ratio (wall-clock throughput ratios come out a little higher: kernel time is not counted).
Keep to four listeners in all: with more, callgrind attributed the later ones' work wrongly.
Needs valgrind (`make bench-deps`) and the no-op built (`make bench` builds it, or
`cargo build --release --target wasm32-wasip1 --manifest-path bench/noop/Cargo.toml`).
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Envoy
from harness import tokens as tk
from harness.envoy import find_envoy_binary, wasm_filter
from load import claims
from variants import (NOOP_WASM, SCENARIOS, bench_listener, bootstrap_of, build_arg,
                      plugin_config, trim_noop, variant_filters)

# The make bench scenarios this counts (variants.SCENARIOS: path, expected status per variant).
COUNTED = ("hot", "noauth", "metadata")
FLOOR = "noop"
REPLY = "reply"  # the local-reply floor (bench/variants.py), where ours answers itself
MAX_LISTENERS = 4


def send(conn: http.client.HTTPConnection, path: str, token: str | None, expected: int, count: int) -> None:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    for _ in range(count):
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != expected:
            raise SystemExit(f"GET {path}: {response.status}, expected {expected}")


def dump_total(pid: int, out_dir: Path, seen: set[Path]) -> int:
    """Dumps callgrind's counters and returns the instructions counted since the last zeroing
    (from the first dump not in `seen`, which it joins)."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for dump in sorted(set(out_dir.glob(f"out.{pid}*")) - seen, key=lambda p: p.stat().st_mtime):
            text = dump.read_text(errors="replace")
            match = re.search(r"^summary:\s+(\d+)", text, re.M)
            if match:
                seen.add(dump)
                return int(match.group(1))
        time.sleep(0.2)
    raise SystemExit("callgrind wrote no dump within 60 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=COUNTED)
    ap.add_argument("variants", nargs="+", type=build_arg((FLOOR, REPLY), ("noaudit",)),
                    metavar="NAME=PATH.wasm[,noaudit]")
    ap.add_argument("--requests", type=int, default=2000, help="measured requests per listener (default 2000)")
    ap.add_argument("--warmup", type=int, default=3000, help="requests per listener before measuring (default 3000)")
    args = ap.parse_args()
    floors = [FLOOR] + ([REPLY] if args.scenario != "hot" else [])
    if len(floors) + len(args.variants) > MAX_LISTENERS:
        ap.error(f"at most {MAX_LISTENERS - len(floors)} variants in {args.scenario} "
                 f"({MAX_LISTENERS} listeners with {' and '.join(floors)})")
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            print(f"{tool} missing: make bench-deps", file=sys.stderr)
            return 1
    if not NOOP_WASM.exists():
        print(f"missing {NOOP_WASM}: build bench/noop first", file=sys.stderr)
        return 1
    _, _, path, statuses = SCENARIOS[args.scenario]
    token = tk.mint(claims(0, "hot"), key="rsa-a") if args.scenario == "hot" else None
    jwks = tk.fixture_jwks()
    if REPLY in floors:
        trim_noop()  # the local-reply floor runs on the trimmed no-op
    listeners = [bench_listener(n, variant_filters(n)) for n in floors]
    for name, wasm, flag in args.variants:
        config = {**plugin_config(jwks), **({"audit_filter_state": False} if flag == "noaudit" else {})}
        listeners.append(bench_listener(name, [wasm_filter(config, name=f"cg_{name}", wasm_path=wasm)]))
    names = floors + [name for name, _, _ in args.variants]
    expect = {n: statuses[n if n in floors else "ours"] for n in names}

    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        out_dir = Path(tmp)
        wrapper = out_dir / "envoy-under-callgrind"
        wrapper.write_text(
            "#!/bin/sh\nexec valgrind --tool=callgrind --collect-atstart=yes --smc-check=all-non-file "
            f"--callgrind-out-file={out_dir}/out.%p {find_envoy_binary()} \"$@\"\n")
        wrapper.chmod(0o755)
        envoy = Envoy(bootstrap=bootstrap_of(listeners), concurrency=1, log_level="warning", binary=str(wrapper))
        envoy.start(timeout=600, attempts=1)
        try:
            assert envoy.process is not None
            pid = envoy.process.pid
            conns = {n: http.client.HTTPConnection("127.0.0.1", envoy.ports[n], timeout=120) for n in names}
            for n in names:
                print(f"{n}: warming up ({args.warmup} requests)", flush=True)
                send(conns[n], path, token, expect[n], args.warmup)
            seen: set[Path] = set()
            per_request = {}
            for n in names:
                subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
                send(conns[n], path, token, expect[n], args.requests)
                per_request[n] = dump_total(pid, out_dir, seen) / args.requests
            for conn in conns.values():
                conn.close()
        finally:
            envoy.stop()
    floor = per_request[FLOOR]
    print(f"\n{args.scenario}: instructions per request (callgrind, {args.requests} requests, one worker)")
    for n in names:
        print(f"  {n:<16} {per_request[n]:>10.0f}  +{per_request[n] - floor:>8.0f}  floor/this {floor / per_request[n]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
