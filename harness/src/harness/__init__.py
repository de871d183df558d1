"""The Python harness of mcp-oauth-filter: a real Envoy running the real .wasm, over loopback,
for the wire tests, the benchmark, the demo and the soak test alike.

Modules:
- `envoy`: render a bootstrap, start/stop Envoy with the filter, read its stats, memory and log.
- `upstream`: an echo HTTP/1.1 server that records everything that reaches it.
- `wire`: exact HTTP/1.1 requests (`Client.request`; `Client.raw_request` writes them by hand:
  chunked bodies with pauses and trailers, headers then a pause, raw header bytes) and the
  `WWW-Authenticate` parser.
- `h2c`: HTTP/2 cleartext requests (separate repeated fields, DATA in pieces, trailers), with
  the responses fully decoded.
- `tokens`: mint JWS compact tokens by hand from the fixed keys in `tests/fixtures`.
- `keyserver`: a controllable JWKS/discovery server behind an Envoy cluster.
- `peers`: the authorization server, MCP server and client processes of `peers/`.
- `scenario`: the plugin configurations, tokens and JSON-RPC calls the tests and the soak
  test share (the tests read it as `import scenario`).
- `processes`: free ports, and child processes stopped by process group (never by name).
- `wasm`, `paths`: the filter module (find, build, trim exports) and the repository's layout.

Typical use::

    from harness import EchoUpstream, Envoy, Client, tokens

    with EchoUpstream() as upstream, Envoy(plugin_config, upstream.port) as envoy:
        client = Client(envoy.port, upstream)
        reply = client.request("GET", "/mcp", token=tokens.mint(claims))
        assert reply.status == 200 and reply.upstream_requests
"""
from . import h2c, processes, tokens
from .envoy import (
    COUNTER_FLUSH_SECONDS,
    Envoy,
    EnvoyStartError,
    StartOutcome,
    find_envoy_binary,
    find_wasm,
    render_bootstrap,
    start_expecting_failure,
    validate_config,
)
from .h2c import H2Reply
from .processes import free_port
from .upstream import EchoUpstream, RecordedRequest
from .wire import Challenge, Client, Reply, parse_www_authenticate, split_header_list

__all__ = [
    "COUNTER_FLUSH_SECONDS",
    "Challenge",
    "Client",
    "EchoUpstream",
    "Envoy",
    "EnvoyStartError",
    "H2Reply",
    "RecordedRequest",
    "Reply",
    "StartOutcome",
    "find_envoy_binary",
    "find_wasm",
    "free_port",
    "h2c",
    "parse_www_authenticate",
    "processes",
    "render_bootstrap",
    "split_header_list",
    "start_expecting_failure",
    "tokens",
    "validate_config",
]
