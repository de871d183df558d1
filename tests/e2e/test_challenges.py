"""The 400/401/403 decisions and their exact `WWW-Authenticate` challenges (README, Challenges
and decisions; RFC 6750 §3)."""
from __future__ import annotations

import json

import pytest

import expect
import scenario
from harness import h2c, tokens
from scenario import ISSUER, MCP, MCP_METADATA_URL, MCP_PATH, MCP_REQUIRED_SCOPE, TOOLS, TOOLS_METADATA_URL, TOOLS_PATH

# -- 401 without credentials ------------------------------------------------------------------

NO_CREDENTIALS = {
    "no-authorization": [],
    "basic": [("Authorization", "Basic dXNlcjpwYXNz")],
    "unknown-scheme": [("Authorization", "Token abc")],
    "scheme-with-bearer-prefix": [("Authorization", "Bearerx abc.def.ghi")],
}


@pytest.mark.parametrize("headers", NO_CREDENTIALS.values(), ids=NO_CREDENTIALS.keys())
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_challenges_request_without_bearer_credentials(client, headers, method):
    reply = client.request(method, MCP_PATH, headers=headers, body="{}" if method == "POST" else None)
    expect.challenge(reply, 401, [("resource_metadata", MCP_METADATA_URL), ("scope", MCP_REQUIRED_SCOPE)])
    expect.error_body(reply, "invalid_token")
    expect.not_forwarded(reply)


def test_challenge_has_no_scope_when_the_resource_requires_none(client):
    reply = client.get(TOOLS_PATH)
    expect.challenge(reply, 401, [("resource_metadata", TOOLS_METADATA_URL)])
    expect.not_forwarded(reply)


def test_challenge_metadata_url_ignores_the_request_host(client):
    reply = client.get(MCP_PATH, host_header="evil.example.net")
    expect.challenge(reply, 401, [("resource_metadata", MCP_METADATA_URL), ("scope", MCP_REQUIRED_SCOPE)])
    expect.not_forwarded(reply)


def test_denied_request_with_a_large_body_reaches_no_upstream(client):
    reply = client.request("POST", MCP_PATH, body="x" * 1_000_000)
    assert reply.status == 401, reply.describe()
    expect.not_forwarded(reply)


# -- 400 invalid_request ----------------------------------------------------------------------

def _twice(name: str):
    return lambda: (MCP_PATH, [(name, f"Bearer {scenario.token()}"), (name, f"Bearer {scenario.token()}")])


INVALID_REQUESTS = {
    "bearer-without-token": lambda: (MCP_PATH, [("Authorization", "Bearer")]),
    "bearer-with-two-words": lambda: (MCP_PATH, [("Authorization", "Bearer a b")]),
    "bearer-with-comma": lambda: (MCP_PATH, [("Authorization", "Bearer tok,en")]),
    "bearer-with-char-outside-b64token": lambda: (MCP_PATH, [("Authorization", "Bearer tok@en")]),
    "two-authorization-headers": _twice("Authorization"),
    "two-authorization-headers-differing-case": lambda: (
        MCP_PATH,
        [("Authorization", f"Bearer {scenario.token()}"), ("authorization", "Bearer x.y.z")],
    ),
    "access-token-in-query": lambda: (f"{MCP_PATH}?access_token={scenario.token()}", []),
    "access-token-in-query-and-header": lambda: (
        f"{MCP_PATH}?x=1&access_token=abc",
        [("Authorization", f"Bearer {scenario.token()}")],
    ),
}


@pytest.mark.parametrize("make", INVALID_REQUESTS.values(), ids=INVALID_REQUESTS.keys())
def test_rejects_broken_bearer_request_with_invalid_request(client, make):
    path, headers = make()
    reply = client.request("GET", path, headers=headers)
    expect.challenge(
        reply, 400, [("error", "invalid_request"), ("error_description", None), ("resource_metadata", MCP_METADATA_URL)]
    )
    expect.error_body(reply, "invalid_request")
    expect.not_forwarded(reply)


def test_forwards_single_authorization_field_over_http2(client, upstream):
    reply = h2c.request(client.port, "GET", MCP_PATH, [("authorization", f"Bearer {scenario.token()}")])
    assert reply.status == 200, reply
    assert len(upstream.requests_with_test_id(reply.test_id)) == 1


@pytest.mark.parametrize("second", ["valid-token", "garbage"])
def test_rejects_two_authorization_fields_over_http2_with_invalid_request(client, upstream, second):
    """HTTP/1.1 folds repeated lines into one value; only HTTP/2 shows the filter two fields."""
    other = scenario.token() if second == "valid-token" else "x.y.z"
    headers = [("authorization", f"Bearer {scenario.token()}"), ("authorization", f"Bearer {other}")]
    reply = h2c.request(client.port, "GET", MCP_PATH, headers)
    assert reply.status == 400, reply
    assert json.loads(reply.body)["error"] == "invalid_request"
    assert upstream.requests_with_test_id(reply.test_id) == []


# -- 401 invalid_token ------------------------------------------------------------------------

def _claims(**kwargs):
    return scenario.claims(**kwargs)


def _raw_claims(extra_json: str) -> bytes:
    """A valid claim set as JSON text with `extra_json` members appended (duplicates allowed)."""
    text = json.dumps(scenario.claims())
    return (text[:-1] + ", " + extra_json + "}").encode()


def _too_large() -> str:
    token = tokens.mint(_claims(padding="x" * 9000))
    assert len(token) > 8192
    return token


def _psychic_es256() -> str:
    """CVE-2022-21449: an ECDSA signature with r = s = 0."""
    return tokens.mint(_claims(), key="ec-p256", signature=b"\x00" * 64)


def _es256_der_signature() -> str:
    """A valid ES256 signature in DER rather than JOSE r||s encoding (RFC 7518 §3.4)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    header = tokens.b64url(tokens.compact_json({"alg": "ES256", "kid": "ec-p256"}))
    body = tokens.b64url(tokens.compact_json(_claims()))
    der = tokens.private_key("ec-p256").sign(f"{header}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    return f"{header}.{body}.{tokens.b64url(der)}"


def _embedded_jwk() -> str:
    """Signed by a key outside the JWKS, which the token carries in its own `jwk` header."""
    return tokens.mint(_claims(), key="rsa-1024", kid=None, header_extra={"jwk": tokens.public_jwk("rsa-1024")})


INVALID_TOKENS = {
    "not-a-jwt": lambda: "abc",
    "two-parts": lambda: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0",
    "five-parts-jwe": lambda: "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d",
    "header-not-json": lambda: tokens.mint(_claims(), raw_header=b"not json"),
    "claims-not-json": lambda: tokens.mint(raw_claims=b"not json"),
    "too-large": _too_large,
    "bad-signature": lambda: tokens.mint(_claims(), corrupt_signature=True),
    "bad-signature-eddsa": lambda: tokens.mint(_claims(), key="ed25519", corrupt_signature=True),
    "signed-by-other-key-same-kid": lambda: tokens.mint(_claims(), key="rsa-b", kid="rsa-a"),
    "empty-signature": lambda: tokens.mint(_claims(), signature=b""),
    "psychic-ecdsa-signature": _psychic_es256,
    "der-encoded-ecdsa-signature": _es256_der_signature,
    "unknown-kid": lambda: tokens.mint(_claims(), kid="no-such-key"),
    "key-not-in-jwks": lambda: tokens.mint(_claims(), key="rsa-1024"),
    "key-only-in-jwk-header": _embedded_jwk,
    "key-only-in-jku-header": lambda: tokens.mint(
        _claims(), key="rsa-1024", kid="rsa-1024", header_extra={"jku": "https://auth.example.com/jwks"}
    ),
    "no-kid-with-two-rsa-keys": lambda: tokens.mint(_claims(), kid=None),
    "alg-none": lambda: tokens.mint_unsigned(_claims(), kid="rsa-a"),
    "alg-none-capitalized": lambda: tokens.mint_unsigned(_claims(), kid="rsa-a", alg="None"),
    "hs256-keyed-with-rsa-public-key": lambda: tokens.mint_hs256(_claims(), tokens.public_key_pem("rsa-a"), kid="rsa-a"),
    "rs256-header-on-ec-key": lambda: tokens.mint(_claims(), key="rsa-a", kid="ec-p256"),
    "es256-header-on-p384-key": lambda: tokens.mint(_claims(), key="ec-p384", alg="ES384",
                                                    header={"alg": "ES256", "kid": "ec-p384"}),
    "lowercase-alg": lambda: tokens.mint(_claims(), header={"alg": "rs256", "kid": "rsa-a"}),
    "missing-exp": lambda: tokens.mint(_claims(omit=("exp",))),
    "exp-not-a-number": lambda: tokens.mint(_claims(exp=str(tokens.now() + 300))),
    "expired-beyond-skew": lambda: tokens.mint(_claims(at=tokens.now() - 400, lifetime=300)),
    "nbf-beyond-skew": lambda: tokens.mint(_claims(nbf=tokens.now() + 300)),
    "wrong-issuer": lambda: tokens.mint(_claims(issuer="https://evil.example.com")),
    "issuer-with-trailing-slash": lambda: tokens.mint(_claims(issuer=ISSUER + "/")),
    "missing-issuer": lambda: tokens.mint(_claims(omit=("iss",))),
    "wrong-audience": lambda: tokens.mint(_claims(audience="https://evil.example.com/mcp")),
    "audience-of-other-resource": lambda: tokens.mint(_claims(audience=TOOLS)),
    "audience-list-without-resource": lambda: tokens.mint(_claims(audience=[TOOLS, "https://mcp.example.com"])),
    "audience-with-trailing-slash": lambda: tokens.mint(_claims(audience=MCP + "/")),
    "missing-audience": lambda: tokens.mint(_claims(omit=("aud",))),
    "unknown-crit-header": lambda: tokens.mint(_claims(), header_extra={"crit": ["urn:example:x"], "urn:example:x": 1}),
    "duplicate-iss-last-wrong": lambda: tokens.mint(raw_claims=_raw_claims('"iss": "https://evil.example.com"')),
    "duplicate-exp-last-expired": lambda: tokens.mint(raw_claims=_raw_claims('"exp": 1000')),
}


@pytest.mark.parametrize("make_token", INVALID_TOKENS.values(), ids=INVALID_TOKENS.keys())
def test_rejects_invalid_token_with_invalid_token_challenge(client, make_token):
    token = make_token()
    reply = client.request("GET", MCP_PATH, token=token)
    expect.invalid_token(reply, token, MCP_METADATA_URL, MCP_REQUIRED_SCOPE)
    expect.not_forwarded(reply)


def test_rejects_token_for_the_mcp_resource_on_the_tools_resource_without_scope_param(client):
    reply = client.request("GET", TOOLS_PATH, token=scenario.token(MCP))
    expect.challenge(
        reply, 401, [("error", "invalid_token"), ("error_description", None), ("resource_metadata", TOOLS_METADATA_URL)]
    )
    expect.not_forwarded(reply)


# -- 403 insufficient_scope -------------------------------------------------------------------

INSUFFICIENT_SCOPES = {
    "scope-other": {"scope": "other"},
    "scope-write-only": {"scope": "mcp:write"},
    "scope-with-required-as-prefix": {"scope": "mcp:readx"},
    "scope-differs-in-case": {"scope": "MCP:READ"},
    "scope-comma-separated": {"scope": "other,mcp:read"},
    "no-scope-claim": {"scope": None},
    "scp-string-other": {"scope": None, "scp": "other"},
    "scp-array-other": {"scope": None, "scp": ["other", "mcp:write"]},
}


@pytest.mark.parametrize("claim_kwargs", INSUFFICIENT_SCOPES.values(), ids=INSUFFICIENT_SCOPES.keys())
def test_refuses_valid_token_without_required_scope(client, claim_kwargs):
    reply = client.request("POST", MCP_PATH, token=scenario.token(**claim_kwargs), body='{"jsonrpc":"2.0"}')
    expect.challenge(
        reply,
        403,
        [
            ("error", "insufficient_scope"),
            ("scope", MCP_REQUIRED_SCOPE),
            ("resource_metadata", MCP_METADATA_URL),
            ("error_description", None),
        ],
    )
    expect.error_body(reply, "insufficient_scope")
    expect.not_forwarded(reply)
