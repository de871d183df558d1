"""The demo's moving parts: free ports, the toy MCP upstream, the Envoy process.

Everything listens on 127.0.0.1. Envoy's configuration is `envoy/envoy.yaml` rendered with the
ports and the resource URL of this run, so that file stays the single source.
"""

from __future__ import annotations

import copy
import ctypes
import json
import pathlib
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WASM_FILTER = "envoy.filters.http.wasm"


def free_ports(count: int) -> list[int]:
    """Ports the kernel considers free right now (bind port 0, read it, close)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: the well-known segment goes between the host and the resource's path."""
    parts = urllib.parse.urlsplit(resource)
    path = parts.path.rstrip("/") if parts.path != "/" else ""
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{path}"


# ---------------------------------------------------------------------------- Envoy bootstrap


def _set_port(socket_address: dict, port: int) -> None:
    socket_address["port_value"] = port


def _wasm_configs(bootstrap: dict):
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for net_filter in chain["filters"]:
                for http_filter in net_filter.get("typed_config", {}).get("http_filters", []):
                    if http_filter.get("name") == WASM_FILTER:
                        yield http_filter["typed_config"]["config"]


def render_bootstrap(
    template: pathlib.Path,
    wasm: pathlib.Path,
    *,
    proxy_port: int,
    upstream_port: int,
    admin_port: int,
    resource: str,
) -> dict:
    """envoy/envoy.yaml with this run's ports, the absolute .wasm path and the resource URL.

    The file has one listener, one upstream cluster and one resource in the plugin JSON; the
    resource is replaced by the URL clients will actually use, because the filter compares it
    byte for byte with the token's audience and builds the metadata URL from it.
    """
    bootstrap = copy.deepcopy(yaml_load(template))
    _set_port(bootstrap["admin"]["address"]["socket_address"], admin_port)
    listeners = bootstrap["static_resources"]["listeners"]
    if len(listeners) != 1:
        raise ValueError(f"{template}: expected one listener, found {len(listeners)}")
    _set_port(listeners[0]["address"]["socket_address"], proxy_port)
    for cluster in bootstrap["static_resources"]["clusters"]:
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                _set_port(endpoint["endpoint"]["address"]["socket_address"], upstream_port)

    found = False
    for config in _wasm_configs(bootstrap):
        found = True
        config["vm_config"]["code"]["local"]["filename"] = str(wasm)
        plugin = json.loads(config["configuration"]["value"])
        if len(plugin["resources"]) != 1:
            raise ValueError(f"{template}: the demo expects exactly one resource in the plugin config")
        plugin["resources"][0]["resource"] = resource
        config["configuration"]["value"] = json.dumps(plugin, indent=2) + "\n"
    if not found:
        raise ValueError(f"{template}: no {WASM_FILTER} filter")
    return bootstrap


def yaml_load(path: pathlib.Path) -> dict:
    import yaml

    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


# ---------------------------------------------------------------------------- demo upstream


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = field(repr=False)


class DemoUpstream:
    """A toy MCP server: answers JSON-RPC on POST /mcp and remembers what reached it."""

    def __init__(self, port: int):
        self.port = port
        self.seen: list[SeenRequest] = []
        self._mark = 0
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args) -> None:  # keep the walkthrough readable
                pass

            def _record(self) -> bytes:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                with upstream._lock:
                    upstream.seen.append(SeenRequest(self.command, self.path, headers, body))
                return body

            def _reply(self, status: int, payload: object) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self._record()
                try:
                    message = json.loads(body or b"null")
                except ValueError:
                    self._reply(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
                    return
                if not isinstance(message, dict):
                    self._reply(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}})
                    return
                self._reply(200, {"jsonrpc": "2.0", "id": message.get("id"), "result": answer(message, self.headers)})

            def do_GET(self) -> None:  # noqa: N802
                self._record()
                # This toy server offers no SSE stream (MCP streamable HTTP allows 405 here).
                self._reply(405, {"error": "method not allowed"})

            do_DELETE = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-upstream", daemon=True)

    def __enter__(self) -> "DemoUpstream":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def mark(self) -> None:
        with self._lock:
            self._mark = len(self.seen)

    def seen_since_mark(self) -> list[SeenRequest]:
        with self._lock:
            return list(self.seen[self._mark:])


def answer(message: dict, headers) -> dict:
    """What a small MCP server would say; `tools/call` of `echo` echoes its arguments."""
    method = message.get("method")
    params = message.get("params") or {}
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2026-07-28"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "demo-mcp-upstream", "version": "0.1.0"},
        }
    if method == "tools/list":
        return {"tools": [{"name": "echo", "description": "Echoes its text", "inputSchema": {"type": "object"}}]}
    if method == "tools/call":
        text = json.dumps(params.get("arguments", {}))
        subject = headers.get("x-mcp-subject")
        if subject:
            text += f" (caller: {subject})"
        return {"content": [{"type": "text", "text": text}], "isError": False}
    return {"echo": {"method": method, "params": params}}


# ---------------------------------------------------------------------------------- Envoy


class EnvoyStartError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """Linux: SIGTERM the child if the demo itself is killed without a chance to clean up."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EnvoyProcess:
    """Envoy on a bootstrap rendered from envoy/envoy.yaml.

    (The harness's `Envoy` builds its own bootstrap on port 0; the demo must know its port before
    Envoy starts, since the port is part of the resource URL inside the plugin configuration.)
    """

    def __init__(self, config: pathlib.Path, admin_port: int, workdir: pathlib.Path, binary: str):
        self.admin_port = admin_port
        self.log_path = workdir / "envoy.log"
        self.command = [
            binary,
            "-c", str(config),
            "--disable-hot-restart",
            "--concurrency", "2",
            "--log-level", "warning",
            "--component-log-level", "wasm:info",  # the filter's own lines, not startup noise
            "--log-path", str(self.log_path),
        ]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "EnvoyProcess":
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops Envoy in order
            preexec_fn=_die_with_parent,
        )
        return self

    def __exit__(self, *_exc) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.admin_port}/ready"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise EnvoyStartError(f"envoy exited with status {self.process.returncode}")
            try:
                with opener.open(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise EnvoyStartError(f"not ready after {timeout:.0f}s")

    def wait_exit(self) -> int:
        assert self.process is not None
        return self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no Envoy log)"
        return "\n".join(text.splitlines()[-lines:])
