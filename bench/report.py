"""How the benchmark reports: medians over rounds, the ratios of ours to each reference
against the targets (PASS/MISS; it never fails), and the files: bench/results.md (the table),
bench/results.json (every run) and bench/results.svg (when matplotlib is installed).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from load import log
from variants import HIDDEN_COUNT, LABELS, METADATA_PATH, SCENARIOS, TOOL_COUNT, TOOLS_LIST_CALL, VARIANTS


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
    # Opaque tokens: the hot path once the introspection answer is cached in shared data.
    ("hot", "ours", None, None, "opaque hot (introspected, cached) ÷ JWT hot", "ours_opaque"),
    ("hot", "noop", None, None, "opaque hot (introspected, cached) ÷ no-op floor", "ours_opaque"),
    # The audit trail's five filter-state values: ours with them off.
    ("hot", "noop", None, None, "hot, audit_filter_state: false ÷ no-op floor", "ours_noaudit"),
    ("hot", "ours", None, None, "hot, audit trail off ÷ on", "ours_noaudit"),
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
    # What filtering a 50-tool tools/list answer costs: the same listener config with
    # filter_tools_list on (10 tools hidden, cacheScope private) ÷ off (passed through untouched).
    ("tools_list", "ours_tools_off", None, None, "tools/list filtered ÷ pass-through", "ours_tools"),
    ("tools_list", "ours_tools_sse_off", None, None, "tools/list filtered ÷ pass-through, event stream",
     "ours_tools_sse"),
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


def render_flood(flood: dict) -> list[str]:
    """The opaque-token flood: what random tokens cost the authorization server."""
    if not flood.get("runs"):
        return []
    L = ["## Opaque tokens: a flood of random tokens (what the authorization server sees)\n"]
    L.append("Distinct random opaque tokens (32 random bytes, base64url) to `ours_opaque`, whose introspection "
             "endpoint (`bench/introspection_stub.py`, a Python thread on the same machine) calls each inactive. "
             "No cache can help with tokens never seen before: every admitted request is one call, and "
             f"`max_in_flight` ({flood['runs'][0]['max_in_flight']} per worker, 1 worker) bounds the calls "
             "outstanding, so at most `max_in_flight` ÷ the endpoint's latency calls per second per worker reach "
             "it; requests beyond the bound get `503` at once. The hot opaque token made "
             f"**{flood.get('hot_calls', 0)}** introspection calls during all the hot rounds (its answer was "
             "cached by the sanity probe before them).\n")
    L.append("| connections | req/s | introspection calls/s | calls per request | 401 inactive | 503 busy | 503 unavailable | allowed | p50 ms | p99 ms |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in flood["runs"]:
        L.append(f"| {r['connections']} | {r['rps']:,.0f} | {r['as_calls_per_s']:,.0f} | "
                 f"{r['as_calls'] / max(r['requests'], 1):.2f} | {r['inactive']:,} | {r['busy']:,} | "
                 f"{r['unavailable']:,} | {r['allowed']:,} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |")
    L.append("")
    return L


def render_markdown(meta: dict, summary: dict, ratio_rows: list[dict], memory: dict, memcheck: dict,
                    flood: dict | None = None, tools: dict | None = None) -> str:
    L = []
    L.append("# mcp-oauth-filter benchmark\n")
    L.append(f"- Date: {meta['date']}")
    L.append(f"- Envoy: {meta['envoy_version']}, `--concurrency 1`, V8 wasm runtime; one listener per variant, "
             "all with the same `direct_response` route (200 \"ok\") but the tools_list variants' (a 50-tool "
             "`tools/list` answer).")
    L.append(f"- Machine: {meta['machine']}. Shared with other jobs: absolute numbers are noise, "
             "**read the ratios** (all variants run interleaved in the same rounds).")
    L.append(f"- Load: wrk, 1 thread, {meta['connections']} connections, {meta['duration']} s per run, "
             f"{meta['rounds']} rounds (variant order rotated each round); numbers are medians over rounds.")
    L.append(f"- `.wasm` sizes: ours {meta['wasm_size_ours']:,} bytes; no-op {meta['wasm_size_noop']:,} bytes.")
    if meta.get("cold_pool"):
        L.append(f"- Tokens: RS256, fixture key `rsa-a` (2048-bit, kid `rsa-a`); cold pool {meta['cold_pool']:,} distinct, "
                 f"forged pool {meta['forged_pool']:,} distinct (random 256-byte signatures).")
    else:
        L.append("- Tokens: RS256, fixture key `rsa-a` (2048-bit, kid `rsa-a`).")
    if meta.get("scenarios") and set(meta["scenarios"]) != set(SCENARIOS):
        L.append(f"- Scenarios run: {', '.join(meta['scenarios'])} only (`--scenarios`/`--variants`; no memory check).")
    L.append(f"- Command: `{meta['command']}`\n")

    L.append("## Ratios: ours ÷ reference\n")
    L.append("Median over rounds of the per-round ratio. **req/s**: ours' requests/s ÷ the reference's "
             "(the targets' definition). **CPU**: the reference's Envoy CPU time per request ÷ ours "
             "(same direction: > 1× means ours is cheaper); it barely depends on what else runs on the "
             "machine, so trust it when the two disagree on a busy machine. The `opaque hot` rows measure ours with "
             "one opaque token whose introspection answer is cached; the two `local-reply floor's` rows measure the "
             "local-reply floor, not ours: where the least any wasm answer costs stands against the no-op. The "
             "`tools/list` rows measure ours against itself: a 50-tool `tools/list` answer filtered "
             f"(`filter_tools_list` on: {HIDDEN_COUNT} tools hidden from the token, `cacheScope: \"private\"`) ÷ "
             "passed through untouched (`filter_tools_list: false`; the request body is read either way), "
             "as `application/json` and as one `text/event-stream` event.\n")
    L.append("| ratio | req/s | result | CPU/request | result | target |")
    L.append("|---|---:|---|---:|---|---:|")
    for r in ratio_rows:
        tgt = "" if r["target"] is None else f"≥ {r['target']}×" + (f" (stretch {r['stretch']}×)" if r["stretch"] else "")
        L.append(f"| {r['label']} | {r['ratio']:.2f}× | {r['status']} | {r['cpu_ratio']:.2f}× | {r['cpu_status']} | {tgt} |")
    if tools and tools.get("requests"):
        L.append(f"| `mcp_oauth_tools_hidden` per filtered tools/list (the tools_list rounds) "
                 f"| {tools['per_request']:.2f} ({tools['hidden']:,} over {tools['requests']:,}) "
                 f"| {'PASS' if round(tools['per_request'], 2) == HIDDEN_COUNT else 'MISS'} | | | {HIDDEN_COUNT} |")
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

    L.extend(render_flood(flood or {}))
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
        "- tools_list: `POST /mcp` with `" + TOOLS_LIST_CALL + "`, `content-type: application/json`, "
        "`accept: application/json, text/event-stream` and the hot token (`mcp:read`, not `mcp:admin`). The "
        f"route answers a {TOOL_COUNT}-tool list (`direct_response`, which Envoy encodes through the HTTP "
        "filters, so ours sees it as an upstream's; ~18 KB, 280-390 bytes a tool) whose "
        f"{HIDDEN_COUNT} `delete_*` tools `tool_scopes` reserves to `mcp:admin`. Before measuring, the "
        f"bench checks the filtered answers list {TOOL_COUNT - HIDDEN_COUNT} tools with `cacheScope: \"private\"` "
        "and the pass-through ones are the route's bytes; `mcp_oauth_tools_hidden` over the rounds ÷ the "
        "filtering listeners' 2xx answers is the row in the ratios table.\n"
        "- Requests are `GET /mcp` (metadata: `GET " + METADATA_PATH + "`; tools_list: the `POST` above), "
        "HTTP/1.1 keep-alive.\n"
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
              "jwt": "#1f77b4", "jwt_cache": "#9ecae1", "ours": "#d62728", "ours_opaque": "#ff9896", "ours_noaudit": "#e377c2",
              "ours_tools": "#9467bd", "ours_tools_off": "#c5b0d5", "ours_tools_sse": "#e377c2",
              "ours_tools_sse_off": "#f7b6d2"}
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(19, 6), gridspec_kw={"width_ratios": [3, 3, 2.4]})
    # Each scenario's bars side by side: only the variants it ran, in VARIANTS order.
    width = 0.8 / max(len(summary[s]) for s in scens)
    for ax, key, title, ylabel in (
        (ax1, "rps", "Throughput (higher is better)", "requests/s (median, 1 Envoy worker)"),
        (ax3, "cpu_us", "Envoy CPU per request (lower is better)", "µs of Envoy CPU / request (median)"),
    ):
        for var in VARIANTS:
            xs, ys = [], []
            for j, scen in enumerate(scens):
                present = [v for v in VARIANTS if v in summary[scen]]
                if var in present:
                    xs.append(j + (present.index(var) - (len(present) - 1) / 2) * width)
                    ys.append(summary[scen][var][key])
            if xs:
                ax.bar(xs, ys, width, label=LABELS[var], color=colors.get(var, "#333333"))
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


def write_results(out: Path, meta: dict, raw: dict, memory: dict, memcheck: dict, flood: dict,
                  tools: dict | None = None) -> str:
    """results.md, results.json and (with matplotlib) results.svg in `out`; returns the markdown."""
    summary, ratio_rows = summarize(raw), ratios(raw)
    md = render_markdown(meta, summary, ratio_rows, memory, memcheck, flood, tools)
    md += f"\nTotal bench time: {meta['elapsed_s']} s.\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "ratios": ratio_rows, "memory": memory, "memcheck": memcheck,
         "flood": flood, "tools": tools or {}, "raw": raw},
        indent=1))
    charted = render_chart(summary, ratio_rows, out / "results.svg")
    print()
    print(md)
    print(f"written: {out / 'results.md'}, results.json" + (", results.svg" if charted else ""))
    return md


def rerender(results_json: Path, out: Path) -> str:
    """results.md and results.svg again from a results.json (after a change to the report)."""
    d = json.loads(results_json.read_text())
    summary, rows = summarize(d["raw"]), ratios(d["raw"])
    md = render_markdown(d["meta"], summary, rows, d["memory"], d["memcheck"], d.get("flood"), d.get("tools"))
    md += f"\nTotal bench time: {d['meta']['elapsed_s']} s.\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(md)
    render_chart(summary, rows, out / "results.svg")
    print(md)
    return md
