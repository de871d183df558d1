"""Reconfiguration under load: the filter's configuration delivered by ECDS from a watched file
(the mechanism Istio uses to hand a sidecar a WasmPlugin), swapped while wrk keeps sending.

Envoy (concurrency 2) discovers the HTTP filter `mcp_oauth` from `ecds/mcp_oauth.yaml`
(`config_discovery` with a `path_config_source` and its `watched_directory`); a new
configuration is written next to it and `os.rename`d over it, as Envoy documents for path
config sources. Each version is a `TypedExtensionConfig` carrying the usual
`envoy.extensions.filters.http.wasm.v3.Wasm` (the local .wasm, the plugin JSON as a
StringValue). Allowed requests are answered by Envoy itself (`direct_response`), so the load
measures Envoy and the filter, not the Python echo upstream.

Under load (wrk, one thread per kind of request, keep-alive connections; its Lua `response()`
callback sorts every answer into "config A", "config B" or "neither" and timestamps the first
and last of each on CLOCK_MONOTONIC, the clock of `time.monotonic()`):

* (a) A (/mcp, inline key rsa-a) is swapped for B (inline key rsa-b, plus /tools): B is in
  effect within 2 s, no 5xx, no answer that matches neither configuration, no A answer after
  B took over (beyond a short window while the two workers switch).
* (b) An invalid configuration is refused (ECDS `update_rejected`), the log names the field,
  the previous configuration keeps deciding every request, and a later valid one still works.
* (c) An issuer whose keys are fetched (key server counting requests) is not fetched again
  because a reconfiguration left it unchanged: the key set in shared data outlives the plugin
  instance that fetched it.
* (d) A reconfiguration while that issuer's first fetch is in flight: Envoy tears down the old
  plugin instance (its fetch is cancelled); the new one must still get the keys within the
  normal fetch time, not after the old instance's fetch lease (11 s) runs out.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import scenario
from harness import Client, Envoy, tokens
from harness.envoy import direct_response_route, wasm_filter
from harness.keyserver import KeyServer

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
EXTENSION_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
FILTER = "mcp_oauth"  # the HTTP filter's name = the ECDS resource it discovers
ECDS_STATS = f"extension_config_discovery.http_filter.{FILTER}."
CONCURRENCY = 2
#: "in effect within 2 s" (the issue).
EFFECT_SECONDS = 2.0
#: How far apart the two workers may switch: an A answer this long after the first B answer is
#: still a worker (or a request sent just before the swap) finishing on A, not a wrong decision.
OVERLAP_SECONDS = 0.5
JWKS_PATH = "/jwks"
JWKS_URI = "http://keys.test/jwks"

# Minted at import: valid for a day, so a whole suite run (collection first) cannot outlast them.
TOKEN_A = scenario.token(key="rsa-a", lifetime=86400)  # /mcp, scope mcp:read, signed by rsa-a
TOKEN_B = scenario.token(key="rsa-b", lifetime=86400)  # the same, signed by rsa-b


# ------------------------------------------------------------------------------------------
# Configurations


def inline_config(keys: list[str], *, tools: bool = False) -> dict:
    """/mcp (required scope mcp:read), plus /tools if `tools`; the one issuer's JWKS inline:
    exactly the fixture keys `keys`."""
    config = scenario.single_resource_config()
    if tools:
        config["resources"].append(copy.deepcopy(scenario.TOOLS_RESOURCE))
    config["issuers"] = [{"issuer": scenario.ISSUER, "jwks": {"keys": [tokens.public_jwk(k) for k in keys]}}]
    return config


CONFIG_A = inline_config(["rsa-a"])
CONFIG_B = inline_config(["rsa-b"], tools=True)


def remote_config(*, tools: bool = False) -> dict:
    """/mcp (and /tools); the issuer's keys fetched from JWKS_URI through cluster `keyserver`."""
    config = scenario.single_resource_config()
    if tools:
        config["resources"].append(copy.deepcopy(scenario.TOOLS_RESOURCE))
    config["issuers"] = [{"issuer": scenario.ISSUER, "jwks_uri": JWKS_URI, "cluster": "keyserver"}]
    return config


# ------------------------------------------------------------------------------------------
# Envoy with the filter's configuration from a watched file


class EcdsEnvoy:
    """An Envoy whose first HTTP filter is discovered by ECDS from `ecds/mcp_oauth.yaml`;
    `push(plugin_config)` replaces that file atomically and returns when it was renamed."""

    def __init__(self, plugin_config: dict, wasm_path: Path, *, extra_clusters: list[dict] = ()):
        self.version = 0
        # The static wasm filter rendered here is replaced by the discovered one below.
        self.envoy = Envoy("{}", 1, wasm_path=wasm_path, concurrency=CONCURRENCY,
                           extra_clusters=list(extra_clusters), routes=[direct_response_route("ok")])
        self.directory = self.envoy.workdir / "ecds"
        self.directory.mkdir()
        # Every version Envoy is handed loads the module again: a copy keeps it the same module
        # for the whole test even if the .wasm is rebuilt meanwhile.
        self.wasm_path = self.envoy.workdir / "filter.wasm"
        shutil.copyfile(wasm_path, self.wasm_path)
        self.path = self.directory / f"{FILTER}.yaml"
        self.path.write_text(self._document(plugin_config))
        hcm = self.envoy.http_connection_manager()
        assert hcm["http_filters"][0]["name"] == "envoy.filters.http.wasm"
        hcm["http_filters"][0] = {
            "name": FILTER,
            "config_discovery": {
                "config_source": {
                    "path_config_source": {"path": str(self.path), "watched_directory": {"path": str(self.directory)}},
                    "resource_api_version": "V3",
                    "initial_fetch_timeout": "0s",
                },
                "type_urls": [WASM_TYPE],
            },
        }
        self.envoy.bootstrap["node"] = {"id": "mcp-server-sidecar", "cluster": "mcp"}  # xDS needs a node

    def _document(self, plugin_config: dict) -> str:
        self.version += 1
        typed_config = wasm_filter(plugin_config, name=FILTER, wasm_path=self.wasm_path,
                                   extra={"allow_on_headers_stop_iteration": True})["typed_config"]
        return yaml.safe_dump({
            "version_info": str(self.version),
            "resources": [{"@type": EXTENSION_TYPE, "name": FILTER, "typed_config": typed_config}],
        })

    def start(self) -> "EcdsEnvoy":
        self.envoy.start()
        assert self.ecds("update_success") == 1, self.envoy.log_tail()
        return self

    def stop(self) -> None:
        self.envoy.stop()

    def push(self, plugin_config: dict) -> float:
        """Write the new version beside the watched file and rename it over it; time.monotonic()
        right after the rename."""
        staged = self.directory / f".{FILTER}.{self.version + 1}.yaml"
        staged.write_text(self._document(plugin_config))
        os.rename(staged, self.path)
        return time.monotonic()

    def ecds(self, name: str) -> int:
        return self.envoy.stats(re.escape(ECDS_STATS + name) + "$").get(ECDS_STATS + name, 0)

    def wait_ecds(self, name: str, at_least: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            value = self.ecds(name)
            if value >= at_least or time.monotonic() >= deadline:
                return value
            time.sleep(0.05)

    def status(self, path: str, token: str | None, timeout: float = 10.0) -> int:
        return Client(self.envoy.port, timeout=timeout).request("GET", path, token=token).status

    def connections_per_worker(self) -> dict[str, int]:
        out = {}
        for name, value in self.envoy.stats(r"^listener\..*worker_[0-9]+\.downstream_cx_total$").items():
            if not name.startswith("listener.admin."):
                out[name.rsplit(".", 2)[-2]] = value
        return out


@pytest.fixture
def started(wasm_path):
    """`started(config, ...)`: an EcdsEnvoy, started, stopped after the test."""
    running: list[EcdsEnvoy] = []

    def start(plugin_config: dict, **options) -> EcdsEnvoy:
        ecds = EcdsEnvoy(plugin_config, wasm_path, **options)
        running.append(ecds)
        return ecds.start()

    yield start
    for ecds in running:
        ecds.stop()


# ------------------------------------------------------------------------------------------
# Load: wrk, one thread per kind of request, each answer sorted into A / B / neither


@dataclass(frozen=True)
class Role:
    """One kind of request and the status each configuration must answer it with."""

    name: str
    path: str
    token: str | None
    under_a: int
    under_b: int


ROLES_AB = [
    Role("mcp-rsa-a", "/mcp", TOKEN_A, 200, 401),   # the rotated-out key
    Role("mcp-rsa-b", "/mcp", TOKEN_B, 401, 200),   # the rotated-in key
    Role("tools-anonymous", "/tools", None, 200, 401),  # the added resource (A: not protected)
]

_WRK_SCRIPT = r"""
-- Generated by tests/e2e/test_reconfigure.py: each wrk thread sends one ROLE's request and
-- sorts every answer: "A" (the status config A gives), "B" (config B's), "X" (neither).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } reconf_timespec;
int clock_gettime(int clk_id, reconf_timespec *tp);
]]
local ts = ffi.new("reconf_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC, as Python's time.monotonic()
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local roles = ROLES
local threads, created = {}, 0

function setup(thread)
  created = created + 1
  thread:set("role_index", ((created - 1) % #roles) + 1)
  threads[#threads + 1] = thread
end

local req
function init(args)
  role = roles[role_index]
  counts, n, first, last = {}, { A = 0, B = 0, X = 0 }, {}, {}
  switches, switch_count, previous = "", 0, nil
  buckets = {} -- answers per 100 ms of CLOCK_MONOTONIC
  local headers = {}
  if role.token ~= nil then headers["Authorization"] = "Bearer " .. role.token end
  req = wrk.format("GET", role.path, headers)
end

function request()
  return req
end

function response(status, headers, body)
  local t = now()
  counts[status] = (counts[status] or 0) + 1
  local class = "X"
  if status == role.a then class = "A" elseif status == role.b then class = "B" end
  n[class] = n[class] + 1
  if first[class] == nil then first[class] = t end
  last[class] = t
  local bucket = math.floor(t * 10)
  buckets[bucket] = (buckets[bucket] or 0) + 1
  if class ~= previous then
    switch_count = switch_count + 1
    if switch_count <= 200 then switches = switches .. string.format("%.4f:%s;", t, class) end
    previous = class
  end
end

local function num(x)
  if x == nil then return "null" end
  return string.format("%.6f", x)
end

function done(summary, latency, requests)
  local parts = {}
  for _, t in ipairs(threads) do
    local r = roles[t:get("role_index")]
    local counts_json = {}
    for status, c in pairs(t:get("counts")) do counts_json[#counts_json + 1] = string.format('"%d":%d', status, c) end
    local n, first, last = t:get("n"), t:get("first"), t:get("last")
    local buckets_json = {}
    for bucket, c in pairs(t:get("buckets")) do buckets_json[#buckets_json + 1] = string.format('"%d":%d', bucket, c) end
    parts[#parts + 1] = string.format(
      '{"role":"%s","counts":{%s},"n":{"A":%d,"B":%d,"X":%d},'
        .. '"first":{"A":%s,"B":%s,"X":%s},"last":{"A":%s,"B":%s,"X":%s},"switch_count":%d,"switches":"%s",'
        .. '"buckets":{%s}}',
      r.name, table.concat(counts_json, ","), n.A, n.B, n.X,
      num(first.A), num(first.B), num(first.X), num(last.A), num(last.B), num(last.X),
      t:get("switch_count"), t:get("switches"), table.concat(buckets_json, ","))
  end
  local e = summary.errors
  io.write(string.format(
    'RECONF_JSON {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"p99_us":%d,"max_us":%d,"threads":[%s]}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    latency:percentile(99), latency.max, table.concat(parts, ",")))
end
"""


def _lua_string(text: str | None) -> str:
    return "nil" if text is None else json.dumps(text)  # JSON string escapes are valid Lua


def wrk_script(roles: list[Role], directory: Path) -> Path:
    table = ",\n".join(
        f'  {{ name = {_lua_string(r.name)}, path = {_lua_string(r.path)}, token = {_lua_string(r.token)}, '
        f'a = {r.under_a}, b = {r.under_b} }}'
        for r in roles
    )
    path = directory / "reconfigure.lua"
    path.write_text(_WRK_SCRIPT.replace("local roles = ROLES", "local roles = {\n" + table + "\n}"))
    return path


@dataclass
class RoleResult:
    role: Role
    counts: dict[int, int]
    n: dict[str, int]
    first: dict[str, float | None]
    last: dict[str, float | None]
    switch_count: int
    switches: list[tuple[float, str]]
    buckets: dict[int, int]  # answers per 100 ms: floor(monotonic * 10) -> count


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    p99_ms: float
    max_ms: float
    roles: list[RoleResult]
    began: float

    def total(self, status_class: str) -> int:
        return sum(r.n[status_class] for r in self.roles)

    def fivexx(self) -> int:
        return sum(c for r in self.roles for s, c in r.counts.items() if s >= 500)

    def first(self, status_class: str, roles=None) -> float | None:
        times = [r.first[status_class] for r in roles or self.roles if r.first[status_class] is not None]
        return min(times) if times else None

    def last(self, status_class: str, roles=None) -> float | None:
        times = [r.last[status_class] for r in roles or self.roles if r.last[status_class] is not None]
        return max(times) if times else None

    def answered_between(self, start: float, end: float) -> list[int]:
        """Answers in each 100 ms from `start` to `end` (every role)."""
        return [sum(r.buckets.get(b, 0) for r in self.roles) for b in range(int(start * 10), int(end * 10))]

    def telling(self) -> list[RoleResult]:
        """The roles whose request A and B answer differently."""
        return [r for r in self.roles if r.role.under_a != r.role.under_b]

    def describe(self) -> str:
        lines = [f"{self.requests} requests in {self.seconds:.1f}s, errors {self.errors}, p99 {self.p99_ms:.1f} ms"]
        for r in self.roles:
            shown = [(round(t - self.began, 3), c) for t, c in r.switches[:12]]
            lines.append(f"  {r.role.name}: statuses {r.counts}, A/B/X {r.n}, {r.switch_count} switches {shown}")
        return "\n".join(lines)


def run_load(port: int, roles: list[Role], directory: Path, *, seconds: int, events) -> tuple[LoadResult, object]:
    """wrk for `seconds` (one thread per role, 4 keep-alive connections each) while `events(began)`
    runs (it sleeps and pushes; its return value is handed back)."""
    script = wrk_script(roles, directory)
    cmd = ["wrk", f"-t{len(roles)}", f"-c{4 * len(roles)}", f"-d{seconds}s", "--timeout", "4s",
           "-s", str(script), f"http://127.0.0.1:{port}"]
    began = time.monotonic()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        outcome = events(began)
        output, _ = process.communicate(timeout=seconds + 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    match = re.search(r"^RECONF_JSON (\{.*\})$", output, re.M)
    assert match, f"wrk gave no result ({process.returncode}):\n{output[-3000:]}"
    data = json.loads(match.group(1))
    by_name = {r.name: r for r in roles}
    results = []
    for t in data["threads"]:
        switches = []
        for item in filter(None, t["switches"].split(";")):
            at, _, status_class = item.partition(":")
            switches.append((float(at), status_class))
        results.append(RoleResult(by_name[t["role"]], {int(s): c for s, c in t["counts"].items()}, t["n"],
                                  t["first"], t["last"], t["switch_count"], switches,
                                  {int(b): c for b, c in t["buckets"].items()}))
    load = LoadResult(data["requests"], data["duration_us"] / 1e6, data["errors"], data["p99_us"] / 1e3,
                      data["max_us"] / 1e3, results, began)
    return load, outcome


def assert_clean(load: LoadResult, ecds: EcdsEnvoy) -> None:
    """Every request answered (no connection error or timeout), no 5xx, none matching neither
    configuration, and both workers served."""
    context = load.describe() + "\n" + ecds.envoy.log_tail(15)
    assert load.errors == {"connect": 0, "read": 0, "write": 0, "timeout": 0}, context
    assert load.fivexx() == 0, context
    assert load.total("X") == 0, context
    assert load.requests >= 500, f"too little load to mean anything:\n{context}"
    workers = ecds.connections_per_worker()
    assert len(workers) == CONCURRENCY and all(workers.values()), (workers, context)


def report(what: str, **figures) -> None:
    print(f"\n[reconfigure] {what}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# ------------------------------------------------------------------------------------------
# (a) Keys rotated and a resource added, under load


def test_new_configuration_is_in_effect_within_2s_under_load_without_5xx_or_wrong_decisions(started, tmp_path):
    ecds = started(CONFIG_A)
    assert [ecds.status(r.path, r.token) for r in ROLES_AB] == [r.under_a for r in ROLES_AB], ecds.envoy.log_tail()

    def swap(began: float) -> float:
        time.sleep(2.0)
        return ecds.push(CONFIG_B)

    load, swapped_at = run_load(ecds.envoy.port, ROLES_AB, tmp_path, seconds=5, events=swap)
    context = f"swap at {swapped_at - load.began:.3f}s\n{load.describe()}\n{ecds.envoy.log_tail(15)}"
    assert_clean(load, ecds)
    assert ecds.ecds("update_success") == 2 and ecds.ecds("update_rejected") == 0, context

    first_b, last_a = load.first("B"), load.last("A")
    assert load.total("A") > 0 and load.total("B") > 0, context
    # No B answer before B was written; no A answer once B had taken over (but for the moment
    # the two workers take to switch): per role, and across roles.
    assert first_b >= swapped_at, f"a B answer {swapped_at - first_b:.3f}s before the swap\n{context}"
    for r in load.telling():
        assert r.last["A"] is not None and r.first["B"] is not None, context
        assert r.last["A"] - r.first["B"] <= OVERLAP_SECONDS, f"{r.role.name}: A after B\n{context}"
    overlap = max(0.0, last_a - first_b)
    assert overlap <= OVERLAP_SECONDS, context
    effect = last_a - swapped_at
    assert effect <= EFFECT_SECONDS, f"A still answered {effect:.3f}s after the swap\n{context}"
    # The load went on through the swap: answers in every 100 ms around it.
    around = load.answered_between(swapped_at - 0.5, swapped_at + 1.0)
    assert min(around) > 0, f"a stall around the swap: answers per 100 ms {around}\n{context}"
    # After the load: B, exactly.
    assert [ecds.status(r.path, r.token) for r in ROLES_AB] == [r.under_b for r in ROLES_AB]

    window = [c for r in load.roles for t, c in r.switches if abs(t - swapped_at) <= 1.0]
    report("keys rotated + /tools added under load",
           requests=load.requests, rps=round(load.requests / load.seconds),
           requests_within_1s_of_swap=sum(load.answered_between(swapped_at - 1.0, swapped_at + 1.0)),
           min_per_100ms_around_swap=min(around),
           requests_A=load.total("A"), requests_B=load.total("B"), fivexx=load.fivexx(), wrong=load.total("X"),
           first_B_after_swap_ms=round((first_b - swapped_at) * 1e3, 1),
           last_A_after_swap_ms=round(effect * 1e3, 1), overlap_ms=round(overlap * 1e3, 1),
           switches=sum(r.switch_count for r in load.roles), switch_points_near_swap=len(window),
           p99_ms=round(load.p99_ms, 1), max_ms=round(load.max_ms, 1),
           connections_per_worker=ecds.connections_per_worker())


# ------------------------------------------------------------------------------------------
# (b) An invalid configuration is refused; the previous one keeps serving


def _offline_access_required(config: dict) -> dict:
    broken = copy.deepcopy(config)
    broken["resources"][0]["required_scopes"] = ["offline_access"]
    return broken


def _unknown_field(config: dict) -> dict:
    broken = copy.deepcopy(config)
    broken["resources"][0]["scope"] = ["mcp:read"]  # `required_scopes` misspelled
    return broken


def test_invalid_configuration_is_refused_naming_the_field_and_the_previous_one_keeps_serving(started, tmp_path):
    ecds = started(CONFIG_A)

    def push_invalid(began: float) -> float:
        time.sleep(1.0)
        return ecds.push(_offline_access_required(CONFIG_B))

    load, pushed_at = run_load(ecds.envoy.port, ROLES_AB, tmp_path, seconds=3, events=push_invalid)
    context = f"invalid push at {pushed_at - load.began:.3f}s\n{load.describe()}\n{ecds.envoy.log_tail(20)}"
    assert_clean(load, ecds)
    # Every answer, before and after the refused push, is config A's.
    assert load.total("B") == 0 and load.total("A") == load.requests, context
    assert load.last("A") > pushed_at + 1.0, context  # A kept answering well after the push
    assert ecds.wait_ecds("update_rejected", 1) == 1, context
    assert ecds.ecds("update_success") == 1, context
    log = ecds.envoy.log_text()
    assert "mcp-oauth-filter: invalid configuration: resources[0].required_scopes[0]: " in log, context
    assert "offline_access" in log

    # Another refusal (an unknown field), then a valid configuration is still taken.
    ecds.push(_unknown_field(CONFIG_B))
    assert ecds.wait_ecds("update_rejected", 2) == 2, ecds.envoy.log_tail(20)
    assert re.search(r"mcp-oauth-filter: invalid configuration: resources\[0\][.:].*\bscope\b", ecds.envoy.log_text()), \
        ecds.envoy.log_tail(20)
    assert [ecds.status(r.path, r.token) for r in ROLES_AB] == [r.under_a for r in ROLES_AB], ecds.envoy.log_tail(20)
    pushed_at = ecds.push(CONFIG_B)
    while [ecds.status(r.path, r.token) for r in ROLES_AB] != [r.under_b for r in ROLES_AB]:
        assert time.monotonic() - pushed_at < EFFECT_SECONDS, ecds.envoy.log_tail(20)
        time.sleep(0.02)
    took = time.monotonic() - pushed_at
    assert ecds.ecds("update_success") == 2 and ecds.ecds("update_rejected") == 2
    report("invalid configuration refused under load",
           requests=load.requests, all_config_A=load.total("A") == load.requests, fivexx=load.fivexx(),
           wrong=load.total("X") + load.total("B"), update_rejected=ecds.ecds("update_rejected"),
           valid_after_refusals_in_effect_ms=round(took * 1e3, 1))


# ------------------------------------------------------------------------------------------
# (c) Fetched keys survive a reconfiguration that leaves their issuer unchanged


ROLES_REMOTE = [
    Role("mcp-rsa-a", "/mcp", TOKEN_A, 200, 200),  # the fetched key, before and after
    Role("tools-anonymous", "/tools", None, 200, 401),  # the resource B adds: tells A from B
]


def test_reconfiguration_leaving_a_fetched_issuer_unchanged_does_not_refetch_its_keys(started, tmp_path):
    with KeyServer() as keys:
        keys.serve_jwks(JWKS_PATH, ["rsa-a"], cache_control="max-age=600")
        ecds = started(remote_config(), extra_clusters=[keys.cluster("keyserver")])
        deadline = time.monotonic() + 5
        while ecds.status("/mcp", TOKEN_A) != 200:
            assert time.monotonic() < deadline, (keys.paths(), ecds.envoy.log_tail())
            time.sleep(0.05)
        time.sleep(0.5)  # every worker has the keys: a late second fetch would show now
        warm = keys.count(JWKS_PATH)
        assert warm == 1, keys.paths()

        def swap(began: float) -> float:
            time.sleep(1.0)
            return ecds.push(remote_config(tools=True))

        load, swapped_at = run_load(ecds.envoy.port, ROLES_REMOTE, tmp_path, seconds=4, events=swap)
        context = (f"swap at {swapped_at - load.began:.3f}s; key server saw {keys.paths()}\n"
                   f"{load.describe()}\n{ecds.envoy.log_tail(15)}")
        assert_clean(load, ecds)
        assert ecds.ecds("update_success") == 2, context
        [tools] = load.telling()
        assert tools.first["B"] is not None and tools.first["B"] >= swapped_at, context
        assert tools.last["A"] - swapped_at <= EFFECT_SECONDS, context
        # The fetched key allowed every request, before and after: the new instance had the keys
        # without waiting (no 503) and without fetching.
        [mcp] = [r for r in load.roles if r.role.name == "mcp-rsa-a"]
        assert mcp.counts == {200: mcp.n["A"]}, context
        assert keys.count(JWKS_PATH) == warm, context
        time.sleep(1.0)
        assert keys.count(JWKS_PATH) == warm, context
        report("fetched issuer unchanged by a reconfiguration",
               requests=load.requests, fivexx=load.fivexx(), wrong=load.total("X"),
               fetches_before=warm, fetches_after=keys.count(JWKS_PATH),
               seconds_watched_after_swap=round(time.monotonic() - swapped_at, 1),
               tools_in_effect_ms=round((tools.last["A"] - swapped_at) * 1e3, 1))


# ------------------------------------------------------------------------------------------
# (d) A reconfiguration during the first fetch must not strand the issuer


FETCH_DELAY = 3.0  # the key server answers every JWKS request this late (normal fetch time)


def test_reconfiguration_during_the_first_key_fetch_recovers_within_the_normal_fetch_time(started):
    with KeyServer() as keys:
        keys.serve_jwks(JWKS_PATH, ["rsa-a"], cache_control="max-age=600", delay=FETCH_DELAY)
        ecds = started(remote_config(), extra_clusters=[keys.cluster("keyserver")])
        # The first fetch is out (the key server holds its answer FETCH_DELAY s); no request yet,
        # so nothing keeps the old instance alive: Envoy tears it down at the swap.
        assert keys.wait_for_count(JWKS_PATH, 1, 3.0) >= 1, ecds.envoy.log_tail()
        first_fetch = keys.log()[0].at
        pushed_at = ecds.push(remote_config(tools=True))
        assert ecds.wait_ecds("update_success", 2) == 2, ecds.envoy.log_tail()

        answers: list[tuple[float, float, int]] = []  # (sent, answered, status), relative to the push
        deadline = pushed_at + 18.0
        while time.monotonic() < deadline:
            sent = time.monotonic()
            status = ecds.status("/mcp", TOKEN_A, timeout=12.0)
            answers.append((round(sent - pushed_at, 2), round(time.monotonic() - pushed_at, 2), status))
            if status == 200:
                break
            time.sleep(0.1)
        fetches = [(round(s.at - pushed_at, 2), s.path) for s in keys.log()]
        context = (f"first fetch {first_fetch - pushed_at:+.2f}s from the push; answers {answers}; "
                   f"key server (s from the push) {fetches}\n{ecds.envoy.log_tail(15)}")
        statuses = {status for _, _, status in answers}
        assert statuses <= {200, 503}, context
        assert answers and answers[-1][2] == 200, f"never allowed within 18 s: {context}"
        recovered = answers[-1][1]
        unavailable = max((answered for _, answered, status in answers if status == 503), default=0.0)
        report("reconfiguration during the first key fetch",
               recovered_after_push_s=recovered, last_503_after_push_s=unavailable,
               answers=answers, fetches=fetches)
        assert recovered <= FETCH_DELAY + 2.5, f"allowed only {recovered:.1f}s after the push: {context}"
        # The new instance fetched at once (or took the keys of the fetch already in flight), and
        # only once: not after the old instance's lease ran out, and not in a storm.
        later = [at for at, _ in fetches if at > 0]
        assert not later or later[0] <= 1.5, context
        assert len(fetches) <= 2, context
