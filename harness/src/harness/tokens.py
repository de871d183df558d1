"""Mint JWS compact tokens (RFC 7515) by hand from the fixed test keys, with full control.

Nothing here validates anything: the point is to build exactly the bytes an attacker or a
sloppy authorization server would send. Keys are the fixed PEM files in `tests/fixtures`
(never generated per test); a key is named by its file stem (`rsa-a`, `ec-p256`, ...), which is
also its `kid` in the fixture JWKS.

    mint(claims(ISSUER, AUDIENCE, scope="mcp:read"))                 # RS256, kid rsa-a
    mint(c, key="ec-p256")                                           # ES256, raw r||s
    mint(c, key="rsa-b", alg="PS256")
    mint(c, header={"alg": "RS256", "kid": "ec-p256"})               # exact header
    mint(raw_claims=b'{"iss":"a","iss":"b"}')                        # duplicate keys
    mint(c, corrupt_signature=True)
    mint_hs256(c, public_key_pem("rsa-a"), kid="rsa-a")              # alg confusion
    mint_unsigned(c)                                                 # alg none
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from typing import Any, Iterable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .paths import FIXTURES

#: Every key in tests/fixtures, by name (= kid in the fixture JWKS; rsa-1024 is not in jwks.json).
KEY_NAMES = ("rsa-a", "rsa-b", "ec-p256", "ec-p384", "ed25519", "rsa-1024")

#: The algorithm used for a key when `mint` is not told one.
DEFAULT_ALG = {
    "rsa-a": "RS256",
    "rsa-b": "RS256",
    "rsa-1024": "RS256",
    "ec-p256": "ES256",
    "ec-p384": "ES384",
    "ed25519": "EdDSA",
}

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_KID_FROM_KEY = object()


def b64url(data: bytes | str) -> str:
    """base64url without padding (RFC 7515 §2)."""
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=None)
def private_key(name: str):
    """The fixture private key `tests/fixtures/NAME.pem`."""
    return serialization.load_pem_private_key((FIXTURES / f"{name}.pem").read_bytes(), password=None)


def public_jwk(name: str) -> dict:
    """The fixture public JWK `tests/fixtures/NAME.jwk.json` (kid = NAME)."""
    return json.loads((FIXTURES / f"{name}.jwk.json").read_text())


def fixture_jwks() -> dict:
    """`tests/fixtures/jwks.json`: the five strong keys (not rsa-1024)."""
    return json.loads((FIXTURES / "jwks.json").read_text())


def public_key_pem(name: str) -> bytes:
    """SubjectPublicKeyInfo PEM of a fixture key: the classic HS256 confusion secret."""
    return private_key(name).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def now() -> int:
    return int(time.time())


def claims(
    issuer: str,
    audience: str | list[str],
    *,
    subject: str | None = "user-123",
    scope: str | None = None,
    lifetime: int = 300,
    at: int | None = None,
    omit: Iterable[str] = (),
    **extra: Any,
) -> dict:
    """A well-formed access-token claim set: iss, aud, sub, iat, exp (= iat + lifetime), scope.

    `subject=None` / `scope=None` leave those claims out; `omit` drops any other claim
    (`omit=("exp",)`); `extra` adds or overrides claims (`nbf=...`, `scp=[...]`).
    """
    issued = now() if at is None else at
    out: dict[str, Any] = {"iss": issuer, "aud": audience, "iat": issued, "exp": issued + lifetime}
    if subject is not None:
        out["sub"] = subject
    if scope is not None:
        out["scope"] = scope
    out.update(extra)
    for name in omit:
        out.pop(name, None)
    return out


def sign(alg: str, key_name: str, signing_input: bytes) -> bytes:
    """The JWS signature of `signing_input` by fixture key `key_name` (JOSE encodings)."""
    key = private_key(key_name)
    family, bits = alg[:2], alg[2:]
    if alg == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"EdDSA needs an Ed25519 key, not {key_name}")
        return key.sign(signing_input)
    if family in ("RS", "PS"):
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{alg} needs an RSA key, not {key_name}")
        hash_alg = _HASHES[bits]()
        pad = (
            padding.PKCS1v15()
            if family == "RS"
            else padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
        )
        return key.sign(signing_input, pad, hash_alg)
    if family == "ES":
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{alg} needs an EC key, not {key_name}")
        der = key.sign(signing_input, ec.ECDSA(_HASHES[bits]()))
        r, s = decode_dss_signature(der)
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")  # RFC 7518 §3.4: raw r||s
    raise ValueError(f"unsupported algorithm {alg!r}")


def _assemble(header_bytes: bytes, claim_bytes: bytes, signer, corrupt_signature: bool, signature: bytes | None) -> str:
    signing_input = f"{b64url(header_bytes)}.{b64url(claim_bytes)}".encode("ascii")
    sig = signer(signing_input) if signature is None else signature
    if corrupt_signature:
        if not sig:
            raise ValueError("nothing to corrupt: empty signature")
        middle = len(sig) // 2
        sig = sig[:middle] + bytes([sig[middle] ^ 0x01]) + sig[middle + 1 :]
    return f"{signing_input.decode('ascii')}.{b64url(sig)}"


def _header_bytes(header: dict | None, raw_header: bytes | None, defaults: dict, kid, header_extra: dict | None) -> bytes:
    if raw_header is not None:
        return raw_header
    if header is None:
        header = dict(defaults)
        if kid is not None:
            header["kid"] = kid
        header.update(header_extra or {})
    return compact_json(header)


def _claim_bytes(claims_: dict | None, raw_claims: bytes | None) -> bytes:
    if raw_claims is not None:
        return raw_claims
    return compact_json(claims_ if claims_ is not None else {})


def mint(
    claims: dict | None = None,
    *,
    key: str = "rsa-a",
    alg: str | None = None,
    kid: Any = _KID_FROM_KEY,
    header: dict | None = None,
    header_extra: dict | None = None,
    raw_header: bytes | None = None,
    raw_claims: bytes | None = None,
    corrupt_signature: bool = False,
    signature: bytes | None = None,
) -> str:
    """A JWS compact token signed by fixture key `key`.

    Header: `raw_header` bytes verbatim, else `header` verbatim, else
    `{"alg": alg, "typ": "JWT", "kid": kid}` (kid defaults to the key name; `kid=None` omits it)
    updated with `header_extra`. `alg` defaults to the key's usual algorithm and is also the
    algorithm actually used to sign, whatever the header says.
    Claims: `raw_claims` bytes verbatim (for duplicate keys, bad JSON), else `claims` as JSON.
    `signature` replaces the computed signature; `corrupt_signature` flips one bit of it.
    """
    alg = alg or DEFAULT_ALG[key]
    kid_value = key if kid is _KID_FROM_KEY else kid
    header_bytes = _header_bytes(header, raw_header, {"alg": alg, "typ": "JWT"}, kid_value, header_extra)
    return _assemble(
        header_bytes,
        _claim_bytes(claims, raw_claims),
        lambda data: sign(alg, key, data),
        corrupt_signature,
        signature,
    )


def mint_hs256(
    claims: dict | None,
    secret: bytes,
    *,
    kid: str | None = None,
    header: dict | None = None,
    raw_claims: bytes | None = None,
) -> str:
    """An HS256 token keyed with `secret` (for alg-confusion attacks: secret = a public key)."""
    header_bytes = _header_bytes(header, None, {"alg": "HS256", "typ": "JWT"}, kid, None)
    return _assemble(
        header_bytes,
        _claim_bytes(claims, raw_claims),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
        False,
        None,
    )


def mint_unsigned(claims: dict | None, *, kid: str | None = None, header: dict | None = None, alg: str = "none") -> str:
    """An unsecured JWS (RFC 7515 Appendix A.5): `alg: none`, empty signature (`h.c.`)."""
    header_bytes = _header_bytes(header, None, {"alg": alg, "typ": "JWT"}, kid, None)
    return _assemble(header_bytes, _claim_bytes(claims, None), lambda data: b"", False, None)


def decode_unverified(token: str) -> tuple[dict, dict]:
    """(header, claims) of a compact token, without any check: for test diagnostics."""
    head, body, _ = token.split(".")
    return json.loads(b64url_decode(head)), json.loads(b64url_decode(body))
