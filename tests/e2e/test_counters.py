"""SPEC §8: the filter's counters, as Envoy's admin /stats shows them."""
from __future__ import annotations

import scenario
from scenario import MCP_METADATA_PATH, MCP_PATH, TOOLS_METADATA_PATH

DENIED_PREFIX = "mcp_oauth_requests_denied_"


def _denied_total(stats: dict[str, int]) -> int:
    return sum(value for name, value in stats.items() if name.startswith(DENIED_PREFIX))


def test_counts_allowed_denied_and_metadata_requests(client, envoy):
    before = envoy.stats()
    statuses = [
        client.get(MCP_PATH, token=scenario.token()).status,
        client.request("POST", MCP_PATH, token=scenario.token(key="ec-p256"), body="{}").status,
        client.get(MCP_METADATA_PATH).status,
        client.get(TOOLS_METADATA_PATH).status,
        client.get(MCP_METADATA_PATH).status,
        client.get(MCP_PATH).status,
        client.get(MCP_PATH, headers=[("Authorization", "Bearer a b")]).status,
        client.get(MCP_PATH, token="abc").status,
        client.get(MCP_PATH, token=scenario.token(scope="other")).status,
    ]
    assert statuses == [200, 200, 200, 200, 200, 401, 400, 401, 403]
    after = envoy.stats()
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    assert delta.get("mcp_oauth_requests_allowed") == 2, after
    assert delta.get("mcp_oauth_metadata_served") == 3, after
    assert _denied_total(after) - _denied_total(before) == 4, after
