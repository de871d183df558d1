"""What the benchmark sends: pools of tokens (one a line, minted once into bench/.cache and
reused while valid), sent by wrk (bench/wrk_tokens.lua), one token per request; `GET` unless the
scenario says otherwise (tools_list: `POST` of a JSON-RPC `tools/list` call, variants.REQUESTS).

Pools: hot (one valid RS256 token), cold (distinct valid tokens), forged (distinct tokens with
random signatures of the right length), mem (distinct valid tokens for the memory check; the
file only grows), opaque_hot (one opaque token, the one the bench's introspection endpoint calls
active) and opaque_random (distinct random opaque tokens, written fresh each run: the
negative cache of an earlier run must not know them).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from harness import Envoy
from harness import tokens as tk  # fixture keys and the JWS minting code
from harness.paths import REPO_ROOT
from variants import CACHE, ISSUER, RESOURCE

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_tokens.lua"
TOKEN_LIFETIME = 30 * 24 * 3600  # pools are reused across runs while they stay valid


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def claims(i: int, prefix: str) -> dict:
    """The claims of the i-th token of a pool: valid for ours (and jwt_authn) for 30 days."""
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
            body = tk.b64url(tk.compact_json(claims(i, "forged")))
            out.append(f"{head}.{body}.{tk.b64url(os.urandom(sig_len))}")
        else:
            out.append(tk.mint(claims(i, kind), key=key))
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
    log(f"  minted in {time.monotonic() - t0:.1f}s -> {path.relative_to(REPO_ROOT)}")
    return Pool(path)


def opaque_token() -> str:
    """An opaque access token as authorization servers issue them: 32 random bytes, base64url."""
    return tk.b64url(os.urandom(32))


def opaque_pools(count: int) -> tuple[Pool, Pool]:
    """opaque_hot (one token) and opaque_random (`count` distinct tokens), freshly written."""
    CACHE.mkdir(exist_ok=True)
    hot, random = CACHE / "opaque_hot.txt", CACHE / "opaque_random.txt"
    hot.write_text(opaque_token() + "\n")
    random.write_text("".join(opaque_token() + "\n" for _ in range(count)))
    return Pool(hot), Pool(random)


def run_wrk(port: int, path: str, pool: Pool | None, duration: float, connections: int,
            envoy: Envoy | None = None, method: str = "GET", body: str | None = None,
            headers: list[tuple[str, str]] = ()) -> dict:
    """One wrk run (1 thread) of `method path` (default GET, no body) on 127.0.0.1:`port`, with
    `body` and `headers` if given, a token per request from `pool` (continuing at its cursor;
    None: no Authorization header); wrk's numbers, requests/s, and with `envoy` its CPU time per
    request."""
    offset = pool.take(0) if pool else 0
    cpu0 = envoy.cpu_ns() if envoy else 0
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "-s", str(WRK_SCRIPT),
           f"http://127.0.0.1:{port}", "--", str(pool.path) if pool else "-", path, str(offset)]
    if method != "GET" or body is not None or headers:
        cmd += [method, "-" if body is None else body] + [f"{n}: {v}" for n, v in headers]
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
