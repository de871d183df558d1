"""Signatures Envoy checks natively (its `verify_signature` foreign function, BoringSSL) give the
same verdicts as `ring` in the VM, and the counter shows which ones went to the host: RS256/384/512
and ES256/384 do, PS* and EdDSA never do (see src/hostsig.rs)."""
from __future__ import annotations

import pytest

import expect
import scenario
from harness import tokens
from scenario import MCP_PATH

HOST_COUNTER = "mcp_oauth_signature_checks_host"
# The order of the P-256 group (FIPS 186-4 D.1.2.3).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def host_checks(client) -> int:
    return client.envoy.stats().get(HOST_COUNTER, 0)


def sent(client, token: str):
    """The reply to `token` and how many host signature checks it made."""
    before = host_checks(client)
    reply = client.get(MCP_PATH, token=token)
    return reply, host_checks(client) - before


def with_signature(token: str, signature: bytes) -> str:
    head, claims, _ = token.split(".")
    return f"{head}.{claims}.{tokens.b64url(signature)}"


def signature(token: str) -> bytes:
    return tokens.b64url_decode(token.split(".")[2])


@pytest.mark.parametrize(
    "key, alg",
    [("rsa-a", "RS256"), ("rsa-a", "RS384"), ("rsa-b", "RS512"), ("ec-p256", "ES256"), ("ec-p384", "ES384")],
)
def test_the_host_checks_pkcs1_and_ecdsa_and_refuses_what_ring_refuses(client, key, alg):
    reply, checks = sent(client, scenario.token(key=key, alg=alg))
    expect.forwarded_once(reply)
    assert checks == 1

    reply, checks = sent(client, tokens.mint(scenario.claims(), key=key, alg=alg, corrupt_signature=True))
    assert reply.status == 401, reply.describe()
    assert reply.challenge().get("error") == "invalid_token"
    expect.not_forwarded(reply)
    assert checks == 1, "a mismatch from the host is the verdict: ring does not check again"


@pytest.mark.parametrize("key, alg", [("rsa-a", "PS256"), ("rsa-b", "PS512"), ("ed25519", "EdDSA")])
def test_pss_and_eddsa_stay_in_the_vm(client, key, alg):
    reply, checks = sent(client, scenario.token(key=key, alg=alg))
    expect.forwarded_once(reply)
    reply, checks_forged = sent(client, tokens.mint(scenario.claims(), key=key, alg=alg, corrupt_signature=True))
    assert reply.status == 401, reply.describe()
    assert (checks, checks_forged) == (0, 0)


def test_an_ecdsa_signature_of_the_wrong_width_is_refused_without_asking_the_host(client):
    token = scenario.token(key="ec-p256")
    for width in (63, 65, 0x48):  # short, long, a DER-looking length
        reply, checks = sent(client, with_signature(token, signature(token)[:width].ljust(width, b"\x01")))
        assert reply.status == 401, reply.describe()
        assert checks == 0


def test_a_high_s_ecdsa_signature_is_valid_in_both_backends(client):
    # JWS does not require low-S (RFC 7518 §3.4): (r, n - s) verifies like (r, s).
    token = scenario.token(key="ec-p256")
    sig = signature(token)
    s = int.from_bytes(sig[32:], "big")
    flipped = with_signature(token, sig[:32] + (P256_ORDER - s).to_bytes(32, "big"))
    reply, checks = sent(client, flipped)
    expect.forwarded_once(reply)
    assert checks == 1
    # r or s out of range is no signature at all.
    for bad in (bytes(32) + sig[32:], sig[:32] + P256_ORDER.to_bytes(32, "big")):
        reply, _ = sent(client, with_signature(token, bad))
        assert reply.status == 401, reply.describe()


def test_an_rsa_signature_shorter_than_the_modulus_is_refused(client):
    token = scenario.token(key="rsa-a")
    sig = signature(token)
    for bad in (sig[1:], b"\x00" + sig, bytes(len(sig))):
        reply, _ = sent(client, with_signature(token, bad))
        assert reply.status == 401, reply.describe()


def test_the_filter_says_at_start_which_backend_checks_signatures(client):
    """README, Compatibility: one line per VM, at configuration."""
    log = client.envoy.log_text()
    assert "mcp-oauth-filter: signature checks: the host's verify_signature (BoringSSL)" in log, log[-3000:]
    assert "ring in the VM (the host has no verify_signature" not in log
