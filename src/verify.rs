//! JWT access-token validation (RFC 7519, RFC 9068, RFC 8725) for one protected resource.
//!
//! Cheap checks run before the signature, so a forged token for the wrong audience costs
//! almost nothing: structure, header, `iss` among the resource's issuers, `alg` on the
//! issuer's allow-list, `aud`, `exp`, `nbf`, the key by `kid`; then the signature. The
//! token's header never names the key (`jku`, `x5u`, `jwk`, `x5c` are ignored) and `crit`
//! is refused: we understand no extension.

use crate::alg::Alg;
use crate::cache::TokenCache;

use crate::config::{Config, IssuerId, KeySource, ProtectedResource};
use crate::hostsig::{self, HostVerify};
use crate::json::{b64url_decode, decode_object, SegmentError};
use crate::keys::{KeySet, SelectError};
use crate::reason::Reason;
use crate::scopes;
use crate::token::{Facts, Identity, Signed, VerifiedToken};
use serde_json::{Map, Value};
use std::rc::Rc;

/// Why a token is refused (401 `invalid_token`; 400 `invalid_request` for [`AuthError::Syntax`]),
/// one variant per way it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    TooLarge,
    /// Not a `b64token` (RFC 6750 §2.1): a malformed request rather than a bad token.
    Syntax(&'static str),
    Malformed(&'static str),
    Encrypted,
    UnsupportedHeader(&'static str),
    /// `typ` names another kind of JWT (RFC 8725 §3.11: explicit typing).
    WrongType,
    AlgNotAllowed,
    IssuerNotAccepted,
    AudienceNotAccepted,
    MissingExp,
    Expired,
    NotYetValid,
    UnknownKid(IssuerId),
    AlgMismatch,
    /// Several keys fit: no `kid` and more than one key for the `alg`, or one `kid` shared by
    /// several keys that fit it.
    AmbiguousKey(&'static str),
    BadSignature,
    /// The issuer's keys have not loaded yet (remote keys only).
    KeysPending(IssuerId),
    /// The issuer has no keys: its tokens are introspected.
    Introspect(IssuerId),
    /// No introspection answer said the token is active.
    Inactive,
}

impl AuthError {
    /// Why the request is refused, for counters, logs and the CLI.
    pub fn reason(&self) -> Reason {
        match self {
            AuthError::TooLarge => Reason::TokenTooLarge,
            AuthError::Syntax(_) => Reason::InvalidRequest,
            AuthError::Malformed(_) => Reason::MalformedToken,
            AuthError::Encrypted => Reason::EncryptedToken,
            AuthError::UnsupportedHeader(_) => Reason::UnsupportedHeader,
            AuthError::WrongType => Reason::WrongTokenType,
            AuthError::AlgNotAllowed => Reason::AlgNotAllowed,
            AuthError::IssuerNotAccepted => Reason::IssuerNotAccepted,
            AuthError::AudienceNotAccepted => Reason::AudienceNotAccepted,
            AuthError::MissingExp => Reason::MissingExp,
            AuthError::Expired => Reason::TokenExpired,
            AuthError::NotYetValid => Reason::TokenNotYetValid,
            AuthError::UnknownKid(_) => Reason::UnknownKid,
            AuthError::AlgMismatch => Reason::AlgKeyMismatch,
            AuthError::AmbiguousKey(_) => Reason::AmbiguousKey,
            AuthError::BadSignature => Reason::BadSignature,
            AuthError::KeysPending(_) => Reason::KeysUnavailable,
            AuthError::Introspect(_) => Reason::IntrospectionUnavailable,
            AuthError::Inactive => Reason::TokenInactive,
        }
    }

    /// Stable short code for logs and metrics.
    pub fn code(&self) -> &'static str {
        self.reason().code()
    }

    /// The `error_description`: what failed, never the token.
    pub fn description(&self) -> &'static str {
        match self {
            AuthError::TooLarge => "token too large",
            AuthError::Syntax(what) => what,
            AuthError::Malformed(what) => what,
            AuthError::Encrypted => "encrypted (JWE) tokens are not accepted",
            AuthError::UnsupportedHeader(what) => what,
            AuthError::WrongType => "token is not an access token (typ names another kind of JWT)",
            AuthError::AlgNotAllowed => "signature algorithm not allowed",
            AuthError::IssuerNotAccepted => "issuer not accepted for this resource",
            AuthError::AudienceNotAccepted => {
                "audience not accepted: token was not issued for this resource"
            }
            AuthError::MissingExp => "token has no exp claim",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid (nbf)",
            AuthError::UnknownKid(_) => "signing key not found (unknown kid)",
            AuthError::AlgMismatch => "signature algorithm does not match the key",
            AuthError::AmbiguousKey(what) => what,
            AuthError::BadSignature => "invalid signature",
            AuthError::KeysPending(_) => "signing keys not available yet",
            AuthError::Introspect(_) => "token to be introspected",
            AuthError::Inactive => "token is not active",
        }
    }
}

/// Where the verifier finds an issuer's keys: inline keys are always ready, fetched keys may
/// still be loading.
pub trait KeyStore {
    fn keys(&self, issuer: IssuerId) -> Option<&KeySet>;

    /// Whether an unknown `kid` may trigger a refetch of the issuer's keys now (README, Remote keys).
    fn refetch_allowed(&self, _issuer: IssuerId, _now: u64) -> bool {
        false
    }

    /// The host's native signature check, if it offers one (see `hostsig`).
    fn host(&self) -> Option<&dyn HostVerify> {
        None
    }
}

fn segment_error(part: &'static str, e: SegmentError) -> AuthError {
    AuthError::Malformed(match (part, e) {
        ("header", SegmentError::Base64) => "token header is not base64url",
        ("header", SegmentError::NotObject) => "token header is not a JSON object",
        ("header", SegmentError::DuplicateMember) => "token header has a duplicate member",
        (_, SegmentError::Base64) => "token claims are not base64url",
        (_, SegmentError::NotObject) => "token claims are not a valid JSON object",
        (_, SegmentError::DuplicateMember) => "token claims have a duplicate member",
    })
}

/// A NumericDate (RFC 7519 §2): a JSON number, possibly fractional.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or(AuthError::Malformed("time claim is not a number")),
        Some(_) => Err(AuthError::Malformed(match name {
            "exp" => "exp is not a number",
            "nbf" => "nbf is not a number",
            _ => "iat is not a number",
        })),
    }
}

/// Validates `token` for `resource` at `now` (seconds since the epoch), against `keys`, first
/// looking in (and then filling) `cache` when there is one.
pub fn verify(
    token: &str,
    resource: &ProtectedResource,
    config: &Config,
    keys: &dyn KeyStore,
    cache: Option<&TokenCache>,
    now: u64,
) -> Result<VerifiedToken, AuthError> {
    if token.len() > config.max_token_bytes {
        return Err(AuthError::TooLarge);
    }
    let cache_key = cache.map(|c| c.key(token));
    if let (Some(cache), Some(cache_key)) = (cache, &cache_key) {
        if let Some(signed) = cache.get(cache_key, now) {
            match signed.alg {
                Some(alg) => {
                    check_facts(alg, &signed.facts, resource, config, now)?;
                    return Ok(VerifiedToken(signed));
                }
                // A JWT whose issuer has no keys, introspected before: asked again (through
                // the shared cache) unless it holds for this resource.
                None if still_introspected(&signed, resource, config, now) => {
                    return Ok(VerifiedToken(signed))
                }
                None => {}
            }
        }
    }
    // After the cache: a cached token passed this check when it was verified.
    crate::extract::check_syntax(token).map_err(AuthError::Syntax)?;
    if let Some(cache) = cache {
        cache.record_miss();
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(if token.split('.').count() == 5 {
            AuthError::Encrypted
        } else {
            AuthError::Malformed("token is not a JWS in compact form (three parts)")
        });
    };

    let header = decode_object(h64).map_err(|e| segment_error("header", e))?;
    if header.contains_key("enc") {
        return Err(AuthError::Encrypted);
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Alg::parse(name).map_err(|_| AuthError::AlgNotAllowed)?,
        Some(_) => return Err(AuthError::Malformed("alg is not a string")),
        None => return Err(AuthError::Malformed("token header has no alg")),
    };
    if header.contains_key("crit") {
        return Err(AuthError::UnsupportedHeader(
            "unsupported critical header (crit)",
        ));
    }
    if header.contains_key("b64") {
        return Err(AuthError::UnsupportedHeader(
            "unencoded payload (b64) not supported",
        ));
    }
    if header.contains_key("zip") {
        return Err(AuthError::UnsupportedHeader(
            "compressed payload (zip) not supported",
        ));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if is_access_token_type(typ) => {}
        Some(Value::String(_)) => return Err(AuthError::WrongType),
        Some(_) => return Err(AuthError::Malformed("typ is not a string")),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(AuthError::Malformed("kid is not a string")),
    };

    let claims = decode_object(p64).map_err(|e| segment_error("claims", e))?;
    let facts = read_facts(&claims)?;
    let (issuer, exp) = check_facts(alg, &facts, resource, config, now)?;

    let Some(set) = keys.keys(issuer) else {
        // An issuer without keys has its JWTs introspected too (RFC 7662).
        let keyless = config
            .issuers
            .get(issuer)
            .is_some_and(|i| i.keys == KeySource::None && i.introspection.is_some());
        return Err(if keyless {
            AuthError::Introspect(issuer)
        } else {
            AuthError::KeysPending(issuer)
        });
    };
    let key = set.select(kid, alg).map_err(|e| match e {
        SelectError::UnknownKid => AuthError::UnknownKid(issuer),
        SelectError::AlgMismatch => AuthError::AlgMismatch,
        SelectError::Ambiguous if kid.is_some() => {
            AuthError::AmbiguousKey("several keys share the token's kid")
        }
        SelectError::Ambiguous => {
            AuthError::AmbiguousKey("token has no kid and several keys could verify it")
        }
    })?;
    let sig = b64url_decode(s64).ok_or(AuthError::Malformed("signature is not base64url"))?;
    let signed = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    if sig.is_empty() || !hostsig::check(key, alg, signed, &sig, keys.host()).0 {
        return Err(AuthError::BadSignature);
    }
    let vouched = vouched(config, issuer, &claims, scopes::granted(&claims));
    let signed = Rc::new(Signed {
        alg: Some(alg),
        issuer,
        key: key.fingerprint,
        exp,
        facts,
        identity: vouched.identity,
        scopes: vouched.scopes,
        header_values: vouched.header_values,
    });
    if let (Some(cache), Some(cache_key)) = (cache, cache_key) {
        cache.insert(cache_key, signed.clone(), exp + config.clock_skew as f64);
    }
    Ok(VerifiedToken(signed))
}

/// What a verified token keeps of its claims (a JWT's, or an introspection answer's
/// members), whoever vouched for them: who it names, its scopes with the implied ones, the
/// values of the claim headers.
pub(crate) struct Vouched {
    pub identity: Rc<Identity>,
    pub scopes: Vec<String>,
    pub header_values: Vec<Option<String>>,
}

pub(crate) fn vouched(
    config: &Config,
    issuer: IssuerId,
    claims: &Map<String, Value>,
    granted: Vec<String>,
) -> Vouched {
    let name = config.issuers.get(issuer).map_or("", |i| i.issuer.as_str());
    Vouched {
        identity: Rc::new(Identity::of(name, claims, &granted)),
        scopes: scopes::expand(granted, &config.implications),
        header_values: config
            .claim_headers
            .iter()
            .map(|(_, claim)| claims.get(claim).and_then(claim_header_value))
            .collect(),
    }
}

/// Whether a `typ` header may belong to an access token: RFC 8725 §3.11 has each kind of JWT
/// name its own `+jwt` media type, so any `…+jwt` other than `at+jwt` (RFC 9068 §2.1; with or
/// without `application/`, case-insensitively) is another kind of token (`logout+jwt`,
/// `secevent+jwt`, `id-token+jwt`); plain `JWT` and anything else stay accepted.
fn is_access_token_type(typ: &str) -> bool {
    let lower = typ.to_ascii_lowercase();
    let subtype = lower.strip_prefix("application/").unwrap_or(&lower);
    !subtype.ends_with("+jwt") || subtype == "at+jwt"
}

/// String, number and bool claims become header values; anything with a control character
/// (which could split a header) or of another type is not forwarded.
fn claim_header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!text.chars().any(char::is_control)).then_some(text)
}

/// Reads the checked claims, refusing ones of the wrong type (`iss` not a string, `aud`
/// not a string or array of strings, a time that is not a number).
fn read_facts(claims: &Map<String, Value>) -> Result<Facts, AuthError> {
    let iss = match claims.get("iss") {
        None => None,
        Some(Value::String(iss)) => Some(iss.clone()),
        Some(_) => return Err(AuthError::Malformed("iss is not a string")),
    };
    const BAD_AUD: AuthError = AuthError::Malformed("aud is not a string or array of strings");
    let aud = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or(BAD_AUD))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(BAD_AUD),
    };
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    numeric_date(claims, "iat")?;
    Ok(Facts { iss, aud, exp, nbf })
}

/// The claim checks, run for every request (cached tokens included): `iss` among the
/// resource's issuers, `alg` on that issuer's allow-list, `aud`, `exp` (required), `nbf`.
/// Returns the issuer and `exp`.
fn check_facts(
    alg: Alg,
    facts: &Facts,
    resource: &ProtectedResource,
    config: &Config,
    now: u64,
) -> Result<(IssuerId, f64), AuthError> {
    let iss = facts.iss.as_deref().ok_or(AuthError::IssuerNotAccepted)?;
    let issuer = resource
        .issuers
        .iter()
        .copied()
        .find(|id| config.issuers.get(*id).is_some_and(|i| i.issuer == iss))
        .ok_or(AuthError::IssuerNotAccepted)?;
    let allowed = config.issuers.get(issuer).map(|i| i.algorithms);
    if !allowed.is_some_and(|set| set.contains(alg)) {
        return Err(AuthError::AlgNotAllowed);
    }
    if !facts.aud.iter().any(|a| resource.audiences.contains(a)) {
        return Err(AuthError::AudienceNotAccepted);
    }
    let skew = config.clock_skew as f64;
    let now_f = now as f64;
    let exp = match facts.exp {
        None => return Err(AuthError::MissingExp),
        Some(exp) if now_f >= exp + skew => return Err(AuthError::Expired),
        Some(exp) => exp,
    };
    if facts.nbf.is_some_and(|nbf| nbf > now_f + skew) {
        return Err(AuthError::NotYetValid);
    }
    Ok((issuer, exp))
}

/// Whether a token an introspection answer vouched for (kept in the verified-token cache) holds
/// for `resource` at `now`: the issuer that answered introspects for it, the answer's `aud`
/// names it, and its `exp`/`nbf` (when given) allow `now`, with the leeway. Anything else is
/// decided from the answer itself, with the reason it fails.
pub fn still_introspected(
    signed: &Signed,
    resource: &ProtectedResource,
    config: &Config,
    now: u64,
) -> bool {
    let skew = config.clock_skew as f64;
    let now = now as f64;
    signed.alg.is_none()
        && resource.introspected_by.contains(&signed.issuer)
        && signed
            .facts
            .aud
            .iter()
            .any(|a| resource.audiences.contains(a))
        && signed.facts.exp.is_none_or(|exp| now < exp + skew)
        && signed.facts.nbf.is_none_or(|nbf| nbf <= now + skew)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::tests::{base, base_json, compile, remote_json};
    use crate::json::b64url_encode;
    use crate::keyring::KeyRing;
    use crate::keys::KeySet;
    use ring::rand::SystemRandom;
    use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
    use serde_json::json;

    pub const NOW: u64 = 1_800_000_000;

    fn der(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}.pk8.der",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Signs `header_b64.claims_b64` with a fixture key.
    pub fn sign(key: &str, alg: &str, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
                let pair = RsaKeyPair::from_pkcs8(&der(key)).unwrap();
                let padding: &dyn sig::RsaEncoding = match alg {
                    "RS256" => &sig::RSA_PKCS1_SHA256,
                    "RS384" => &sig::RSA_PKCS1_SHA384,
                    "RS512" => &sig::RSA_PKCS1_SHA512,
                    "PS256" => &sig::RSA_PSS_SHA256,
                    "PS384" => &sig::RSA_PSS_SHA384,
                    _ => &sig::RSA_PSS_SHA512,
                };
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, message, &mut out).unwrap();
                out
            }
            "ES256" | "ES384" => {
                let params = if alg == "ES256" {
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &sig::ECDSA_P384_SHA384_FIXED_SIGNING
                };
                let pair = EcdsaKeyPair::from_pkcs8(params, &der(key), &rng).unwrap();
                pair.sign(&rng, message).unwrap().as_ref().to_vec()
            }
            "EdDSA" => Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der(key))
                .unwrap()
                .sign(message)
                .as_ref()
                .to_vec(),
            other => panic!("no signer for {other}"),
        }
    }

    /// A token over raw header and claims bytes.
    pub fn token_raw(key: &str, alg: &str, header: &[u8], claims: &[u8]) -> String {
        let signed = format!("{}.{}", b64url_encode(header), b64url_encode(claims));
        let signature = sign(key, alg, signed.as_bytes());
        format!("{signed}.{}", b64url_encode(&signature))
    }

    pub fn token(key: &str, alg: &str, header: Value, claims: Value) -> String {
        token_raw(
            key,
            alg,
            header.to_string().as_bytes(),
            claims.to_string().as_bytes(),
        )
    }

    pub fn good_claims() -> Value {
        json!({
            "iss": "https://auth.example.com",
            "aud": "https://mcp.example.com/mcp",
            "sub": "user-1",
            "exp": NOW + 300,
            "iat": NOW - 10,
            "scope": "mcp:read mcp:write"
        })
    }

    pub fn good_token() -> String {
        token(
            "rsa-a",
            "RS256",
            json!({"alg": "RS256", "kid": "rsa-a", "typ": "at+jwt"}),
            good_claims(),
        )
    }

    fn check(config: &Config, token: &str) -> Result<VerifiedToken, AuthError> {
        verify(
            token,
            &config.resources[0],
            config,
            &KeyRing::new(config),
            None,
            NOW,
        )
    }

    fn with_claim(name: &str, value: Value) -> String {
        let mut claims = good_claims();
        claims[name] = value;
        token(
            "rsa-a",
            "RS256",
            json!({"alg": "RS256", "kid": "rsa-a"}),
            claims,
        )
    }

    #[test]
    fn accepts_a_valid_token_for_every_algorithm() {
        let c = base();
        for (key, alg) in [
            ("rsa-a", "RS256"),
            ("rsa-a", "RS384"),
            ("rsa-b", "RS512"),
            ("rsa-b", "PS256"),
            ("rsa-a", "PS384"),
            ("rsa-a", "PS512"),
            ("ec-p256", "ES256"),
            ("ec-p384", "ES384"),
            ("ed25519", "EdDSA"),
        ] {
            let t = token(key, alg, json!({"alg": alg, "kid": key}), good_claims());
            let v = check(&c, &t).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
            assert_eq!(v.issuer, 0);
            assert_eq!(v.scopes, ["mcp:read", "mcp:write"]);
            assert_eq!(v.header_values, [Some("user-1".to_string())]);
        }
    }

    #[test]
    fn rejects_token_signed_by_unknown_key_or_tampered() {
        let c = base();
        let t = token(
            "rsa-b",
            "RS256",
            json!({"alg": "RS256", "kid": "rsa-a"}),
            good_claims(),
        );
        assert_eq!(check(&c, &t), Err(AuthError::BadSignature));
        let unknown = token(
            "rsa-a",
            "RS256",
            json!({"alg": "RS256", "kid": "rsa-z"}),
            good_claims(),
        );
        assert_eq!(check(&c, &unknown), Err(AuthError::UnknownKid(0)));
        let good = good_token();
        let (signed, sig) = good.rsplit_once('.').unwrap();
        let mut bytes = b64url_decode(sig).unwrap();
        bytes[10] ^= 1;
        let flipped = format!("{signed}.{}", b64url_encode(&bytes));
        assert_eq!(check(&c, &flipped), Err(AuthError::BadSignature));
        assert_eq!(
            check(&c, &format!("{signed}.")),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check(&c, &format!("{signed}.AAAA")),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn refuses_jwts_typed_as_another_kind_of_token() {
        let c = base();
        let typed = |typ: Value| {
            token(
                "rsa-a",
                "RS256",
                json!({"alg": "RS256", "kid": "rsa-a", "typ": typ}),
                good_claims(),
            )
        };
        for typ in [
            "JWT",
            "jwt",
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "JOSE",
        ] {
            assert!(check(&c, &typed(json!(typ))).is_ok(), "{typ}");
        }
        for typ in [
            "logout+jwt",
            "secevent+jwt",
            "application/secevent+jwt",
            "Logout+JWT",
            "id-token+jwt",
            "dpop+jwt",
        ] {
            assert_eq!(
                check(&c, &typed(json!(typ))),
                Err(AuthError::WrongType),
                "{typ}"
            );
        }
        assert_eq!(
            check(&c, &typed(json!(7))),
            Err(AuthError::Malformed("typ is not a string"))
        );
        assert_eq!(AuthError::WrongType.code(), "wrong_token_type");
    }

    #[test]
    fn refuses_algorithm_confusion() {
        let c = base();
        let none = format!(
            "{}.{}.",
            b64url_encode(br#"{"alg":"none","kid":"rsa-a"}"#),
            b64url_encode(good_claims().to_string().as_bytes())
        );
        assert_eq!(check(&c, &none), Err(AuthError::AlgNotAllowed));
        for alg in ["HS256", "None", "NONE", "ES512"] {
            let h = json!({"alg": alg, "kid": "rsa-a"});
            let t = format!(
                "{}.{}.AAAA",
                b64url_encode(h.to_string().as_bytes()),
                b64url_encode(good_claims().to_string().as_bytes())
            );
            assert_eq!(check(&c, &t), Err(AuthError::AlgNotAllowed), "{alg}");
        }
        // RS256 header naming the EC key: the key type decides, not the header.
        let t = token(
            "rsa-a",
            "RS256",
            json!({"alg": "RS256", "kid": "ec-p256"}),
            good_claims(),
        );
        assert_eq!(check(&c, &t), Err(AuthError::AlgMismatch));
        let t = token(
            "ec-p256",
            "ES256",
            json!({"alg": "ES256", "kid": "rsa-a"}),
            good_claims(),
        );
        assert_eq!(check(&c, &t), Err(AuthError::AlgMismatch));
    }

    #[test]
    fn enforces_the_issuers_algorithm_allow_list() {
        let c = base();
        let mut claims = good_claims();
        claims["iss"] = json!("https://second.example.com/tenant");
        claims["aud"] = json!("https://other.example.com/tools");
        let t = token(
            "ec-p256",
            "ES256",
            json!({"alg": "ES256", "kid": "ec-p256"}),
            claims.clone(),
        );
        assert!(verify(&t, &c.resources[1], &c, &KeyRing::new(&c), None, NOW).is_ok());
        let t = token(
            "rsa-a",
            "RS256",
            json!({"alg": "RS256", "kid": "rsa-a"}),
            claims,
        );
        assert_eq!(
            verify(&t, &c.resources[1], &c, &KeyRing::new(&c), None, NOW),
            Err(AuthError::AlgNotAllowed)
        );
    }

    #[test]
    fn checks_time_claims_with_leeway() {
        let c = base();
        assert_eq!(
            check(&c, &with_claim("exp", json!(NOW - 61))),
            Err(AuthError::Expired)
        );
        assert_eq!(
            check(&c, &with_claim("exp", json!(NOW - 60))),
            Err(AuthError::Expired)
        );
        assert!(check(&c, &with_claim("exp", json!(NOW - 30))).is_ok());
        assert!(check(&c, &with_claim("exp", json!((NOW + 10) as f64 + 0.5))).is_ok());
        assert_eq!(
            check(&c, &with_claim("exp", json!(-1))),
            Err(AuthError::Expired)
        );
        assert_eq!(
            check(&c, &with_claim("exp", json!("1900000000"))),
            Err(AuthError::Malformed("exp is not a number"))
        );
        assert_eq!(
            check(&c, &with_claim("nbf", json!(NOW + 61))),
            Err(AuthError::NotYetValid)
        );
        assert!(check(&c, &with_claim("nbf", json!(NOW + 59))).is_ok());
        assert_eq!(
            check(&c, &with_claim("nbf", json!(null))),
            Err(AuthError::Malformed("nbf is not a number"))
        );
        let mut no_exp = good_claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        let t = token(
            "rsa-a",
            "RS256",
            json!({"alg": "RS256", "kid": "rsa-a"}),
            no_exp,
        );
        assert_eq!(check(&c, &t), Err(AuthError::MissingExp));
    }

    #[test]
    fn checks_issuer_byte_for_byte_and_audience_per_resource() {
        let c = base();
        assert_eq!(
            check(&c, &with_claim("iss", json!("https://auth.example.com/"))),
            Err(AuthError::IssuerNotAccepted)
        );
        assert_eq!(
            check(&c, &with_claim("iss", json!("https://AUTH.example.com"))),
            Err(AuthError::IssuerNotAccepted)
        );
        assert_eq!(
            check(&c, &with_claim("iss", json!(["https://auth.example.com"]))),
            Err(AuthError::Malformed("iss is not a string"))
        );
        // An issuer configured, but not for resource 0.
        assert_eq!(
            check(
                &c,
                &with_claim("iss", json!("https://second.example.com/tenant"))
            ),
            Err(AuthError::IssuerNotAccepted)
        );
        assert_eq!(
            check(
                &c,
                &with_claim("aud", json!("https://other.example.com/tools"))
            ),
            Err(AuthError::AudienceNotAccepted)
        );
        assert_eq!(
            check(&c, &with_claim("aud", json!([]))),
            Err(AuthError::AudienceNotAccepted)
        );
        assert_eq!(
            check(
                &c,
                &with_claim("aud", json!([["https://mcp.example.com/mcp"]]))
            ),
            Err(AuthError::Malformed(
                "aud is not a string or array of strings"
            ))
        );
        assert_eq!(
            check(&c, &with_claim("aud", json!({"a": 1}))),
            Err(AuthError::Malformed(
                "aud is not a string or array of strings"
            ))
        );
        assert!(check(
            &c,
            &with_claim("aud", json!(["x", "https://mcp.example.com/mcp"]))
        )
        .is_ok());
        assert_eq!(
            check(
                &c,
                &with_claim("aud", json!("https://mcp.example.com/mcp/"))
            ),
            Err(AuthError::AudienceNotAccepted)
        );
        let mut v = base_json();
        v["resources"][0]["audiences"] = json!(["api://legacy"]);
        let extra = compile(&v).unwrap();
        assert!(check(&extra, &with_claim("aud", json!("api://legacy"))).is_ok());
    }

    #[test]
    fn refuses_malformed_structures() {
        let c = base();
        let claims = b64url_encode(good_claims().to_string().as_bytes());
        let cases: Vec<(String, AuthError)> = vec![
            (
                "abc".into(),
                AuthError::Malformed("token is not a JWS in compact form (three parts)"),
            ),
            (
                "a.b".into(),
                AuthError::Malformed("token is not a JWS in compact form (three parts)"),
            ),
            (
                "a.b.c.d".into(),
                AuthError::Malformed("token is not a JWS in compact form (three parts)"),
            ),
            ("a.b.c.d.e".into(), AuthError::Encrypted),
            (
                format!("!!.{claims}.AA"),
                AuthError::Syntax("malformed Bearer credential"),
            ),
            (
                // b64token syntax allows `+` and `/`; base64url does not.
                format!("ab+/.{claims}.AA"),
                AuthError::Malformed("token header is not base64url"),
            ),
            (
                format!("{}.{claims}.AA", b64url_encode(b"[1]")),
                AuthError::Malformed("token header is not a JSON object"),
            ),
            (
                format!(
                    "{}.{claims}.AA",
                    b64url_encode(br#"{"alg":"RS256","alg":"none"}"#)
                ),
                AuthError::Malformed("token header has a duplicate member"),
            ),
            (
                format!("{}.{claims}.AA", b64url_encode(br#"{"kid":"rsa-a"}"#)),
                AuthError::Malformed("token header has no alg"),
            ),
            (
                format!(
                    "{}.{claims}.AA",
                    b64url_encode(br#"{"alg":"RS256","enc":"A128GCM"}"#)
                ),
                AuthError::Encrypted,
            ),
        ];
        for (t, want) in cases {
            assert_eq!(check(&c, &t), Err(want), "{t}");
        }
    }

    #[test]
    fn refuses_claims_that_are_not_a_clean_object() {
        let c = base();
        let header = br#"{"alg":"RS256","kid":"rsa-a"}"#;
        let dup = br#"{"iss":"https://auth.example.com","aud":"x","aud":"https://mcp.example.com/mcp","exp":1900000000}"#;
        assert_eq!(
            check(&c, &token_raw("rsa-a", "RS256", header, dup)),
            Err(AuthError::Malformed("token claims have a duplicate member"))
        );
        assert_eq!(
            check(&c, &token_raw("rsa-a", "RS256", header, b"\"claims\"")),
            Err(AuthError::Malformed(
                "token claims are not a valid JSON object"
            ))
        );
    }

    #[test]
    fn refuses_crit_b64_and_zip_and_ignores_embedded_key_sources() {
        let c = base();
        for (extra, want) in [
            (
                json!({"crit": ["exp"], "exp": 1}),
                "unsupported critical header (crit)",
            ),
            (
                json!({"b64": false, "crit": []}),
                "unsupported critical header (crit)",
            ),
            (
                json!({"b64": true}),
                "unencoded payload (b64) not supported",
            ),
            (
                json!({"zip": "DEF"}),
                "compressed payload (zip) not supported",
            ),
        ] {
            let mut h = json!({"alg": "RS256", "kid": "rsa-a"});
            for (k, v) in extra.as_object().unwrap() {
                h[k] = v.clone();
            }
            let t = token("rsa-a", "RS256", h, good_claims());
            assert_eq!(check(&c, &t), Err(AuthError::UnsupportedHeader(want)));
        }
        // Signed by rsa-b, pointing at rsa-b's public key in every embedded form: still our key.
        let jwk = crate::keys::tests::fixture("rsa-b.jwk.json");
        let h = json!({"alg": "RS256", "kid": "rsa-a", "jwk": jwk, "jku": "https://evil/jwks", "x5u": "https://evil/x5u", "x5c": ["AAAA"]});
        assert_eq!(
            check(&c, &token("rsa-b", "RS256", h, good_claims())),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn refuses_a_kid_that_several_fitting_keys_share_and_says_so() {
        use crate::keys::tests::fixture;
        let mut twin = fixture("rsa-b.jwk.json");
        twin["kid"] = json!("rsa-a");
        let mut v = base_json();
        v["issuers"][0]["jwks"] = json!({"keys": [fixture("rsa-a.jwk.json"), twin]});
        let c = compile(&v).unwrap();
        let e = check(&c, &good_token()).unwrap_err();
        assert_eq!(
            e,
            AuthError::AmbiguousKey("several keys share the token's kid")
        );
        assert_eq!(e.code(), "ambiguous_key");
        let no_kid = token("rsa-a", "RS256", json!({"alg": "RS256"}), good_claims());
        assert_eq!(
            check(&c, &no_kid),
            Err(AuthError::AmbiguousKey(
                "token has no kid and several keys could verify it"
            ))
        );
    }

    #[test]
    fn enforces_the_token_length_cap_before_parsing() {
        let c = base();
        let huge = "a".repeat(c.max_token_bytes + 1);
        assert_eq!(check(&c, &huge), Err(AuthError::TooLarge));
        let mut claims = good_claims();
        claims["pad"] = json!("x".repeat(7000));
        let t = token(
            "ec-p256",
            "ES256",
            json!({"alg": "ES256", "kid": "ec-p256"}),
            claims,
        );
        assert!(t.len() > 8192);
        assert_eq!(check(&c, &t), Err(AuthError::TooLarge));
    }

    #[test]
    fn reports_pending_keys_for_remote_issuers() {
        let c = compile(&remote_json()).unwrap();
        assert_eq!(check(&c, &good_token()), Err(AuthError::KeysPending(0)));
    }

    #[test]
    fn serves_repeated_tokens_from_the_cache_but_checks_claims_every_time() {
        let c = base();
        let ring = KeyRing::new(&c);
        let cache = TokenCache::new(c.token_cache_size);
        let t = good_token();
        let first = verify(&t, &c.resources[0], &c, &ring, Some(&cache), NOW).unwrap();
        let again = verify(&t, &c.resources[0], &c, &ring, Some(&cache), NOW + 1).unwrap();
        assert!(
            Rc::ptr_eq(&first.0, &again.0),
            "second check is a cache hit"
        );
        let counts = cache.take_counts();
        assert_eq!(
            (counts.hits, counts.misses, counts.introspected_hits),
            (1, 1, 0)
        );
        // Same token, other resource: the audience is checked on the hit.
        assert_eq!(
            verify(&t, &c.resources[1], &c, &ring, Some(&cache), NOW + 1),
            Err(AuthError::AudienceNotAccepted)
        );
        // Past exp + skew, the cached entry no longer counts.
        assert_eq!(
            verify(&t, &c.resources[0], &c, &ring, Some(&cache), NOW + 361),
            Err(AuthError::Expired)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn refuses_a_cached_token_once_its_key_left_the_set() {
        use crate::keys::tests::fixture_set;
        use crate::remote::{FetchPolicy, FetchState};
        let c = compile(&remote_json()).unwrap();
        let mut ring = KeyRing::new(&c);
        let cache = TokenCache::new(c.token_cache_size);
        let mut state = FetchState::default();
        state.succeed(NOW, None, 1, &FetchPolicy::default());
        ring.install(0, fixture_set(), state.clone(), &cache);
        let t = good_token();
        assert!(verify(&t, &c.resources[0], &c, &ring, Some(&cache), NOW).is_ok());
        assert_eq!(cache.len(), 1);
        let without_a: Vec<_> = fixture_set()
            .keys()
            .iter()
            .filter(|k| k.kid.as_deref() != Some("rsa-a"))
            .cloned()
            .collect();
        state.succeed(NOW + 1, None, 2, &FetchPolicy::default());
        ring.install(0, KeySet::new(without_a), state, &cache);
        assert!(cache.is_empty());
        assert_eq!(
            verify(&t, &c.resources[0], &c, &ring, Some(&cache), NOW + 1),
            Err(AuthError::UnknownKid(0))
        );
    }

    #[test]
    fn never_caches_a_token_that_failed() {
        let c = base();
        let ring = KeyRing::new(&c);
        let cache = TokenCache::new(c.token_cache_size);
        let good = good_token();
        let (signed, _) = good.rsplit_once('.').unwrap();
        let forged = format!("{signed}.AAAA");
        for _ in 0..2 {
            assert_eq!(
                verify(&forged, &c.resources[0], &c, &ring, Some(&cache), NOW),
                Err(AuthError::BadSignature)
            );
        }
        assert!(cache.is_empty());
    }

    #[test]
    fn descriptions_never_contain_quotes_or_backslashes() {
        let all = [
            AuthError::TooLarge,
            AuthError::Encrypted,
            AuthError::AlgNotAllowed,
            AuthError::IssuerNotAccepted,
            AuthError::AudienceNotAccepted,
            AuthError::MissingExp,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::UnknownKid(0),
            AuthError::AlgMismatch,
            AuthError::AmbiguousKey("x"),
            AuthError::BadSignature,
            AuthError::KeysPending(0),
        ];
        for e in all {
            assert!(!e.description().contains(['"', '\\']), "{e:?}");
            assert!(!e.code().is_empty());
        }
    }
}
