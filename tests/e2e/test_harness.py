"""The harness itself, without Envoy: the WWW-Authenticate parser and the token minting."""
from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from harness import parse_www_authenticate, split_header_list, tokens


def test_parser_reads_quoted_and_token_params_in_order():
    [challenge] = parse_www_authenticate('Bearer error="invalid_token", error_description="a \\"b\\", c", scope=x')
    assert challenge.scheme == "Bearer"
    assert challenge.params == [("error", "invalid_token"), ("error_description", 'a "b", c'), ("scope", "x")]


def test_parser_separates_challenges_and_token68():
    challenges = parse_www_authenticate(['Newauth abc==, Basic realm="r"', "Bearer"])
    assert [(c.scheme, c.token68, c.params) for c in challenges] == [
        ("Newauth", "abc==", []),
        ("Basic", None, [("realm", "r")]),
        ("Bearer", None, []),
    ]


@pytest.mark.parametrize("bad", ['Bearer a="x', "Bearer a=b c=d", '"x"', "Bearer a=b;"])
def test_parser_rejects_malformed_headers(bad):
    with pytest.raises(ValueError):
        parse_www_authenticate(bad)


def test_split_header_list_lowercases_and_trims():
    assert split_header_list(["Authorization, Content-Type", "mcp-session-id"]) == [
        "authorization", "content-type", "mcp-session-id"]


def _verify(token: str, key_name: str, alg: str) -> None:
    head, body, sig = token.split(".")
    data, signature = f"{head}.{body}".encode(), tokens.b64url_decode(sig)
    public = tokens.private_key(key_name).public_key()
    hash_alg = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}.get(alg[2:], hashes.SHA256)()
    if alg.startswith("RS"):
        public.verify(signature, data, padding.PKCS1v15(), hash_alg)
    elif alg.startswith("PS"):
        public.verify(signature, data, padding.PSS(padding.MGF1(hash_alg), hash_alg.digest_size), hash_alg)
    elif alg.startswith("ES"):
        half = len(signature) // 2
        assert half == (public.curve.key_size + 7) // 8
        der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
        public.verify(der, data, ec.ECDSA(hash_alg))
    else:
        public.verify(signature, data)


@pytest.mark.parametrize(
    "key, alg",
    [("rsa-a", "RS256"), ("rsa-a", "RS512"), ("rsa-b", "PS384"), ("ec-p256", "ES256"), ("ec-p384", "ES384"), ("ed25519", "EdDSA")],
)
def test_minted_tokens_verify_with_the_fixture_public_keys(key, alg):
    token = tokens.mint({"sub": "x"}, key=key, alg=alg)
    header, claims = tokens.decode_unverified(token)
    assert header == {"alg": alg, "typ": "JWT", "kid": key} and claims == {"sub": "x"}
    _verify(token, key, alg)


def test_fixture_jwks_names_each_strong_key_by_kid():
    assert [k["kid"] for k in tokens.fixture_jwks()["keys"]] == ["rsa-a", "rsa-b", "ec-p256", "ec-p384", "ed25519"]


def test_raw_claims_and_unsigned_tokens_are_sent_verbatim():
    token = tokens.mint(raw_claims=b'{"iss":"a","iss":"b"}')
    assert tokens.b64url_decode(token.split(".")[1]) == b'{"iss":"a","iss":"b"}'
    unsigned = tokens.mint_unsigned({"sub": "x"})
    assert unsigned.endswith(".") and json.loads(tokens.b64url_decode(unsigned.split(".")[0]))["alg"] == "none"


def test_corrupted_signature_differs_in_one_bit():
    good = tokens.mint({"sub": "x"}, key="ed25519")
    bad = tokens.mint({"sub": "x"}, key="ed25519", corrupt_signature=True)
    a, b = tokens.b64url_decode(good.split(".")[2]), tokens.b64url_decode(bad.split(".")[2])
    assert sum(bin(x ^ y).count("1") for x, y in zip(a, b)) == 1
