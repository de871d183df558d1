"""SPEC §1/§2: an invalid plugin configuration makes Envoy refuse the filter, naming the field."""
from __future__ import annotations

import copy

import pytest

import scenario
from harness import start_expecting_failure, validate_config


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
