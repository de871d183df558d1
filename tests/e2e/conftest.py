"""Fixtures for the wire tests: one echo upstream per session, one Envoy per distinct plugin
configuration (started on first use, reused by every test that asks for the same configuration,
stopped at the end of the session).

The .wasm is `target/wasm32-wasip1/release/mcp_oauth_filter.wasm` (env `MCP_OAUTH_WASM`
overrides); when it is missing it is built as `make build` does (cargo, then tools/trim_exports.py).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import scenario
from harness import Client, EchoUpstream, Envoy
from harness.envoy import build_wasm, find_wasm


@pytest.fixture(scope="session")
def wasm_path() -> Path:
    path = find_wasm()
    if not path.exists() and not os.environ.get("MCP_OAUTH_WASM"):
        build_wasm()
    if not path.exists():
        pytest.fail(f"no filter wasm at {path}")
    return path


@pytest.fixture(scope="session")
def upstream():
    with EchoUpstream() as server:
        yield server


class EnvoyPool:
    """Envoys by plugin configuration: `get(config)` starts one the first time, then reuses it."""

    def __init__(self, upstream: EchoUpstream, wasm_path: Path):
        self.upstream = upstream
        self.wasm_path = wasm_path
        self._envoys: dict[str, Envoy] = {}

    def get(self, plugin_config: dict, **options) -> Envoy:
        key = json.dumps([plugin_config, options], sort_keys=True)
        if key not in self._envoys:
            envoy = Envoy(plugin_config, self.upstream.port, wasm_path=self.wasm_path, **options)
            self._envoys[key] = envoy.start()
        return self._envoys[key]

    def client(self, plugin_config: dict, **options) -> Client:
        """A client of the Envoy for `plugin_config` that sees the shared upstream."""
        envoy = self.get(plugin_config, **options)
        gateway = Client(envoy.port, self.upstream)
        gateway.envoy = envoy  # for the log tail on failure
        return gateway

    def stop_all(self) -> None:
        for envoy in self._envoys.values():
            envoy.stop()
        self._envoys.clear()


@pytest.fixture(scope="session")
def envoys(upstream, wasm_path):
    pool = EnvoyPool(upstream, wasm_path)
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def envoy(envoys) -> Envoy:
    """The main Envoy: `scenario.plugin_config()` (two resources, defaults everywhere else)."""
    return envoys.get(scenario.plugin_config())


@pytest.fixture
def client(envoys, envoy) -> Client:
    """A client of the main Envoy."""
    return envoys.client(scenario.plugin_config())


@pytest.fixture
def single_resource_client(envoys) -> Client:
    """An Envoy with only the /mcp resource, which also has `resource_documentation`."""
    return envoys.client(scenario.single_resource_config(resource_documentation="https://mcp.example.com/docs"))


@pytest.fixture
def forwarding_client(envoys) -> Client:
    """An Envoy like the main one but with `forward_authorization: true`."""
    return envoys.client(scenario.plugin_config(forward_authorization=True))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    seen = set()
    for value in getattr(item, "funcargs", {}).values():
        candidate = value if isinstance(value, Envoy) else getattr(value, "envoy", None)
        if isinstance(candidate, Envoy) and id(candidate) not in seen:
            seen.add(id(candidate))
            report.sections.append((f"envoy log tail ({candidate.log_path})", candidate.log_tail(30)))
