"""What a valid request looks like at the upstream: the "forwarded" row of the README's decision
table (Challenges and decisions) and the header handling of its Configuration section
(`claims_to_headers`, `forward_authorization`)."""
from __future__ import annotations

import pytest

import expect
import scenario
from harness import tokens
from scenario import MCP_PATH, SUBJECT_HEADER, TOOLS, TOOLS_PATH

ALGORITHMS = [
    ("rsa-a", "RS256"),
    ("rsa-a", "RS384"),
    ("rsa-a", "RS512"),
    ("rsa-b", "PS256"),
    ("rsa-b", "PS384"),
    ("rsa-b", "PS512"),
    ("ec-p256", "ES256"),
    ("ec-p384", "ES384"),
    ("ed25519", "EdDSA"),
]


@pytest.mark.parametrize("key, alg", ALGORITHMS, ids=[f"{alg}-{key}" for key, alg in ALGORITHMS])
def test_forwards_request_with_valid_token_for_each_algorithm(client, key, alg):
    seen = expect.forwarded_once(client.get(MCP_PATH, token=scenario.token(key=key, alg=alg, subject=f"user-{alg}")))
    assert seen.header_values("authorization") == []
    assert seen.header_values(SUBJECT_HEADER) == [f"user-{alg}"]


ACCEPTED_CLAIMS = {  # claim overrides, built when the test runs (times are relative to now)
    "scope-among-others": lambda: {"scope": "other mcp:read mcp:write"},
    "scp-string": lambda: {"scope": None, "scp": "mcp:read"},
    "scp-array": lambda: {"scope": None, "scp": ["other", "mcp:read"]},
    "audience-list-with-resource": lambda: {"audience": ["https://evil.example.com", scenario.MCP]},
    "expired-within-skew": lambda: {"at": tokens.now() - 330, "lifetime": 300},  # exp 30 s ago, skew 60 s
    "nbf-within-skew": lambda: {"nbf": tokens.now() + 30},
}


@pytest.mark.parametrize("claim_kwargs", ACCEPTED_CLAIMS.values(), ids=ACCEPTED_CLAIMS.keys())
def test_forwards_request_with_acceptable_claims(client, claim_kwargs):
    expect.forwarded_once(client.get(MCP_PATH, token=scenario.token(**claim_kwargs())))


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_matches_the_bearer_scheme_case_insensitively(client, scheme):
    reply = client.get(MCP_PATH, headers=[("Authorization", f"{scheme} {scenario.token()}")])
    expect.forwarded_once(reply)


def test_invalid_lowercase_bearer_token_is_treated_as_a_bearer_token(client):
    reply = client.get(MCP_PATH, headers=[("Authorization", "bearer abc")])
    assert reply.status == 401, reply.describe()
    assert reply.challenge().get("error") == "invalid_token"
    expect.not_forwarded(reply)


def test_accepts_token_without_kid_when_the_issuer_has_one_key_of_its_type(client):
    token = tokens.mint(scenario.claims(), key="ed25519", kid=None)
    expect.forwarded_once(client.get(MCP_PATH, token=token))


def test_accepts_resource_without_required_scopes_for_token_without_scope(client):
    token = scenario.token(TOOLS, scope=None)
    seen = expect.forwarded_once(client.get(TOOLS_PATH, token=token))
    assert seen.header_values(SUBJECT_HEADER) == ["user-123"]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PUT", "PATCH"])
def test_forwards_every_method_with_its_body(client, method):
    body = '{"jsonrpc":"2.0","id":1,"method":"ping"}' if method in ("POST", "PUT", "PATCH") else None
    seen = expect.forwarded_once(client.request(method, MCP_PATH, token=scenario.token(), body=body))
    assert seen.method == method
    assert seen.path == MCP_PATH
    assert seen.body == (body or "").encode()


@pytest.mark.parametrize(
    "forged", [[("x-mcp-subject", "forged")], [("X-MCP-Subject", "forged"), ("x-mcp-subject", "forged-again")]],
    ids=["one", "several-mixed-case"],
)
def test_replaces_client_sent_claim_header_with_the_token_subject(client, forged):
    seen = expect.forwarded_once(client.get(MCP_PATH, token=scenario.token(subject="alice"), headers=forged))
    assert seen.header_values(SUBJECT_HEADER) == ["alice"]


def test_removes_client_sent_claim_header_when_the_token_lacks_the_claim(client):
    reply = client.get(MCP_PATH, token=scenario.token(subject=None), headers=[("x-mcp-subject", "forged")])
    seen = expect.forwarded_once(reply)
    assert seen.header_values(SUBJECT_HEADER) == []


def test_removes_authorization_before_the_upstream_by_default(client):
    seen = expect.forwarded_once(client.get(MCP_PATH, token=scenario.token()))
    assert seen.header_values("authorization") == []


def test_forwards_authorization_when_configured(forwarding_client):
    token = scenario.token(subject="bob")
    seen = expect.forwarded_once(forwarding_client.get(MCP_PATH, token=token))
    assert seen.header_values("authorization") == [f"Bearer {token}"]
    assert seen.header_values(SUBJECT_HEADER) == ["bob"]

