"""The optional fields of the configuration (README, Configuration) change behaviour on the wire
(an Envoy with non-default values)."""
from __future__ import annotations

import pytest

import expect
import scenario
from harness import Client, tokens
from scenario import MCP_PATH

LEGACY_AUDIENCE = "api://mcp-legacy"
CLAIM_HEADERS = {
    "x-mcp-subject": "sub",
    "x-mcp-client": "client_id",
    "x-mcp-level": "level",
    "x-mcp-admin": "admin",
}


def tuned_config() -> dict:
    config = scenario.single_resource_config(audiences=[LEGACY_AUDIENCE])
    config["issuers"][0]["algorithms"] = ["ES256", "EdDSA"]
    config.update(clock_skew_seconds=0, max_token_bytes=2048, claims_to_headers=CLAIM_HEADERS)
    return config


@pytest.fixture
def tuned(envoys) -> Client:
    """An Envoy with skew 0, max_token_bytes 2048, an extra audience, ES256/EdDSA only, and
    four claim headers."""
    return envoys.client(tuned_config())


def _es256(**claim_kwargs) -> str:
    return scenario.token(key="ec-p256", **claim_kwargs)


def assert_invalid_token(reply) -> None:
    assert reply.status == 401, reply.describe()
    assert reply.challenge().get("error") == "invalid_token"
    expect.not_forwarded(reply)


def test_accepts_only_the_configured_algorithms(tuned):
    expect.forwarded_once(tuned.get(MCP_PATH, token=_es256()))
    expect.forwarded_once(tuned.get(MCP_PATH, token=scenario.token(key="ed25519")))
    assert_invalid_token(tuned.get(MCP_PATH, token=scenario.token(key="rsa-a")))
    assert_invalid_token(tuned.get(MCP_PATH, token=scenario.token(key="ec-p384")))


def test_applies_a_zero_clock_skew(tuned):
    assert_invalid_token(tuned.get(MCP_PATH, token=_es256(at=tokens.now() - 330, lifetime=300)))
    assert_invalid_token(tuned.get(MCP_PATH, token=_es256(nbf=tokens.now() + 30)))


def test_rejects_tokens_larger_than_max_token_bytes(tuned):
    token = _es256(padding="x" * 2100)
    assert len(token) > 2048
    assert_invalid_token(tuned.get(MCP_PATH, token=token))


def test_default_max_token_bytes_accepts_a_6_kb_token(client):
    token = scenario.token(padding="x" * 4500)
    assert 6000 < len(token) < 8192
    expect.forwarded_once(client.get(MCP_PATH, token=token))


def test_accepts_extra_configured_audience(tuned):
    expect.forwarded_once(tuned.get(MCP_PATH, token=_es256(audience=LEGACY_AUDIENCE)))
    expect.forwarded_once(tuned.get(MCP_PATH, token=_es256(audience=["https://x.example.com", LEGACY_AUDIENCE])))


def test_maps_string_number_and_bool_claims_to_headers(tuned):
    token = _es256(subject="carol", client_id="app-1", level=3, admin=True)
    seen = expect.forwarded_once(tuned.get(MCP_PATH, token=token, headers=[("x-mcp-admin", "forged")]))
    assert [seen.header_values(name) for name in CLAIM_HEADERS] == [["carol"], ["app-1"], ["3"], ["true"]]


def test_never_injects_headers_from_claim_values(tuned):
    token = _es256(subject="mallory\r\nx-injected: 1", client_id="a\nb")
    reply = tuned.get(MCP_PATH, token=token)
    assert reply.status in (200, 401), reply.describe()
    for seen in reply.upstream_requests:
        assert seen.header_values("x-injected") == []
        assert all("\r" not in v and "\n" not in v for _, v in seen.headers), seen.headers


def test_envoy_still_serves_after_hostile_claim_values(tuned):
    expect.forwarded_once(tuned.get(MCP_PATH, token=_es256()))
