"""Wire-test harness for mcp-oauth-filter: a real Envoy running the real .wasm, over loopback.

Modules:
- `tokens`: mint JWS compact tokens by hand from the fixed keys in `tests/fixtures`
  (every algorithm the filter accepts, plus the attacks it must refuse).
- `upstream`: an echo HTTP/1.1 server that records everything that reaches it.
- `envoy`: render a bootstrap, start/stop Envoy with the filter, read its stats and log.
- `wire`: send exact requests (raw paths, repeated headers) and parse `WWW-Authenticate`.
- `h2c`: one HTTP/2 cleartext request, for header fields HTTP/1.1 would fold together.

Typical use::

    from harness import EchoUpstream, Envoy, Client, tokens

    with EchoUpstream() as upstream, Envoy(plugin_config, upstream.port) as envoy:
        client = Client(envoy.port, upstream)
        reply = client.request("GET", "/mcp", token=tokens.mint(claims))
        assert reply.status == 200 and reply.upstream_requests
"""
from . import h2c, tokens
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
from .upstream import EchoUpstream, RecordedRequest
from .wire import Challenge, Client, Reply, parse_www_authenticate, split_header_list

__all__ = [
    "COUNTER_FLUSH_SECONDS",
    "Challenge",
    "Client",
    "EchoUpstream",
    "Envoy",
    "EnvoyStartError",
    "RecordedRequest",
    "Reply",
    "StartOutcome",
    "find_envoy_binary",
    "h2c",
    "find_wasm",
    "parse_www_authenticate",
    "render_bootstrap",
    "split_header_list",
    "start_expecting_failure",
    "tokens",
    "validate_config",
]
