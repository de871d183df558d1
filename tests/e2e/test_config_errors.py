"""An invalid plugin configuration makes Envoy refuse the filter, naming the field (README,
Configuration): every configuration error is found in on_configure, none per request."""
from __future__ import annotations

import copy
import re

import pytest

import scenario
from harness import start_expecting_failure, validate_config
from scenario import HOLD_HEADERS, mcp_scopes_config


def _broken(mutate) -> dict:
    config = copy.deepcopy(scenario.plugin_config())
    mutate(config)
    return config


def _set_resource(field, value):
    return lambda c: c["resources"][0].__setitem__(field, value)


INVALID_CONFIGS = {
    "unknown-top-level-field": (lambda c: c.__setitem__("bogus_field", 1), "bogus_field"),
    "authorization-server-without-issuer-entry": (
        _set_resource("authorization_servers", ["https://unknown.example.com"]),
        "resources[0].authorization_servers[0]",
    ),
    "empty-authorization-servers": (_set_resource("authorization_servers", []), "resources[0].authorization_servers"),
    "hmac-algorithm": (lambda c: c["issuers"][0].__setitem__("algorithms", ["HS256"]), "issuers[0].algorithms"),
    "resource-not-a-url": (_set_resource("resource", "not a url"), "resources[0].resource"),
    "resource-with-fragment": (_set_resource("resource", "https://mcp.example.com/mcp#frag"), "resources[0].resource"),
    "unknown-resource-field": (_set_resource("scope", ["mcp:read"]), "resources[0]"),
}


@pytest.mark.parametrize("mutate, field_path", INVALID_CONFIGS.values(), ids=INVALID_CONFIGS.keys())
def test_envoy_refuses_invalid_plugin_configuration_naming_the_field(upstream, wasm_path, mutate, field_path):
    outcome = start_expecting_failure(_broken(mutate), upstream.port, wasm_path=wasm_path, timeout=20)
    tail = "\n".join(outcome.log.splitlines()[-25:])
    assert not outcome.became_ready, f"envoy became ready with an invalid configuration:\n{tail}"
    assert outcome.exit_code != 0, f"envoy exited 0:\n{tail}"
    assert field_path in outcome.log, f"log does not name {field_path!r}:\n{tail}"


def test_envoy_refuses_plugin_configuration_that_is_not_json(upstream, wasm_path):
    outcome = start_expecting_failure("{not json", upstream.port, wasm_path=wasm_path, timeout=20)
    assert not outcome.became_ready and outcome.exit_code != 0, outcome.log[-2000:]


def test_envoy_validate_mode_accepts_the_rendered_configuration(upstream, wasm_path):
    result = validate_config(scenario.plugin_config(), upstream.port, wasm_path=wasm_path)
    assert result.returncode == 0, result.stdout[-3000:]


# ------------------------------------------------------------------------------------------
# MCP-aware authorization (README, MCP-aware authorization)


CYCLES = {
    "two-cycle": {"a": ["b"], "b": ["a"]},
    "self-loop": {"mcp:admin": ["mcp:admin"]},
    "three-cycle-behind-a-chain": {"mcp:admin": ["x"], "x": ["y"], "y": ["z"], "z": ["x"]},
}


@pytest.mark.parametrize("implies", CYCLES.values(), ids=CYCLES.keys())
def test_scope_implies_cycle_makes_envoy_refuse_to_start(upstream, wasm_path, implies):
    config = mcp_scopes_config(scope_implies=implies)
    outcome = start_expecting_failure(
        config, upstream.port, wasm_path=wasm_path, timeout=20, wasm_config_extra=HOLD_HEADERS
    )
    tail = "\n".join(outcome.log.splitlines()[-25:])
    assert not outcome.became_ready, f"envoy became ready with a cyclic scope_implies:\n{tail}"
    assert outcome.exit_code != 0, tail
    members = "|".join(re.escape(scope) for scope in implies)
    assert re.search(rf"scope_implies\.({members})\b", outcome.log), f"log does not name scope_implies.<scope>:\n{tail}"
    assert "cycle" in outcome.log.lower(), f"log does not say cycle:\n{tail}"


def test_max_body_bytes_of_zero_is_refused(upstream, wasm_path):
    outcome = start_expecting_failure(mcp_scopes_config(max_body_bytes=0), upstream.port, wasm_path=wasm_path, timeout=20)
    tail = "\n".join(outcome.log.splitlines()[-25:])
    assert not outcome.became_ready and outcome.exit_code != 0, tail
    assert "max_body_bytes" in outcome.log, tail
