"""Attack matrix (README, Challenges and decisions; RFC 8725): forged, confused and malformed tokens through a real Envoy
(concurrency 2). Every attack must get `401` with a single `Bearer error="invalid_token"`
challenge (and a JSON `invalid_token` body), and the echo upstream must see nothing of it
(`x-test-id`). A few controls (float `exp`, `exp = 1e20`, negative `nbf`, tokens at
`max_token_bytes`) must get `200`, so that the matrix proves the filter rejects attacks for the
right reason and not because the harness mints broken tokens.

Cases already in `test_challenges.py` (plain alg none / None with an empty signature, RS256 on
kid ec-p256 signed by rsa-a, PEM-keyed HS256, unknown crit, psychic ES256, empty signature,
iss with a trailing slash, exp as a string, duplicate iss/exp, ...) are not repeated here.

Three plugin configurations:
- `main`: `scenario.plugin_config()`: one issuer with all five fixture keys.
- `split`: issuer A (`https://auth.example.com`) with only rsa-a, issuer B
  (`https://auth-b.example.com`) with only rsa-b; the resource accepts both issuers, so a filter
  that looked a `kid` up across issuers (or fell back to "the only key") would let attacks in.
- `small`: `main` with `max_token_bytes: 4096`.

Documented decisions:
- `exp: 1e20` (and the integer 10^20) is a far-future but valid NumericDate (RFC 7519 §2: "a
  JSON numeric value"): asserted 200. `exp: 1e400` is not representable as a finite number: 401.
- A token that breaks the RFC 6750 `b64token` grammar (whitespace, `=` before the end) is a
  syntactically broken Bearer credential, for which the README (Challenges and decisions)
  prescribes `400 invalid_request` (RFC 6750 §3.1);
  those cases accept either that or `401 invalid_token` (each with its full challenge shape).
- Header values with CR, LF or NUL never reach the filter intact: Envoy's codec rejects them.
  Asserted: a 4xx status (or, on HTTP/2, a reset stream), and nothing upstream.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

import expect
import scenario
from harness import h2c, tokens
from scenario import ISSUER, MCP, MCP_METADATA_URL, MCP_PATH, MCP_REQUIRED_SCOPE

ISSUER_B = "https://auth-b.example.com"
SMALL_MAX_TOKEN_BYTES = 4096

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P384_N = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
)


# -- configurations -----------------------------------------------------------------------------

def _jwks(*names: str) -> dict:
    return {"keys": [tokens.public_jwk(name) for name in names]}


def split_config() -> dict:
    config = scenario.plugin_config()
    config["resources"] = [{**scenario.MCP_RESOURCE, "authorization_servers": [ISSUER, ISSUER_B]}]
    config["issuers"] = [
        {"issuer": ISSUER, "jwks": _jwks("rsa-a")},
        {"issuer": ISSUER_B, "jwks": _jwks("rsa-b")},
    ]
    return config


CONFIGS: dict[str, Callable[[], dict]] = {
    "main": scenario.plugin_config,
    "split": split_config,
    "small": lambda: scenario.plugin_config(max_token_bytes=SMALL_MAX_TOKEN_BYTES),
}


@pytest.fixture
def clients(envoys):
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = envoys.client(CONFIGS[name]())
        return cache[name]

    return get


# -- token building blocks ----------------------------------------------------------------------

def b64(data: bytes) -> str:
    return tokens.b64url(data)


def cj(obj) -> bytes:
    return tokens.compact_json(obj)


def good_claims(**overrides) -> dict:
    return scenario.claims(**overrides)


def raw_claims_with(members: str) -> bytes:
    """A valid claim set as JSON text, then `members` (raw JSON text) appended."""
    text = cj(good_claims()).decode()
    return (text[:-1] + "," + members + "}").encode()


def raw_claims_replacing(name: str, raw_value: str, base: dict | None = None) -> bytes:
    """A valid claim set with claim `name` set to the raw JSON text `raw_value` (e.g. 1e400)."""
    claims = dict(base or good_claims())
    claims[name] = "__PLACEHOLDER__"
    return cj(claims).replace(b'"__PLACEHOLDER__"', raw_value.encode())


def signed_text(h64: str, c64: str, alg: str, key: str) -> str:
    """`h64.c64.sig` with the signature computed over exactly `h64.c64` (whatever they hold)."""
    signing_input = f"{h64}.{c64}".encode()
    return f"{h64}.{c64}.{b64(tokens.sign(alg, key, signing_input))}"


def jws(header: dict | bytes, claims: dict | bytes | None = None, *, alg: str = "RS256", key: str = "rsa-a") -> str:
    header_bytes = header if isinstance(header, bytes) else cj(header)
    claim_bytes = claims if isinstance(claims, bytes) else cj(claims if claims is not None else good_claims())
    return signed_text(b64(header_bytes), b64(claim_bytes), alg, key)


def hmac_token(alg: str, secret: bytes, kid: str | None = "rsa-a", claims: dict | None = None) -> str:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    header = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{b64(cj(header))}.{b64(cj(claims or good_claims()))}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), digest).digest())}"


def rsa_public(name: str, encoding, fmt) -> bytes:
    return tokens.private_key(name).public_key().public_bytes(encoding, fmt)


HMAC_SECRETS: dict[str, Callable[[], bytes]] = {
    "pem": lambda: tokens.public_key_pem("rsa-a"),
    "pem-no-newline": lambda: tokens.public_key_pem("rsa-a").rstrip(b"\n"),
    "pkcs1-pem": lambda: rsa_public("rsa-a", serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
    "der": lambda: rsa_public("rsa-a", serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    "pkcs1-der": lambda: rsa_public("rsa-a", serialization.Encoding.DER, serialization.PublicFormat.PKCS1),
    "jwk-json-compact": lambda: cj(tokens.public_jwk("rsa-a")),
    "jwk-json-file": lambda: (tokens.FIXTURES / "rsa-a.jwk.json").read_bytes(),
    "jwk-n-bytes": lambda: tokens.b64url_decode(tokens.public_jwk("rsa-a")["n"]),
}


def unsigned(alg: str, signature: bytes, kid: str | None = "rsa-a") -> str:
    header = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    return f"{b64(cj(header))}.{b64(cj(good_claims()))}.{b64(signature)}"


def none_with_valid_rs256_signature(alg: str) -> str:
    """alg none/None/NONE in the header, but carrying a real RS256 signature over that input."""
    return jws({"alg": alg, "typ": "JWT", "kid": "rsa-a"}, alg="RS256", key="rsa-a")


# ECDSA signatures with out-of-range r/s.

def es_valid_rs(key: str, alg: str) -> tuple[str, int, int, int]:
    header = b64(cj({"alg": alg, "typ": "JWT", "kid": key}))
    body = b64(cj(good_claims()))
    hash_alg = hashes.SHA256() if alg == "ES256" else hashes.SHA384()
    der = tokens.private_key(key).sign(f"{header}.{body}".encode(), ec.ECDSA(hash_alg))
    r, s = decode_dss_signature(der)
    size = 32 if alg == "ES256" else 48
    return f"{header}.{body}", r, s, size


def es_with(key: str, alg: str, pick: Callable[[int, int, int], tuple[int, int]]) -> str:
    signing_input, r, s, size = es_valid_rs(key, alg)
    n = P256_N if alg == "ES256" else P384_N
    r2, s2 = pick(r, s, n)
    raw = r2.to_bytes(size, "big") + s2.to_bytes(size, "big")
    return f"{signing_input}.{b64(raw)}"


def es_control_valid(key: str, alg: str) -> str:
    return es_with(key, alg, lambda r, s, n: (r, s))


# Fresh attacker keys (EC keygen is fast); fixed per session.

_ATTACKER: dict = {}


def attacker_ec():
    if "key" not in _ATTACKER:
        key = ec.generate_private_key(ec.SECP256R1())
        numbers = key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": b64(numbers.x.to_bytes(32, "big")), "y": b64(numbers.y.to_bytes(32, "big"))}
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
        import datetime

        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        _ATTACKER.update(key=key, jwk=jwk, x5c=base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode())
    return _ATTACKER


def attacker_es256(header_extra: dict, kid: str | None = None, claims: dict | None = None) -> str:
    attacker = attacker_ec()
    header = {"alg": "ES256", "typ": "JWT", **header_extra}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{b64(cj(header))}.{b64(cj(claims or good_claims()))}"
    r, s = decode_dss_signature(attacker["key"].sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# Non-canonical base64url.

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def with_trailing_bits(segment: str) -> str:
    """The same bytes, but the unused low bits of the last character set (non-canonical)."""
    rem = len(segment) % 4
    assert rem in (2, 3), f"segment of length {len(segment)} has no unused bits"
    unused = 4 if rem == 2 else 2
    last = _B64URL.index(segment[-1])
    assert last & ((1 << unused) - 1) == 0
    flipped = segment[:-1] + _B64URL[last | 1]
    assert tokens.b64url_decode(segment) == base64.urlsafe_b64decode(flipped + "=" * (-len(flipped) % 4))
    return flipped


def padded(segment: str) -> str:
    pad = "=" * (-len(segment) % 4)
    assert pad, "segment needs no padding"
    return segment + pad


def claims_needing_padding_and_std_chars() -> dict:
    """Claims whose base64url needs padding and contains both '-' and '_'."""
    for i in range(200):
        claims = good_claims(note="\xfb\xff\xfe?>" * (1 + i % 5) + "x" * i)
        text = b64(cj(claims))
        if len(text) % 4 and "-" in text and "_" in text:
            return claims
    raise AssertionError("no suitable claims")


def header_needing_padding(alg: str = "RS256", kid: str = "rsa-a") -> dict:
    for i in range(8):
        header = {"alg": alg, "typ": "JWT", "kid": kid, "x": "y" * i}
        if len(b64(cj(header))) % 4:
            return header
    raise AssertionError("no suitable header")


def noncanonical_header_padding() -> str:
    header = header_needing_padding()
    return signed_text(padded(b64(cj(header))), b64(cj(good_claims())), "RS256", "rsa-a")


def noncanonical_claims_padding() -> str:
    claims = claims_needing_padding_and_std_chars()
    return signed_text(b64(cj({"alg": "RS256", "kid": "rsa-a"})), padded(b64(cj(claims))), "RS256", "rsa-a")


def noncanonical_signature_padding() -> str:
    token = scenario.token()
    assert len(token.rsplit(".", 1)[1]) % 4  # a 256-byte RSA signature needs padding
    return padded(token)


def noncanonical_std_alphabet() -> str:
    claims = claims_needing_padding_and_std_chars()
    c64 = b64(cj(claims)).replace("-", "+").replace("_", "/")
    return signed_text(b64(cj({"alg": "RS256", "kid": "rsa-a"})), c64, "RS256", "rsa-a")


def noncanonical_std_alphabet_signature() -> str:
    for i in range(50):
        token = scenario.token(jti=f"j{i}")
        head, sig = token.rsplit(".", 1)
        if "-" in sig or "_" in sig:
            return head + "." + sig.replace("-", "+").replace("_", "/")
    raise AssertionError("no signature with - or _")


def noncanonical_trailing_bits(part: int) -> str:
    for i in range(50):
        header = {"alg": "RS256", "typ": "JWT", "kid": "rsa-a", "x": "y" * (i % 3)}
        claims = good_claims(jti="z" * i)
        h64, c64 = b64(cj(header)), b64(cj(claims))
        segments = [h64, c64]
        if part < 2:
            if len(segments[part]) % 4 not in (2, 3) or _B64URL.index(segments[part][-1]) & 1:
                continue
            segments[part] = with_trailing_bits(segments[part])
            return signed_text(segments[0], segments[1], "RS256", "rsa-a")
        token = signed_text(h64, c64, "RS256", "rsa-a")
        head, sig = token.rsplit(".", 1)
        if len(sig) % 4 in (2, 3) and not _B64URL.index(sig[-1]) & 1:
            return head + "." + with_trailing_bits(sig)
    raise AssertionError("could not build a segment with unused bits")


def noncanonical_whitespace(where: str) -> str:
    token = scenario.token()
    h, c, s = token.split(".")
    if where == "space-in-claims":
        return f"{h}.{c[:10]} {c[10:]}.{s}"
    if where == "tab-in-signature":
        return f"{h}.{c}.{s[:10]}\t{s[10:]}"
    if where == "space-before-dot":
        return f"{h} .{c}.{s}"
    raise ValueError(where)


# Token size.

def token_of_length(target: int) -> str:
    """A valid token for /mcp of exactly `target` characters (padded with a claim)."""
    for extra in range(4):
        for pad in range(max(0, (target * 3) // 4 - 800), (target * 3) // 4 + 10):
            header = {"alg": "RS256", "typ": "JWT", "kid": "rsa-a", **({"x": "y" * extra} if extra else {})}
            token = jws(header, good_claims(pad="p" * pad))
            if len(token) == target:
                return token
            if len(token) > target + 8:
                break
    raise AssertionError(f"could not mint a token of exactly {target} bytes")


# -- the matrix -----------------------------------------------------------------------------------

ACCEPT = "accept"  # 200, forwarded exactly once
DENY = "deny"  # 401 invalid_token, not forwarded
DENY_MALFORMED = "deny-malformed"  # 400 invalid_request or 401 invalid_token, not forwarded


@dataclass
class Case:
    make: Callable[[], str]
    expect: str = DENY
    config: str = "main"


C = Case
CASES: dict[str, Case] = {
    # alg none in every spelling, with empty and non-empty signatures.
    "alg-NONE-empty-sig": C(lambda: unsigned("NONE", b"")),
    "alg-nOnE-empty-sig": C(lambda: unsigned("nOnE", b"")),
    "alg-none-no-kid-empty-sig": C(lambda: unsigned("none", b"", kid=None)),
    "alg-none-nonempty-sig": C(lambda: unsigned("none", b"\x01" * 32)),
    "alg-None-nonempty-sig": C(lambda: unsigned("None", b"\x01" * 32)),
    "alg-NONE-nonempty-sig": C(lambda: unsigned("NONE", b"\x01" * 32)),
    "alg-none-with-valid-rs256-sig": C(lambda: none_with_valid_rs256_signature("none")),
    "alg-None-with-valid-rs256-sig": C(lambda: none_with_valid_rs256_signature("None")),
    "alg-NONE-with-valid-rs256-sig": C(lambda: none_with_valid_rs256_signature("NONE")),
    "alg-empty-string": C(lambda: jws({"alg": "", "kid": "rsa-a"})),
    "alg-missing": C(lambda: jws({"kid": "rsa-a", "typ": "JWT"})),
    "alg-null": C(lambda: jws({"alg": None, "kid": "rsa-a"})),
    "alg-array": C(lambda: jws({"alg": ["RS256"], "kid": "rsa-a"})),
    # HMAC keyed with the RSA public key, every encoding, every HS size.
    **{
        f"{alg.lower()}-secret-{name}": C(lambda alg=alg, secret=secret: hmac_token(alg, secret()))
        for alg in ("HS256", "HS384", "HS512")
        for name, secret in HMAC_SECRETS.items()
        if not (alg == "HS256" and name == "pem")  # in test_challenges
    },
    "hs256-secret-pem-no-kid-split": C(lambda: hmac_token("HS256", tokens.public_key_pem("rsa-a"), kid=None), config="split"),
    "hs256-secret-ec-pem": C(lambda: hmac_token("HS256", tokens.public_key_pem("ec-p256"), kid="ec-p256")),
    "hs256-secret-empty": C(lambda: hmac_token("HS256", b"")),
    # Algorithm / key type confusion.
    "es256-header-on-rsa-key-signed-by-ec": C(lambda: jws({"alg": "ES256", "kid": "rsa-a"}, alg="ES256", key="ec-p256")),
    "es256-header-on-rsa-key-rs256-sig": C(lambda: jws({"alg": "ES256", "kid": "rsa-a"}, alg="RS256", key="rsa-a")),
    "ps256-header-on-ec-key": C(lambda: jws({"alg": "PS256", "kid": "ec-p256"}, alg="PS256", key="rsa-a")),
    "rs256-header-on-ed25519-key": C(lambda: jws({"alg": "RS256", "kid": "ed25519"}, alg="RS256", key="rsa-a")),
    "eddsa-header-on-rsa-key": C(lambda: jws({"alg": "EdDSA", "kid": "rsa-a"}, alg="EdDSA", key="ed25519")),
    "es384-header-on-p256-key": C(lambda: es_valid_p256_with_es384_header()),
    "rs256-header-ps256-signature": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, alg="PS256", key="rsa-a")),
    "ps256-header-rs256-signature": C(lambda: jws({"alg": "PS256", "kid": "rsa-a"}, alg="RS256", key="rsa-a")),
    "rs512-header-rs256-signature": C(lambda: jws({"alg": "RS512", "kid": "rsa-a"}, alg="RS256", key="rsa-a")),
    "rs256-no-kid-ec-only-alg-mismatch-split": C(lambda: jws({"alg": "ES256"}, alg="ES256", key="ec-p256"), config="split"),
    # kid games (split: issuer A holds only rsa-a, so "fall back to the only key" would accept).
    "kid-of-other-issuer": C(lambda: jws({"alg": "RS256", "kid": "rsa-b"}, key="rsa-b"), config="split"),
    "kid-of-other-issuer-iss-b-aud-ok-but-signed-by-a": C(
        lambda: jws({"alg": "RS256", "kid": "rsa-a"}, good_claims(issuer=ISSUER_B), key="rsa-a"), config="split"),
    "no-kid-signed-by-other-issuers-key": C(lambda: jws({"alg": "RS256"}, key="rsa-b"), config="split"),
    "kid-path-traversal": C(lambda: jws({"alg": "RS256", "kid": "../../etc/passwd"}), config="split"),
    "kid-path-traversal-to-real-kid": C(lambda: jws({"alg": "RS256", "kid": "../rsa-a"}), config="split"),
    "kid-sql": C(lambda: jws({"alg": "RS256", "kid": "' OR 1=1 --"}), config="split"),
    "kid-4kb": C(lambda: jws({"alg": "RS256", "kid": "k" * 4096}), config="split"),
    "kid-real-with-nul": C(lambda: jws({"alg": "RS256", "kid": "rsa-a\u0000"}), config="split"),
    "kid-real-with-trailing-space": C(lambda: jws({"alg": "RS256", "kid": "rsa-a "}), config="split"),
    "kid-real-uppercase": C(lambda: jws({"alg": "RS256", "kid": "RSA-A"}), config="split"),
    "kid-empty-string": C(lambda: jws({"alg": "RS256", "kid": ""}), config="split"),
    "kid-number": C(lambda: jws({"alg": "RS256", "kid": 1}), config="split"),
    "kid-array": C(lambda: jws({"alg": "RS256", "kid": ["rsa-a"]}), config="split"),
    "kid-null": C(lambda: jws({"alg": "RS256", "kid": None}), config="split"),
    # Key sources the header must not provide (signed by keys outside the issuer's set).
    "jku-attacker-kid-absent": C(lambda: jws({"alg": "RS256", "jku": "https://evil.example/jwks"}, key="rsa-b"), config="split"),
    "jku-attacker-kid-attacker": C(
        lambda: jws({"alg": "RS256", "kid": "evil", "jku": "https://evil.example/jwks"}, key="rsa-b"), config="split"),
    "x5u-attacker": C(lambda: jws({"alg": "RS256", "kid": "evil", "x5u": "https://evil.example/cert.pem"}, key="rsa-b"), config="split"),
    "jwk-header-rsa-b-no-kid": C(lambda: jws({"alg": "RS256", "jwk": tokens.public_jwk("rsa-b")}, key="rsa-b"), config="split"),
    "jwk-header-rsa-b-kid-rsa-a": C(
        lambda: jws({"alg": "RS256", "kid": "rsa-a", "jwk": {**tokens.public_jwk("rsa-b"), "kid": "rsa-a"}}, key="rsa-b"),
        config="split"),
    "jwk-header-fresh-ec": C(lambda: attacker_es256({"jwk": attacker_ec()["jwk"]}), config="split"),
    "jwk-header-fresh-ec-main": C(lambda: attacker_es256({"jwk": attacker_ec()["jwk"]})),
    "jwk-header-fresh-ec-kid-ec-p256": C(lambda: attacker_es256({"jwk": attacker_ec()["jwk"]}, kid="ec-p256")),
    "x5c-header-fresh-ec": C(lambda: attacker_es256({"x5c": [attacker_ec()["x5c"]]}), config="split"),
    "x5c-header-fresh-ec-kid-ec-p256": C(lambda: attacker_es256({"x5c": [attacker_ec()["x5c"]]}, kid="ec-p256")),
    # crit / b64 / zip.
    "crit-empty-array": C(lambda: jws({"alg": "RS256", "kid": "rsa-a", "crit": []})),
    "crit-names-alg": C(lambda: jws({"alg": "RS256", "kid": "rsa-a", "crit": ["alg"]})),
    "crit-string": C(lambda: jws({"alg": "RS256", "kid": "rsa-a", "crit": "exp", "exp": 1})),
    "crit-unknown-param-absent": C(lambda: jws({"alg": "RS256", "kid": "rsa-a", "crit": ["urn:x"]})),
    "b64-false-no-crit": C(lambda: jws({"alg": "RS256", "kid": "rsa-a", "b64": False})),
    "b64-false-with-crit": C(lambda: jws({"alg": "RS256", "kid": "rsa-a", "b64": False, "crit": ["b64"]})),
    "b64-true-with-crit": C(lambda: jws({"alg": "RS256", "kid": "rsa-a", "b64": True, "crit": ["b64"]})),
    "zip-def": C(lambda: jws({"alg": "RS256", "kid": "rsa-a", "zip": "DEF"})),
    # JWE-shaped and wrongly-segmented tokens.
    "jwe-rsa-oaep-5-parts": C(lambda: ".".join([
        b64(cj({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "rsa-a"})), b64(b"k" * 256), b64(b"i" * 12),
        b64(cj(good_claims())), b64(b"t" * 16)])),
    "jwe-dir-5-parts-empty-key": C(lambda: ".".join([
        b64(cj({"alg": "dir", "enc": "A128GCM"})), "", b64(b"i" * 12), b64(cj(good_claims())), b64(b"t" * 16)])),
    "valid-jws-plus-two-empty-parts": C(lambda: scenario.token() + ".."),
    "valid-jws-plus-one-empty-part": C(lambda: scenario.token() + "."),
    "valid-jws-four-parts": C(lambda: scenario.token() + ".AAAA"),
    "valid-jws-leading-dot": C(lambda: "." + scenario.token(), expect=DENY),
    # Empty / truncated signatures.
    "rs256-sig-truncated-1-char": C(lambda: scenario.token()[:-1]),
    "rs256-sig-truncated-4-chars": C(lambda: scenario.token()[:-4]),
    "rs256-sig-truncated-half": C(lambda: (lambda t: t[: len(t) - len(t.rsplit(".", 1)[1]) // 2])(scenario.token())),
    "rs256-sig-one-byte": C(lambda: tokens.mint(good_claims(), signature=b"\x00")),
    "rs256-sig-all-zero": C(lambda: tokens.mint(good_claims(), signature=b"\x00" * 256)),
    "rs256-sig-with-extra-byte": C(lambda: (lambda t: t.rsplit(".", 1)[0] + "." + b64(tokens.b64url_decode(t.rsplit(".", 1)[1]) + b"\x00"))(scenario.token())),
    "rs256-sig-leading-zero-byte": C(lambda: (lambda t: t.rsplit(".", 1)[0] + "." + b64(b"\x00" + tokens.b64url_decode(t.rsplit(".", 1)[1])))(scenario.token())),
    "es256-empty-sig": C(lambda: tokens.mint(good_claims(), key="ec-p256", signature=b"")),
    "es256-sig-truncated-63-bytes": C(lambda: es_truncated("ec-p256", "ES256", 63)),
    "es256-sig-65-bytes": C(lambda: es_truncated("ec-p256", "ES256", 65)),
    "eddsa-sig-truncated": C(lambda: (lambda t: t[:-3])(tokens.mint(good_claims(), key="ed25519"))),
    "eddsa-empty-sig": C(lambda: tokens.mint(good_claims(), key="ed25519", signature=b"")),
    "eddsa-sig-all-zero": C(lambda: tokens.mint(good_claims(), key="ed25519", signature=b"\x00" * 64)),
    # ECDSA r / s out of range (CVE-2022-21449 and friends).
    "es256-r0-s0": C(lambda: es_with("ec-p256", "ES256", lambda r, s, n: (0, 0))),
    "es384-r0-s0": C(lambda: es_with("ec-p384", "ES384", lambda r, s, n: (0, 0))),
    "es256-r0-s-valid": C(lambda: es_with("ec-p256", "ES256", lambda r, s, n: (0, s))),
    "es256-r-valid-s0": C(lambda: es_with("ec-p256", "ES256", lambda r, s, n: (r, 0))),
    "es384-r0-s-valid": C(lambda: es_with("ec-p384", "ES384", lambda r, s, n: (0, s))),
    "es384-r-valid-s0": C(lambda: es_with("ec-p384", "ES384", lambda r, s, n: (r, 0))),
    "es256-r-n-s-n": C(lambda: es_with("ec-p256", "ES256", lambda r, s, n: (n, n))),
    "es384-r-n-s-n": C(lambda: es_with("ec-p384", "ES384", lambda r, s, n: (n, n))),
    "es256-r-n-s-valid": C(lambda: es_with("ec-p256", "ES256", lambda r, s, n: (n, s))),
    "es256-r-valid-s-n": C(lambda: es_with("ec-p256", "ES256", lambda r, s, n: (r, n))),
    "es256-r-plus-n-if-fits": C(lambda: es_r_plus_n()),
    "es256-r-max-s-max": C(lambda: es_with("ec-p256", "ES256", lambda r, s, n: (2**256 - 1, 2**256 - 1))),
    "es384-r-max-s-max": C(lambda: es_with("ec-p384", "ES384", lambda r, s, n: (2**384 - 1, 2**384 - 1))),
    "es256-r1-s1": C(lambda: es_with("ec-p256", "ES256", lambda r, s, n: (1, 1))),
    # Duplicate JSON members.
    "header-dup-alg-rs256-then-none": C(lambda: jws(b'{"alg":"RS256","kid":"rsa-a","alg":"none"}')),
    "header-dup-alg-none-then-rs256": C(lambda: jws(b'{"alg":"none","kid":"rsa-a","alg":"RS256"}')),
    "header-dup-alg-none-then-rs256-empty-sig": C(
        lambda: b64(b'{"alg":"none","kid":"rsa-a","alg":"RS256"}') + "." + b64(cj(good_claims())) + "."),
    "header-dup-kid": C(lambda: jws(b'{"alg":"RS256","kid":"rsa-b","kid":"rsa-a"}')),
    "header-dup-alg-escaped-name": C(lambda: jws(b'{"alg":"none","kid":"rsa-a","\\u0061lg":"RS256"}')),
    "claims-dup-aud-wrong-last": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_with('"aud":"https://evil.example.com/mcp"'))),
    "claims-dup-aud-wrong-first": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_dup_aud_wrong_first())),
    "claims-dup-aud-escaped-name": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_with('"\\u0061ud":"https://evil.example.com/mcp"'))),
    # Non-canonical base64url.
    "b64-header-padding": C(noncanonical_header_padding, expect=DENY_MALFORMED),
    "b64-claims-padding": C(noncanonical_claims_padding, expect=DENY_MALFORMED),
    "b64-signature-padding": C(noncanonical_signature_padding),
    "b64-claims-std-alphabet": C(noncanonical_std_alphabet),
    "b64-signature-std-alphabet": C(noncanonical_std_alphabet_signature),
    "b64-header-trailing-bits": C(lambda: noncanonical_trailing_bits(0)),
    "b64-claims-trailing-bits": C(lambda: noncanonical_trailing_bits(1)),
    "b64-signature-trailing-bits": C(lambda: noncanonical_trailing_bits(2)),
    "b64-space-in-claims": C(lambda: noncanonical_whitespace("space-in-claims"), expect=DENY_MALFORMED),
    "b64-tab-in-signature": C(lambda: noncanonical_whitespace("tab-in-signature"), expect=DENY_MALFORMED),
    "b64-space-before-dot": C(lambda: noncanonical_whitespace("space-before-dot"), expect=DENY_MALFORMED),
    "header-utf8-bom": C(lambda: jws(b"\xef\xbb\xbf" + cj({"alg": "RS256", "kid": "rsa-a"}))),
    "claims-utf8-bom": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, b"\xef\xbb\xbf" + cj(good_claims()))),
    "claims-trailing-garbage": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, cj(good_claims()) + b"x")),
    "claims-two-objects": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, cj(good_claims()) + cj(good_claims()))),
    "claims-invalid-utf8": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_with('"x":"\xff"').replace(b"\xc3\xbf", b"\xff"))),
    # Claims that are not an object.
    "claims-array": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, cj([good_claims()]))),
    "claims-string": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, cj(json.dumps(good_claims())))),
    "claims-number": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, b"42")),
    "claims-null": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, b"null")),
    "claims-empty": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, b"")),
    "header-array": C(lambda: jws(cj([{"alg": "RS256", "kid": "rsa-a"}]))),
    # exp / nbf types and ranges.
    "exp-float-future-accepted": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", f"{tokens.now() + 300}.5")), expect=ACCEPT),
    "exp-float-past": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", f"{tokens.now() - 400}.5"))),
    "exp-exponent-future-accepted": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "4e9")), expect=ACCEPT),
    "exp-1e20-accepted": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "1e20")), expect=ACCEPT),
    "exp-int-10pow20-accepted": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "100000000000000000000")), expect=ACCEPT),
    "exp-1e400": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "1e400"))),
    "exp-minus-1e400": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "-1e400"))),
    "exp-negative": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "-1"))),
    "exp-i64-min": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "-9223372036854775808"))),
    "exp-u64-max-plus-1-negative": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "-18446744073709551616"))),
    "exp-zero": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "0"))),
    "exp-null": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "null"))),
    "exp-true": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "true"))),
    "exp-array": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", f"[{tokens.now() + 300}]"))),
    "exp-nan-literal": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "NaN"))),
    "exp-infinity-literal": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "Infinity"))),
    "exp-hex-literal": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("exp", "0x7fffffff"))),
    "nbf-string-past": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("nbf", f'"{tokens.now() - 100}"'))),
    "nbf-float-future": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("nbf", f"{tokens.now() + 400}.5"))),
    "nbf-float-past-accepted": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("nbf", f"{tokens.now() - 100}.5")), expect=ACCEPT),
    "nbf-negative-accepted": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("nbf", "-1")), expect=ACCEPT),
    "nbf-1e400": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("nbf", "1e400"))),
    "nbf-1e20": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("nbf", "1e20"))),
    "nbf-null": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, raw_claims_replacing("nbf", "null"))),
    # aud shapes.
    "aud-empty-array": C(lambda: tokens.mint(good_claims(audience=[]))),
    "aud-empty-string": C(lambda: tokens.mint(good_claims(audience=""))),
    "aud-nested-array": C(lambda: tokens.mint(good_claims(audience=[[MCP]]))),
    "aud-object": C(lambda: tokens.mint(good_claims(audience={"aud": MCP}))),
    "aud-object-keyed-by-resource": C(lambda: tokens.mint(good_claims(audience={MCP: True}))),
    "aud-null": C(lambda: tokens.mint(good_claims(audience=None))),
    "aud-number": C(lambda: tokens.mint(good_claims(audience=1))),
    "aud-case-variant": C(lambda: tokens.mint(good_claims(audience="HTTPS://MCP.EXAMPLE.COM/mcp"))),
    "aud-prefix-of-resource": C(lambda: tokens.mint(good_claims(audience="https://mcp.example.com/mc"))),
    "aud-resource-with-suffix": C(lambda: tokens.mint(good_claims(audience=MCP + "x"))),
    "aud-resource-with-nul": C(lambda: tokens.mint(good_claims(audience=MCP + "\u0000"))),
    # iss variants (byte-for-byte comparison).
    "iss-uppercase": C(lambda: tokens.mint(good_claims(issuer="HTTPS://AUTH.EXAMPLE.COM"))),
    "iss-host-uppercase": C(lambda: tokens.mint(good_claims(issuer="https://AUTH.example.com"))),
    "iss-scheme-uppercase": C(lambda: tokens.mint(good_claims(issuer="HTTPS://auth.example.com"))),
    "iss-uppercase-trailing-slash": C(lambda: tokens.mint(good_claims(issuer="HTTPS://AUTH.EXAMPLE.COM/"))),
    "iss-double-trailing-slash": C(lambda: tokens.mint(good_claims(issuer=ISSUER + "//"))),
    "iss-default-port": C(lambda: tokens.mint(good_claims(issuer="https://auth.example.com:443"))),
    "iss-leading-space": C(lambda: tokens.mint(good_claims(issuer=" " + ISSUER))),
    "iss-trailing-nul": C(lambda: tokens.mint(good_claims(issuer=ISSUER + "\u0000"))),
    "iss-array": C(lambda: tokens.mint(good_claims(issuer=[ISSUER]))),
    "iss-other-issuer-with-own-key-wrong-resource": C(lambda: tokens.mint(good_claims(issuer=ISSUER_B), key="rsa-b")),
    # max_token_bytes (4096 in `small`).
    "size-limit-minus-1-accepted": C(lambda: token_of_length(SMALL_MAX_TOKEN_BYTES - 1), expect=ACCEPT, config="small"),
    "size-limit-exactly-accepted": C(lambda: token_of_length(SMALL_MAX_TOKEN_BYTES), expect=ACCEPT, config="small"),
    "size-limit-plus-1": C(lambda: token_of_length(SMALL_MAX_TOKEN_BYTES + 1), config="small"),
    "size-double-limit": C(lambda: token_of_length(2 * SMALL_MAX_TOKEN_BYTES), config="small"),
    # Controls for the matrix itself: these must pass.
    "control-valid-rs256-split": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}), expect=ACCEPT, config="split"),
    "control-valid-issuer-b-split": C(lambda: jws({"alg": "RS256", "kid": "rsa-b"}, good_claims(issuer=ISSUER_B), key="rsa-b"), expect=ACCEPT, config="split"),
    "control-valid-no-kid-single-key-split": C(lambda: jws({"alg": "RS256"}), expect=ACCEPT, config="split"),
    "control-valid-es256-rebuilt": C(lambda: es_control_valid("ec-p256", "ES256"), expect=ACCEPT),
    "control-valid-es384-rebuilt": C(lambda: es_control_valid("ec-p384", "ES384"), expect=ACCEPT),
    "control-valid-claims-with-std-chars": C(lambda: jws({"alg": "RS256", "kid": "rsa-a"}, claims_needing_padding_and_std_chars()), expect=ACCEPT),
}


def es_valid_p256_with_es384_header() -> str:
    """An ES384 signature (SHA-384 over P-256) with header ES384 but kid ec-p256 (a P-256 key)."""
    header = b64(cj({"alg": "ES384", "kid": "ec-p256"}))
    body = b64(cj(good_claims()))
    der = tokens.private_key("ec-p256").sign(f"{header}.{body}".encode(), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    return f"{header}.{body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def es_truncated(key: str, alg: str, length: int) -> str:
    token = tokens.mint(good_claims(), key=key, alg=alg)
    head, sig = token.rsplit(".", 1)
    raw = tokens.b64url_decode(sig)
    raw = raw[:length] if length <= len(raw) else raw + b"\x00" * (length - len(raw))
    return f"{head}.{b64(raw)}"


def es_r_plus_n() -> str:
    """r + n in place of r, when it still fits in 32 bytes (retries fresh signatures)."""
    for _ in range(2000):
        signing_input, r, s, size = es_valid_rs("ec-p256", "ES256")
        if r + P256_N < 2**256:
            return f"{signing_input}.{b64((r + P256_N).to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    # r + n never fit: fall back to s + n with s small enough, or r = n + 1 (also out of range).
    signing_input, r, s, size = es_valid_rs("ec-p256", "ES256")
    return f"{signing_input}.{b64((P256_N + 1).to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def raw_claims_dup_aud_wrong_first() -> bytes:
    text = cj(good_claims()).decode()
    return ('{"aud":"https://evil.example.com/mcp",' + text[1:]).encode()


def _check_denied_invalid_token(reply, token: str) -> None:
    expect.invalid_token(reply, token, MCP_METADATA_URL, MCP_REQUIRED_SCOPE)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_attack(clients, case: Case):
    client = clients(case.config)
    token = case.make()
    reply = client.request("GET", MCP_PATH, token=token)
    if case.expect == ACCEPT:
        assert reply.status == 200, f"control token refused: {reply.describe()}"
        assert len(reply.upstream_requests) == 1
        return
    expect.not_forwarded(reply)
    if case.expect == DENY_MALFORMED and reply.status == 400:
        expect.challenge(
            reply, 400, [("error", "invalid_request"), ("error_description", None), ("resource_metadata", MCP_METADATA_URL)]
        )
        expect.error_body(reply, "invalid_request")
        return
    _check_denied_invalid_token(reply, token)


def test_attack_matrix_tokens_differ_from_controls():
    """Sanity: the trailing-bits and std-alphabet variants really are other bytes for the same data."""
    token = noncanonical_trailing_bits(2)
    head, sig = token.rsplit(".", 1)
    assert base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))  # decodes leniently
    assert b64(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))) != sig


# -- header values with CR / LF / NUL (Envoy's codecs reject them) --------------------------------

_CTL_AT = tokens.now()


def ctl_token() -> str:
    """The same valid token on every call (RS256 is deterministic), for CR/LF/NUL splicing."""
    return scenario.token(at=_CTL_AT, lifetime=3600)


def _ctl_values() -> dict[str, Callable[[], bytes]]:
    def tok() -> bytes:
        return ctl_token().encode()

    return {
        "bare-cr-inside-token": lambda: b"Bearer " + tok()[:20] + b"\r" + tok()[20:],
        "bare-lf-inside-token": lambda: b"Bearer " + tok()[:20] + b"\n" + tok()[20:],
        "nul-inside-token": lambda: b"Bearer " + tok()[:20] + b"\x00" + tok()[20:],
        "nul-after-valid-token": lambda: b"Bearer " + tok() + b"\x00",
        "cr-after-valid-token": lambda: b"Bearer " + tok() + b"\r",
        "nul-before-token": lambda: b"Bearer \x00" + tok(),
        "obs-fold-after-scheme": lambda: b"Bearer\r\n " + tok(),
        "obs-fold-inside-token": lambda: b"Bearer " + tok()[:20] + b"\r\n " + tok()[20:],
        "lf-then-injected-header": lambda: b"Bearer x.y.z\nX-Forwarded-Authorization: Bearer " + tok(),
        "del-inside-token": lambda: b"Bearer " + tok()[:20] + b"\x7f" + tok()[20:],
    }


CTL_VALUES = _ctl_values()


@pytest.mark.parametrize("make_value", CTL_VALUES.values(), ids=CTL_VALUES.keys())
def test_control_characters_in_authorization_http1(forwarding_client, upstream, make_value):
    """Envoy's HTTP/1 codec answers 4xx itself, or hands the filter a cleaned value: it drops a
    bare CR and unfolds obs-fold (observed with Envoy 1.40). The only acceptable 200 is then for
    a value that became exactly `Bearer <the valid token>` (checked on what the upstream got,
    with `forward_authorization: true`): no control character may ever get through."""
    value = make_value()
    valid = "Bearer " + ctl_token()
    # The value as raw bytes (http.client refuses CR/LF); an answer is required.
    reply = forwarding_client.raw_request("GET", MCP_PATH, headers=[("Authorization", value), ("Connection", "close")],
                                          timeout=5.0)
    status, seen = reply.status, reply.upstream_requests
    if status == 200:
        assert len(seen) == 1
        forwarded = seen[0].header_values("authorization")
        assert forwarded == [valid], f"{value!r} was let through as {forwarded!r}"
        cleaned = value.replace(b"\r\n ", b" ").replace(b"\r", b"")
        assert cleaned.decode() == valid, f"200 for a value that is not the valid token once cleaned: {value!r}"
        return
    assert 400 <= status < 500, f"expected a 4xx, got {reply.describe()}"
    assert seen == []


H2_CTL = {
    "h2-nul-in-token": "\x00",
    "h2-cr-in-token": "\r",
    "h2-lf-in-token": "\n",
    "h2-crlf-in-token": "\r\n",
}


@pytest.mark.parametrize("ctl", H2_CTL.values(), ids=H2_CTL.keys())
def test_control_characters_in_authorization_http2(client, upstream, ctl):
    """HTTP/2 field values with CR, LF or NUL are malformed (RFC 9113 §8.2.1): 4xx or a reset."""
    token = scenario.token()
    value = f"Bearer {token[:20]}{ctl}{token[20:]}"
    before = len(upstream.requests)  # tests run one at a time: nothing else reaches it meanwhile
    try:
        reply = h2c.request(client.port, "GET", MCP_PATH, [("authorization", value)])
    except ConnectionError:
        reply = None  # stream or connection reset by Envoy's HTTP/2 codec
    if reply is not None:
        assert 400 <= reply.status < 500, reply
        assert upstream.requests_with_test_id(reply.test_id) == []
    assert len(upstream.requests) == before, upstream.requests[before:]
