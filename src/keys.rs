//! Verification keys (RFC 7517 JWK sets, RFC 7518 §6, RFC 8037 for Ed25519) and key selection.
//!
//! A key is picked by the token's `kid` from *our* set, and the token's `alg` must fit that
//! key's type (and the key's own `alg`, when it has one): the token never chooses the key or
//! the algorithm family (RFC 8725 §3.1). `jku`, `x5u`, `jwk` and `x5c` are never key sources.

use crate::alg::Alg;
use crate::json::b64url_decode;
use der::asn1::{AnyRef, BitStringRef, Null, ObjectIdentifier, UintRef};
use der::Encode;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use std::borrow::Cow;
use std::fmt;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Public key material in the form the signature backend (ring) consumes.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// Modulus and exponent, big-endian, without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point `04 || x || y`.
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

impl KeyMaterial {
    fn fingerprint(&self) -> u64 {
        let (a, b): (&[u8], &[u8]) = match self {
            KeyMaterial::Rsa { n, e } => (n, e),
            KeyMaterial::P256(p) | KeyMaterial::P384(p) | KeyMaterial::Ed25519(p) => (p, &[]),
        };
        fnv1a(&[self.kind().as_bytes(), a, b])
    }

    /// The key as a DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7, RFC 3279 §2.3), built once when
    /// the key is read, for the host's signature check (`hostsig`); `None` for keys the host is
    /// never asked about (Ed25519).
    pub fn public_key_der(&self) -> Option<Vec<u8>> {
        let (oid, parameters, key): (_, _, Cow<'_, [u8]>) = match self {
            KeyMaterial::Rsa { n, e } => {
                let rsa_key = pkcs1::RsaPublicKey {
                    modulus: UintRef::new(n).ok()?,
                    public_exponent: UintRef::new(e).ok()?,
                };
                let rsa_key = rsa_key.to_der().ok()?;
                (RSA_ENCRYPTION, AnyRef::from(Null), Cow::Owned(rsa_key))
            }
            KeyMaterial::P256(point) => (EC_PUBLIC_KEY, AnyRef::from(&SECP256R1), point.into()),
            KeyMaterial::P384(point) => (EC_PUBLIC_KEY, AnyRef::from(&SECP384R1), point.into()),
            KeyMaterial::Ed25519(_) => return None,
        };
        SubjectPublicKeyInfoRef {
            algorithm: AlgorithmIdentifierRef {
                oid,
                parameters: Some(parameters),
            },
            subject_public_key: BitStringRef::from_bytes(&key).ok()?,
        }
        .to_der()
        .ok()
    }

    pub fn kind(&self) -> &'static str {
        match self {
            KeyMaterial::Rsa { .. } => "RSA",
            KeyMaterial::P256(_) => "EC P-256",
            KeyMaterial::P384(_) => "EC P-384",
            KeyMaterial::Ed25519(_) => "OKP Ed25519",
        }
    }

    fn fits(&self, alg: Alg) -> bool {
        use Alg::*;
        matches!(
            (self, alg),
            (
                KeyMaterial::Rsa { .. },
                Rs256 | Rs384 | Rs512 | Ps256 | Ps384 | Ps512
            ) | (KeyMaterial::P256(_), Es256)
                | (KeyMaterial::P384(_), Es384)
                | (KeyMaterial::Ed25519(_), EdDsa)
        )
    }
}

/// One usable verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    pub kid: Option<String>,
    /// The JWK's own `alg`, which then is the only algorithm it verifies.
    pub alg: Option<Alg>,
    pub material: KeyMaterial,
    /// Identifies the material: tokens verified by a key that leaves the set are forgotten.
    pub fingerprint: u64,
    /// The key as a DER SubjectPublicKeyInfo for the host's signature check; empty when the
    /// host is never asked about it (see `hostsig`).
    pub public_key_der: Vec<u8>,
}

impl VerifyingKey {
    /// Whether a token signed with `alg` may be checked against this key.
    pub fn accepts(&self, alg: Alg) -> bool {
        self.material.fits(alg) && self.alg.is_none_or(|own| own == alg)
    }

    /// Verifies a JWS signature over `message` (the ASCII `header.payload`). ECDSA signatures
    /// are the fixed-width `r || s` form JWS uses (RFC 7518 §3.4), never DER.
    pub fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        match &self.material {
            KeyMaterial::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            KeyMaterial::P256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            KeyMaterial::P384(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            KeyMaterial::Ed25519(x) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok(),
        }
    }
}

/// What became of one JWK while reading a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwkOutcome {
    Usable(VerifyingKey),
    /// Not a signature key we can use (other `kty`/`crv`/`use`, symmetric): skipped.
    Skipped(String),
    /// Claims to be a usable key but is broken (missing or bad member): an error inline,
    /// skipped with a log line when fetched.
    Invalid {
        member: &'static str,
        reason: String,
    },
}

/// Why a whole JWK set is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysError {
    NotJson,
    NoKeysArray,
    NoUsableKey,
}

impl KeysError {
    pub fn code(&self) -> &'static str {
        match self {
            KeysError::NotJson => "jwks_not_json",
            KeysError::NoKeysArray => "jwks_no_keys_array",
            KeysError::NoUsableKey => "jwks_no_usable_key",
        }
    }
}

impl fmt::Display for KeysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeysError::NotJson => "is not a JSON object",
            KeysError::NoKeysArray => "has no \"keys\" array",
            KeysError::NoUsableKey => "has no usable signature key",
        })
    }
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, JwkOutcome> {
    match jwk.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(JwkOutcome::Invalid {
            member: name,
            reason: "is not a string".into(),
        }),
        None => Err(JwkOutcome::Invalid {
            member: name,
            reason: "is missing".into(),
        }),
    }
}

fn b64_member(
    jwk: &Map<String, Value>,
    name: &'static str,
    len: Option<usize>,
) -> Result<Vec<u8>, JwkOutcome> {
    let bytes = b64url_decode(member(jwk, name)?).ok_or(JwkOutcome::Invalid {
        member: name,
        reason: "is not base64url".into(),
    })?;
    match len {
        Some(l) if bytes.len() != l => Err(JwkOutcome::Invalid {
            member: name,
            reason: format!("must be {l} bytes, is {}", bytes.len()),
        }),
        _ => Ok(bytes),
    }
}

fn strip_leading_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}

/// Reads one JWK (RFC 7517 §4). Never fails as a whole: each key gets an outcome.
pub fn parse_jwk(value: &Value) -> JwkOutcome {
    match read_jwk(value) {
        Ok(key) => JwkOutcome::Usable(key),
        Err(outcome) => outcome,
    }
}

fn read_jwk(value: &Value) -> Result<VerifyingKey, JwkOutcome> {
    let Value::Object(jwk) = value else {
        return Err(JwkOutcome::Invalid {
            member: "kty",
            reason: "key is not a JSON object".into(),
        });
    };
    let kty = member(jwk, "kty")?;
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(JwkOutcome::Invalid {
                member: "kid",
                reason: "is not a string".into(),
            })
        }
    };
    if let Some(usage) = jwk.get("use") {
        if usage != "sig" {
            return Err(JwkOutcome::Skipped(format!(
                "\"use\" is {usage}, not \"sig\""
            )));
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o == "verify"));
        if !verifies {
            return Err(JwkOutcome::Skipped("\"key_ops\" lacks \"verify\"".into()));
        }
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => match Alg::parse(name) {
            Ok(a) => Some(a),
            Err(_) => {
                return Err(JwkOutcome::Skipped(format!(
                    "algorithm {name} not supported"
                )))
            }
        },
        Some(_) => {
            return Err(JwkOutcome::Invalid {
                member: "alg",
                reason: "is not a string".into(),
            })
        }
    };
    let material = match kty {
        "RSA" => {
            let n = strip_leading_zeros(b64_member(jwk, "n", None)?);
            let e = strip_leading_zeros(b64_member(jwk, "e", None)?);
            let bits = match n.first() {
                Some(top) => n.len() * 8 - top.leading_zeros() as usize,
                None => 0,
            };
            if !(2048..=8192).contains(&bits) {
                return Err(JwkOutcome::Skipped(format!(
                    "RSA modulus of {bits} bits (2048 to 8192 accepted)"
                )));
            }
            if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b & 1 == 0) || e == [1] {
                return Err(JwkOutcome::Invalid {
                    member: "e",
                    reason: "is not a usable RSA exponent".into(),
                });
            }
            KeyMaterial::Rsa { n, e }
        }
        "EC" => {
            let crv = member(jwk, "crv")?;
            let size = match crv {
                "P-256" => 32,
                "P-384" => 48,
                other => {
                    return Err(JwkOutcome::Skipped(format!(
                        "EC curve {other} not supported"
                    )))
                }
            };
            let mut point = vec![4u8];
            point.extend(b64_member(jwk, "x", Some(size))?);
            point.extend(b64_member(jwk, "y", Some(size))?);
            if size == 32 {
                KeyMaterial::P256(point)
            } else {
                KeyMaterial::P384(point)
            }
        }
        "OKP" => match member(jwk, "crv")? {
            "Ed25519" => KeyMaterial::Ed25519(b64_member(jwk, "x", Some(32))?),
            other => {
                return Err(JwkOutcome::Skipped(format!(
                    "OKP curve {other} not supported"
                )))
            }
        },
        "oct" => {
            return Err(JwkOutcome::Skipped(
                "symmetric (oct) keys are never used".into(),
            ))
        }
        other => {
            return Err(JwkOutcome::Skipped(format!(
                "key type {other} not supported"
            )))
        }
    };
    if let Some(a) = alg {
        if !material.fits(a) {
            return Err(JwkOutcome::Invalid {
                member: "alg",
                reason: format!("{a} does not fit a {} key", material.kind()),
            });
        }
    }
    if jwk.contains_key("d") {
        return Err(JwkOutcome::Invalid {
            member: "d",
            reason: "private key material: publish public keys only".into(),
        });
    }
    let fingerprint = material.fingerprint();
    let public_key_der = material.public_key_der().unwrap_or_default();
    Ok(VerifyingKey {
        kid,
        alg,
        material,
        fingerprint,
        public_key_der,
    })
}

/// 64-bit FNV-1a over several byte strings: a cheap identity for keys and documents (not a
/// security boundary: nobody outside chooses what is compared).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .flat_map(|p| p.iter())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// The keys of one issuer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

/// Why no key was selected for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectError {
    /// No key has the token's `kid` (or, without `kid`, none fits its `alg`).
    UnknownKid,
    /// A key has the `kid` but its type or own `alg` does not fit the token's `alg`.
    AlgMismatch,
    /// Several keys fit (no `kid`, or a `kid` several keys share): we will not guess.
    Ambiguous,
}

impl KeySet {
    pub fn new(keys: Vec<VerifyingKey>) -> KeySet {
        KeySet { keys }
    }

    /// Parses a JWK set document, returning the set and every key that was not used, by index.
    pub fn from_jwks(doc: &Value) -> Result<(KeySet, Vec<(usize, JwkOutcome)>), KeysError> {
        let Value::Object(map) = doc else {
            return Err(KeysError::NotJson);
        };
        let Some(Value::Array(list)) = map.get("keys") else {
            return Err(KeysError::NoKeysArray);
        };
        let mut keys = Vec::new();
        let mut unused = Vec::new();
        for (i, jwk) in list.iter().enumerate() {
            match parse_jwk(jwk) {
                JwkOutcome::Usable(key) => keys.push(key),
                other => unused.push((i, other)),
            }
        }
        Ok((KeySet { keys }, unused))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    pub fn has_fingerprint(&self, fingerprint: u64) -> bool {
        self.keys.iter().any(|k| k.fingerprint == fingerprint)
    }

    /// Picks the key for a token: by `kid` when it has one; without, only when exactly one
    /// key fits `alg` (RFC 8725 §3.1: the token never chooses the key).
    pub fn select(&self, kid: Option<&str>, alg: Alg) -> Result<&VerifyingKey, SelectError> {
        let mut fitting = self
            .keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid);
        let Some(first) = fitting.next() else {
            return Err(SelectError::UnknownKid);
        };
        let mut chosen = None;
        for key in std::iter::once(first).chain(fitting) {
            if key.accepts(alg) {
                if chosen.is_some() {
                    return Err(SelectError::Ambiguous);
                }
                chosen = Some(key);
            }
        }
        match (chosen, kid) {
            (Some(key), _) => Ok(key),
            (None, Some(_)) => Err(SelectError::AlgMismatch),
            (None, None) => Err(SelectError::UnknownKid),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    pub fn fixture_set() -> KeySet {
        KeySet::from_jwks(&fixture("jwks.json")).unwrap().0
    }

    #[test]
    fn reads_every_fixture_key_type() {
        let set = fixture_set();
        let kinds: Vec<_> = set.keys().iter().map(|k| k.material.kind()).collect();
        assert_eq!(kinds, ["RSA", "RSA", "EC P-256", "EC P-384", "OKP Ed25519"]);
    }

    #[test]
    fn selects_by_kid_and_checks_alg_against_key_type() {
        let set = fixture_set();
        assert_eq!(
            set.select(Some("rsa-a"), Alg::Rs256)
                .unwrap()
                .kid
                .as_deref(),
            Some("rsa-a")
        );
        assert_eq!(
            set.select(Some("rsa-a"), Alg::Ps512)
                .unwrap()
                .kid
                .as_deref(),
            Some("rsa-a")
        );
        assert_eq!(
            set.select(Some("ec-p256"), Alg::Es256)
                .unwrap()
                .kid
                .as_deref(),
            Some("ec-p256")
        );
        assert_eq!(
            set.select(Some("rsa-a"), Alg::Es256),
            Err(SelectError::AlgMismatch)
        );
        assert_eq!(
            set.select(Some("ec-p256"), Alg::Rs256),
            Err(SelectError::AlgMismatch)
        );
        assert_eq!(
            set.select(Some("ec-p256"), Alg::Es384),
            Err(SelectError::AlgMismatch)
        );
        assert_eq!(
            set.select(Some("nope"), Alg::Rs256),
            Err(SelectError::UnknownKid)
        );
    }

    #[test]
    fn selects_without_kid_only_when_exactly_one_key_fits() {
        let set = fixture_set();
        assert_eq!(set.select(None, Alg::Rs256), Err(SelectError::Ambiguous));
        assert_eq!(
            set.select(None, Alg::Es256).unwrap().kid.as_deref(),
            Some("ec-p256")
        );
        assert_eq!(
            set.select(None, Alg::EdDsa).unwrap().kid.as_deref(),
            Some("ed25519")
        );
        let only_ec = KeySet::new(vec![set
            .select(Some("ec-p256"), Alg::Es256)
            .unwrap()
            .clone()]);
        assert_eq!(
            only_ec.select(None, Alg::Rs256),
            Err(SelectError::UnknownKid)
        );
    }

    #[test]
    fn a_keys_own_alg_restricts_it() {
        let mut jwk = fixture("rsa-a.jwk.json");
        jwk["alg"] = json!("RS256");
        let JwkOutcome::Usable(key) = parse_jwk(&jwk) else {
            panic!()
        };
        assert!(key.accepts(Alg::Rs256));
        assert!(!key.accepts(Alg::Ps256));
        let set = KeySet::new(vec![key]);
        assert_eq!(
            set.select(Some("rsa-a"), Alg::Ps256),
            Err(SelectError::AlgMismatch)
        );
    }

    #[test]
    fn skips_keys_that_are_not_usable_signature_keys() {
        let cases = [
            json!({"kty": "oct", "k": "c2VjcmV0"}),
            json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
            json!({"kty": "OKP", "crv": "X25519", "x": "AA"}),
            json!({"kty": "RSA", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "RSA", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"}),
            fixture("rsa-1024.jwk.json"),
            json!({"kty": "RSA", "n": "", "e": "AQAB"}),
            json!({"kty": "RSA", "n": "AAAA", "e": "AQAB"}),
        ];
        for jwk in cases {
            assert!(matches!(parse_jwk(&jwk), JwkOutcome::Skipped(_)), "{jwk}");
        }
    }

    #[test]
    fn reports_broken_keys_with_the_member_at_fault() {
        let mut short_x = fixture("ec-p256.jwk.json");
        short_x["x"] = json!("AAAA");
        let mut private = fixture("ed25519.jwk.json");
        private["d"] = json!("AAAA");
        let mut no_exponent = fixture("rsa-a.jwk.json");
        no_exponent["e"] = json!("");
        let mut exponent_one = fixture("rsa-a.jwk.json");
        exponent_one["e"] = json!("AQ"); // s^1 = s: anyone could sign
        let mut wrong_alg = fixture("ec-p256.jwk.json");
        wrong_alg["alg"] = json!("RS256");
        let cases = [
            (json!({"kty": "RSA", "e": "AQAB"}), "n"),
            (json!({"kty": "RSA", "n": "!!", "e": "AQAB"}), "n"),
            (json!({"n": "AQAB"}), "kty"),
            (short_x, "x"),
            (no_exponent, "e"),
            (exponent_one, "e"),
            (private, "d"),
            (wrong_alg, "alg"),
        ];
        for (jwk, want) in cases {
            match parse_jwk(&jwk) {
                JwkOutcome::Invalid { member, .. } => assert_eq!(member, want, "{jwk}"),
                other => panic!("{jwk}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_documents_that_are_not_key_sets() {
        assert_eq!(
            KeySet::from_jwks(&json!([])).unwrap_err(),
            KeysError::NotJson
        );
        assert_eq!(
            KeySet::from_jwks(&json!({"k": 1})).unwrap_err(),
            KeysError::NoKeysArray
        );
    }
}
