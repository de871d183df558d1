"""Robustness: thousands of random and mutated requests through a real Envoy (concurrency 2).

Seeded (fixed by default for reproducible CI; `MCP_OAUTH_FUZZ_SEED=N` replays, `=random` explores; the seed is printed at the start and in every failure message); the number of
requests is `MCP_OAUTH_FUZZ_COUNT` (default 3000). They go out in parallel over keep-alive
connections: three HTTP/1.1 workers and one HTTP/2 (h2c, many streams per connection) worker.

Kinds of requests (all on protected paths unless said otherwise):
- a valid token with bit flips, truncations, duplicated slices, a changed character class;
- random bytes (what `http.client` lets through: no CR/LF) as the Authorization value, with and
  without a `Bearer ` prefix;
- the valid token under other spellings of the scheme (`bearer`, `BEARER`): must be 200;
- random paths with `%` escapes, dot segments, doubled and back slashes, with a mutated token or
  none: 200 only if the path cannot reach a protected prefix (see `path_may_pass`);
- random JSON in claims, signed by a valid key (RS256/ES256/EdDSA): 200 only if the claims are
  plausibly valid (`claims_may_pass`, conservative: it never calls a valid claim set invalid);
- huge header values near Envoy's 60 KiB header limit, and many headers.

Each response must be 200 (only where allowed) or a 4xx — never 5xx, never a 1xx/3xx, never a
200 for a mutated token that is not byte-identical to the valid one — and no request answered
with anything but 200 may have reached the upstream (x-test-id). Then a valid token still gets
200, Envoy's wasm stats show no VM failure or reload, and the log has no panic or trap.
"""
from __future__ import annotations

import http.client
import json
import os
import posixpath
import random
import re
import string
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field

import pytest

import scenario
from harness import Client, Envoy, h2c, tokens
from harness.upstream import TEST_ID_HEADER
from harness.wire import parse_www_authenticate
from scenario import ENCODED_PREFIX_WITH_DOT_SEGMENTS, ISSUER, MCP, MCP_PATH, PLAIN_PREFIX_WITH_DOT_SEGMENTS, TOOLS_PATH

# A fixed seed by default, so CI is reproducible; MCP_OAUTH_FUZZ_SEED=random explores.
_SEED_ENV = os.environ.get("MCP_OAUTH_FUZZ_SEED", "20261122")
SEED = random.SystemRandom().randrange(1, 2**31) if _SEED_ENV == "random" else int(_SEED_ENV)
COUNT = int(os.environ.get("MCP_OAUTH_FUZZ_COUNT") or 3000)
H1_WORKERS = 3
H2_SHARE = 0.15  # share of requests sent over HTTP/2
PROTECTED_PREFIXES = (MCP_PATH, TOOLS_PATH)
SKEW = 60


@pytest.fixture(scope="module")
def fuzz_envoy(upstream, wasm_path):
    """A dedicated Envoy (the default configuration), so its stats and log are this test's alone."""
    envoy = Envoy(scenario.plugin_config(), upstream.port, wasm_path=wasm_path).start()
    yield envoy
    envoy.stop()


# -- request generation ---------------------------------------------------------------------------

@dataclass
class Spec:
    kind: str
    method: str
    path: str
    headers: list[tuple[str, str]]
    may_pass: bool  # a 200 is acceptable for this request
    must_pass: bool = False  # a 200 is required (byte-identical valid token, plain path)
    h2: bool = False
    body: bytes | None = None
    test_id: str = ""


@dataclass
class Outcome:
    spec: Spec
    status: int | None
    error: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def valid_token(rng: random.Random) -> str:
    key = rng.choice(["rsa-a", "rsa-a", "ec-p256", "ed25519", "rsa-b", "ec-p384"])
    return scenario.token(key=key, lifetime=3600)


def bitflip(rng: random.Random, token: str) -> str:
    data = bytearray(token.encode())
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(data))
        for _attempt in range(8):
            flipped = data[pos] ^ (1 << rng.randrange(8))
            if flipped not in (0x0A, 0x0D):  # http.client refuses CR/LF
                data[pos] = flipped
                break
    return data.decode("latin-1")


def duplicate(rng: random.Random, token: str) -> str:
    choice = rng.randrange(4)
    if choice == 0:
        i = rng.randrange(len(token))
        j = rng.randrange(i, min(len(token), i + 64) + 1)
        return token[:j] + token[i:j] + token[j:]
    if choice == 1:
        return token + token
    if choice == 2:
        return token + "." + token
    parts = token.split(".")
    k = rng.randrange(len(parts))
    return ".".join(parts[: k + 1] + parts[k:])


def swap_class(rng: random.Random, token: str) -> str:
    """Replace one character by another base64url (or b64token) character."""
    pos = rng.randrange(len(token))
    alphabet = string.ascii_letters + string.digits + "-_.~+/="
    replacement = rng.choice([c for c in alphabet if c != token[pos]])
    return token[:pos] + replacement + token[pos + 1 :]


def random_value(rng: random.Random, printable_only: bool) -> str:
    length = rng.choice([0, 1, 2, 5, 17, 64, 200, 1000])
    if printable_only:
        pool = string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "").replace("\x0c", "")
        return "".join(rng.choice(pool) for _ in range(length))
    codes = [c for c in range(256) if c not in (0x0A, 0x0D)]
    return "".join(chr(rng.choice(codes)) for _ in range(length))


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), tokens.now(), tokens.now() + 3600])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e300, -1e-300, tokens.now() + 0.25])
    if kind == 4:
        return rng.choice(["", ISSUER, MCP, "mcp:read", "\u0000", "\ud7ff\u00e9", "x" * rng.randint(1, 300)])
    if kind == 5:
        return "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randint(0, 20)))
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_key(rng): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def random_key(rng: random.Random) -> str:
    return rng.choice(["iss", "aud", "exp", "nbf", "iat", "sub", "scope", "scp", "jti", "cnf", "", "\u00e9", "x" * 40, "a"])


def claims_may_pass(claims) -> bool:
    """False when a claim set is certainly not acceptable for /mcp (so a 200 would be wrong)."""
    if not isinstance(claims, dict):
        return False
    if claims.get("iss") != ISSUER:
        return False
    aud = claims.get("aud")
    if not (aud == MCP or (isinstance(aud, list) and MCP in aud and all(isinstance(a, str) for a in aud))):
        return False
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or exp < tokens.now() - SKEW - 30:
        return False
    if "nbf" in claims:
        nbf = claims["nbf"]
        if isinstance(nbf, bool) or not isinstance(nbf, (int, float)) or nbf > tokens.now() + SKEW + 30:
            return False
    scopes: set[str] = set()
    if isinstance(claims.get("scope"), str):
        scopes.update(claims["scope"].split(" "))
    scp = claims.get("scp")
    if isinstance(scp, str):
        scopes.update(scp.split(" "))
    elif isinstance(scp, list):
        scopes.update(s for s in scp if isinstance(s, str))
    return scenario.MCP_REQUIRED_SCOPE in scopes


def random_claims_token(rng: random.Random) -> tuple[str, bool]:
    claims = scenario.claims(lifetime=3600)
    mode = rng.randrange(4)
    if mode == 0:  # the whole claim set random
        claims = random_json(rng)
    elif mode == 1:  # a few claims replaced by random JSON
        for _ in range(rng.randint(1, 3)):
            claims[random_key(rng)] = random_json(rng)
    elif mode == 2:  # extra unknown claims only: still valid
        for i in range(rng.randint(1, 6)):
            claims[f"x{i}-{rng.randrange(1000)}"] = random_json(rng)
    else:  # a claim removed
        claims.pop(rng.choice(list(claims)), None)
    key = rng.choice(["rsa-a", "ec-p256", "ed25519"])
    try:
        token = tokens.mint(raw_claims=json.dumps(claims, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass"), key=key)
    except (TypeError, ValueError):
        token = tokens.mint(scenario.claims(omit=("exp",)), key=key)
        return token, False
    return token, claims_may_pass(claims)


_SEGMENTS = ["mcp", "tools", "MCP", "mcpx", "x", "", ".", "..", "%2e", "%2E%2e", "%6Dcp", "%6d%63%70", "%2F", "%2f",
             "%5C", "\\", "%25", "%256D", "%", "%zz", "%00", "%ff", ";", "a;b", "%3B", "well-known", "~", "%7E", "-",
             ".well-known", "oauth-protected-resource", "%20", "+", "%2B", "mcp%2Fx", "%u006d"]


def random_path(rng: random.Random) -> str:
    parts = [rng.choice(_SEGMENTS) for _ in range(rng.randint(1, 5))]
    sep = rng.choice(["/", "/", "/", "//", "\\", "%2F"])
    path = "/" + sep.join(parts)
    if rng.random() < 0.2:
        path += "?" + rng.choice(["a=1", "access_token=x", "%zz", "x=%2F..%2Fmcp", ""])
    if rng.random() < 0.1:
        path += "#frag"
    return path


def _normalize(path: str) -> str:
    path = path.split("?", 1)[0].split("#", 1)[0].split(";", 1)[0]
    path = path.replace("\\", "/")
    while "//" in path:
        path = path.replace("//", "/")
    normalized = posixpath.normpath(path) if path else "/"
    return normalized


def _hits_protected(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PROTECTED_PREFIXES)


def path_may_pass(path: str) -> bool:
    """False when a path could reach a protected prefix (as sent, or decoded once, or either
    normalized), so an unauthenticated 200 would be a bypass."""
    raw = path.split("?", 1)[0].split("#", 1)[0]
    candidates = {raw, urllib.parse.unquote(raw)}
    candidates |= {c.replace("\\", "/") for c in candidates}  # a backslash read as a separator
    candidates |= {_normalize(c) for c in candidates}
    return not any(_hits_protected(c) for c in candidates)


def build_specs(rng: random.Random, count: int, valid_for_identity: str) -> list[Spec]:
    specs: list[Spec] = []
    weights = {
        "bitflip": 18, "truncate": 8, "duplicate": 8, "swap-char": 8, "random-auth-bearer": 10, "random-auth": 6,
        "scheme-case": 4, "random-path": 14, "random-claims": 16, "huge-header": 3, "many-headers": 1, "valid": 4,
    }
    kinds = list(weights)
    for i in range(count):
        kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        h2 = rng.random() < H2_SHARE and kind not in ("huge-header", "many-headers")
        method = rng.choice(["GET", "GET", "POST", "DELETE", "HEAD", "PUT", "OPTIONS"])
        path = rng.choice([MCP_PATH, MCP_PATH, MCP_PATH + "/x", TOOLS_PATH]) if kind != "random-path" else random_path(rng)
        headers: list[tuple[str, str]] = []
        may_pass = must_pass = False
        token = valid_for_identity if rng.random() < 0.5 else valid_token(rng)
        if kind == "bitflip":
            auth = "Bearer " + bitflip(rng, token)
            may_pass = must_pass = auth == "Bearer " + token
        elif kind == "truncate":
            auth = "Bearer " + token[: rng.randrange(len(token))]
        elif kind == "duplicate":
            auth = "Bearer " + duplicate(rng, token)
        elif kind == "swap-char":
            auth = "Bearer " + swap_class(rng, token)
        elif kind == "random-auth-bearer":
            auth = "Bearer " + random_value(rng, printable_only=h2)
        elif kind == "random-auth":
            auth = random_value(rng, printable_only=h2)
        elif kind == "scheme-case":
            auth = rng.choice(["bearer", "BEARER", "BeArEr"]) + " " + token
            may_pass = must_pass = True
        elif kind == "valid":
            auth = "Bearer " + token
            may_pass = must_pass = True
        elif kind == "random-path":
            auth = rng.choice([None, "Bearer " + bitflip(rng, token), "Bearer x.y.z"])
            may_pass = path_may_pass(path)
        elif kind == "random-claims":
            claims_token, may_pass = random_claims_token(rng)
            auth = "Bearer " + claims_token
        elif kind == "huge-header":
            size = rng.choice([40_000, 59_000, 60_500, 61_440, 65_536, 100_000])
            if rng.random() < 0.5:
                auth = "Bearer " + (token + "A" * size)[:size]
            else:
                auth = "Bearer " + token
                headers.append(("x-junk", "j" * size))
                may_pass = True  # the token is intact: 200, or Envoy's 431
        else:  # many-headers
            auth = "Bearer " + token
            headers.extend((f"x-h{n}", "v" * rng.randint(1, 50)) for n in range(rng.choice([90, 101, 150, 500])))
            may_pass = True
        if auth == "Bearer " + token:
            may_pass = must_pass = True  # a mutation that changed nothing (e.g. an empty duplicated slice)
        if auth is not None:
            headers.insert(0, ("Authorization", auth))
        if must_pass and path != MCP_PATH and path != MCP_PATH + "/x":
            must_pass = may_pass = False  # a token for /mcp on /tools: refused
        if method == "OPTIONS":
            must_pass = False  # no preflight headers: an OPTIONS with a token; 200 or 4xx
        if rng.random() < 0.1:
            headers.append(("Origin", rng.choice(["https://app.example", "null", random_value(rng, True)[:40]])))
        body = None
        if method in ("POST", "PUT"):
            body = rng.choice([b"", b"{}", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}',
                               bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))])
        specs.append(Spec(kind, method, path, headers, may_pass, must_pass, h2, body, f"rob{SEED}-{i}"))
    return specs


# -- transports -----------------------------------------------------------------------------------

class H1Conn:
    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def send(self, spec: Spec) -> Outcome:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            try:
                self.conn.putrequest(spec.method, spec.path, skip_host=True, skip_accept_encoding=True)
                self.conn.putheader("Host", f"127.0.0.1:{self.port}")
                self.conn.putheader(TEST_ID_HEADER, spec.test_id)
                for name, value in spec.headers:
                    self.conn.putheader(name, value.encode("latin-1"))
                if spec.body is not None:
                    self.conn.putheader("Content-Length", str(len(spec.body)))
                self.conn.endheaders(spec.body)
                resp = self.conn.getresponse()
                resp.read()
                headers = [(k.lower(), v) for k, v in resp.getheaders()]
                if resp.will_close:
                    self.close()
                return Outcome(spec, resp.status, headers=headers)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as err:
                self.close()
                if attempt == 1:
                    return Outcome(spec, None, error=f"{type(err).__name__}: {err}")
            except (http.client.HTTPException, OSError) as err:
                self.close()
                return Outcome(spec, None, error=f"{type(err).__name__}: {err}")
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class H2Conn:
    """Many sequential streams on one h2c connection (`h2c.Connection`), a new connection every
    thousand streams or after a GOAWAY."""

    def __init__(self, port: int):
        self.port = port
        self.conn: h2c.Connection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def send(self, spec: Spec) -> Outcome:
        if self.conn is None or self.conn.closed or self.conn.next_stream > 2001:
            self.close()
            self.conn = h2c.Connection(self.port, timeout=15)
        headers = [(name, value.encode("latin-1")) for name, value in spec.headers]
        try:
            reply = self.conn.request(spec.method, spec.path, headers, body=spec.body, test_id=spec.test_id)
        except h2c.GoAway as err:
            self.close()
            return Outcome(spec, None, error=f"GOAWAY {err.code:08x}")
        except h2c.StreamReset as err:
            return Outcome(spec, None, error=f"RST_STREAM {err.code:08x}")
        except (OSError, ConnectionError, ValueError, KeyError) as err:
            self.close()
            return Outcome(spec, None, error=f"h2 {type(err).__name__}: {err}")
        return Outcome(spec, reply.status, headers=reply.headers)


def run_all(port: int, specs: list[Spec]) -> list[Outcome]:
    h1 = [s for s in specs if not s.h2]
    h2 = [s for s in specs if s.h2]
    queues = [h1[i::H1_WORKERS] for i in range(H1_WORKERS)] + [h2]
    results: list[list[Outcome]] = [[] for _ in queues]

    def work(index: int) -> None:
        conn = H2Conn(port) if index == len(queues) - 1 else H1Conn(port)
        try:
            for spec in queues[index]:
                results[index].append(conn.send(spec))
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(queues))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return [outcome for chunk in results for outcome in chunk]


# -- the test -------------------------------------------------------------------------------------

FAILURE_LOG = re.compile(r"panicked|RuntimeError|unreachable|wasm trap|Uncaught|VM .*fail|crash", re.IGNORECASE)


def wasm_health(envoy: Envoy) -> dict[str, int]:
    stats = envoy.stats(filter_regex=r"^wasm\.")
    return {name: value for name, value in stats.items()}


def test_random_and_mutated_requests_never_crash_or_pass(fuzz_envoy, upstream):
    print(f"\nrobustness seed: {SEED} (MCP_OAUTH_FUZZ_SEED={SEED} to replay), {COUNT} requests")
    rng = random.Random(SEED)
    valid = scenario.token(lifetime=3600)
    health_before = wasm_health(fuzz_envoy)
    specs = build_specs(rng, COUNT, valid)
    started = time.monotonic()
    outcomes = run_all(fuzz_envoy.port, specs)
    elapsed = time.monotonic() - started
    assert len(outcomes) == len(specs), f"seed {SEED}: only {len(outcomes)} of {len(specs)} requests completed"

    histogram = Counter((o.spec.kind, o.status if o.status is not None else "error") for o in outcomes)
    statuses = Counter(o.status if o.status is not None else "error" for o in outcomes)
    print(f"{len(outcomes)} requests in {elapsed:.1f}s "
          f"({sum(1 for o in outcomes if o.spec.h2)} over h2); statuses: {dict(statuses)}")
    for (kind, status), n in sorted(histogram.items(), key=str):
        print(f"  {kind:20s} {status}: {n}")

    problems: list[str] = []

    def problem(outcome: Outcome, what: str) -> None:
        spec = outcome.spec
        shown = [(n, v if len(v) < 300 else v[:300] + f"...({len(v)} chars)") for n, v in spec.headers[:4]]
        problems.append(f"{what}: {spec.kind} h2={spec.h2} {spec.method} {spec.path!r} {shown} -> "
                        f"{outcome.status} {outcome.error or ''}")

    for outcome in outcomes:
        spec, status = outcome.spec, outcome.status
        if status is None:
            # A reset is Envoy's codec refusing the request (never the filter): only for header
            # values HTTP/2 forbids, or oversized headers.
            if not (spec.kind in ("huge-header", "many-headers") or (spec.h2 and "random" in spec.kind)
                    or (spec.h2 and spec.kind in ("bitflip", "random-path"))):
                problem(outcome, "no response")
            continue
        if status >= 500:
            problem(outcome, "5xx")
        elif status == 200:
            if not spec.may_pass:
                problem(outcome, "200 for a request that must be refused")
        elif 400 <= status < 500:
            if spec.must_pass and spec.kind not in ("huge-header", "many-headers"):
                problem(outcome, "valid token refused")
            if status in (401, 403):
                values = [v for k, v in outcome.headers if k == "www-authenticate"]
                try:
                    challenges = parse_www_authenticate(values)
                    assert len(challenges) == 1 and challenges[0].scheme == "Bearer"
                    assert challenges[0].get("resource_metadata")
                except (ValueError, AssertionError) as err:
                    problem(outcome, f"bad challenge {values!r} ({err})")
        else:
            problem(outcome, f"unexpected status class {status}")

    # Nothing refused (or unanswered) may have reached the upstream.
    passed = {o.spec.test_id for o in outcomes if o.status == 200}
    prefix = f"rob{SEED}-"
    seen = {v for r in upstream.requests for v in r.header_values(TEST_ID_HEADER) if v.startswith(prefix)}
    by_id = {o.spec.test_id: o for o in outcomes}
    for test_id in sorted(seen - passed):
        problem(by_id[test_id], "refused request reached the upstream")

    # The filter still works, on both protocols (checked even when problems were found above).
    client = Client(fuzz_envoy.port, upstream)
    reply = client.get(MCP_PATH, token=scenario.token())
    if not (reply.status == 200 and len(reply.upstream_requests) == 1):
        problems.append(f"afterwards, a valid token: {reply.describe()}")
    h2_reply = h2c.request(fuzz_envoy.port, "GET", MCP_PATH, [("authorization", f"Bearer {scenario.token()}")])
    if h2_reply.status != 200:
        problems.append(f"afterwards, a valid token over h2: {h2_reply}")
    refused = client.get(MCP_PATH, token=valid[:-2])
    if not (refused.status == 401 and not refused.upstream_requests):
        problems.append(f"afterwards, a truncated token: {refused.describe()}")

    # No VM failure, crash, reload or re-creation; no panic or trap in the log.
    health_after = wasm_health(fuzz_envoy)
    failures = {name: value for name, value in health_after.items()
                if re.search(r"fail|crash|reload|error", name) and value != 0}
    if failures:
        problems.append(f"wasm failure stats: {failures}")
    for name in ("envoy.wasm.runtime.v8.created", "envoy.wasm.runtime.v8.active", "wasm_vm_count"):
        key = f"wasm.{name}"
        if health_after.get(key) != health_before.get(key):
            problems.append(f"{key} changed {health_before.get(key)} -> {health_after.get(key)} (VM re-created?)")
    bad_lines = [line for line in fuzz_envoy.log_text().splitlines() if FAILURE_LOG.search(line)]
    if bad_lines:
        problems.append("log shows VM trouble:\n" + "\n".join(bad_lines[:20]))
    print(f"wasm stats after: {health_after}")

    assert not problems, f"seed {SEED}: {len(problems)} problems:\n" + "\n".join(problems[:40])


# -- the path class the random paths found (pinned in test_paths.py) ------------------------------


@pytest.mark.parametrize("path", PLAIN_PREFIX_WITH_DOT_SEGMENTS + ENCODED_PREFIX_WITH_DOT_SEGMENTS)
def test_the_path_oracle_never_expects_a_pinned_path_to_pass(path):
    assert not path_may_pass(path)
