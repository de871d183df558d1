//! Published JWS examples run through the filter: RFC 7515 Appendix A and E, RFC 7520 §4.1–4.4.
//!
//! The vectors are in `tests/fixtures/rfc/`, extracted from the RFC test copies bundled in
//! PyPI `jwcrypto` 1.6.1 (`jwcrypto/tests.py` for RFC 7515, `jwcrypto/tests-cookbook.py` for
//! RFC 7520) by `tests/fixtures/rfc/extract_jwcrypto.py`, which names each source variable.
//! Private key members are dropped: we only verify.
//!
//! The RFC 7515 tokens carry `{"iss":"joe","exp":1300819380,"http://example.com/is_root":true}`
//! and no `aud`, and the RFC 7520 payload is prose, not claims: no such token may pass
//! `verify::verify`. So the signature is checked on its own with `VerifyingKey::verify` over
//! the signing input, and `verify::verify` must refuse for the claims (not the signature).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mcp_oauth_filter::alg::Alg;
use mcp_oauth_filter::config::{Config, ConfigErrorKind};
use mcp_oauth_filter::json::{b64url_decode, b64url_encode};
use mcp_oauth_filter::keyring::KeyRing;
use mcp_oauth_filter::keys::{parse_jwk, JwkOutcome, VerifyingKey};
use mcp_oauth_filter::verify::{verify, AuthError};
use serde_json::{json, Value};

/// Before the RFC 7515 tokens' `exp` (2011-03-22T18:43:00Z).
const BEFORE_EXP: u64 = 1_300_819_000;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/rfc/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn token(doc: &Value, section: &str) -> String {
    doc[section]["token"].as_str().unwrap().to_string()
}

fn key(doc: &Value, section: &str) -> VerifyingKey {
    match parse_jwk(&doc[section]["key"]) {
        JwkOutcome::Usable(key) => key,
        other => panic!("{section}: key refused: {other:?}"),
    }
}

/// Splits a compact JWS into the signing input and the decoded signature.
fn signing_input(token: &str) -> (&str, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').unwrap();
    (input, b64url_decode(sig).unwrap())
}

/// A configuration whose one issuer is `iss` with `keys` inline, protecting one resource.
fn config(iss: &str, keys: Vec<Value>) -> Config {
    let doc = json!({
        "resources": [{
            "resource": "https://mcp.example.com/mcp",
            "authorization_servers": [iss],
        }],
        "issuers": [{ "issuer": iss, "jwks": { "keys": keys } }],
    });
    Config::from_json(doc.to_string().as_bytes()).unwrap()
}

fn check(config: &Config, token: &str, now: u64) -> Result<(), AuthError> {
    let ring = KeyRing::new(config);
    verify(token, &config.resources[0], config, &ring, None, now).map(|_| ())
}

/// The token with its protected header replaced (for derived cases, not RFC vectors).
fn with_header(token: &str, header: &str) -> String {
    let (_, rest) = token.split_once('.').unwrap();
    format!("{}.{rest}", b64url_encode(header.as_bytes()))
}

/// An RFC 7515 appendix token: its signature verifies with its key under `alg` (and not
/// under `other`, nor with one bit flipped at `flip`), and the token as a whole is refused
/// for its missing audience, not for its signature.
fn assert_appendix_signature(id: &str, alg: Alg, other: Option<Alg>, flip: usize) {
    let doc = fixture("rfc7515.json");
    let t = token(&doc, id);
    let (input, sig) = signing_input(&t);
    let k = key(&doc, id);
    assert!(k.verify(alg, input.as_bytes(), &sig), "{id}");
    if let Some(other) = other {
        assert!(
            !k.verify(other, input.as_bytes(), &sig),
            "{id} under {other}"
        );
    }
    let mut flipped = sig.clone();
    flipped[flip] ^= 1;
    assert!(!k.verify(alg, input.as_bytes(), &flipped), "{id} flipped");

    let c = config(
        "joe",
        vec![doc["A.2"]["key"].clone(), doc["A.3"]["key"].clone()],
    );
    assert_eq!(
        check(&c, &t, BEFORE_EXP),
        Err(AuthError::AudienceNotAccepted)
    );
}

#[test]
fn rfc7515_a2_rs256_signature_verifies_and_the_token_is_refused_for_its_audience() {
    assert_appendix_signature("A.2", Alg::Rs256, Some(Alg::Ps256), 10);
}

#[test]
fn rfc7515_a3_es256_signature_verifies_and_the_token_is_refused_for_its_audience() {
    let (_, sig) = signing_input(&token(&fixture("rfc7515.json"), "A.3"));
    assert_eq!(sig.len(), 64, "r || s");
    assert_appendix_signature("A.3", Alg::Es256, None, 40);
}

#[test]
fn rfc7515_a1_hs256_is_refused_and_its_key_is_never_used() {
    let doc = fixture("rfc7515.json");
    assert!(matches!(
        parse_jwk(&doc["A.1"]["key"]),
        JwkOutcome::Skipped(_)
    ));
    let c = config("joe", vec![doc["A.2"]["key"].clone()]);
    assert_eq!(
        check(&c, &token(&doc, "A.1"), BEFORE_EXP),
        Err(AuthError::AlgNotAllowed)
    );
    // Nor can a configuration allow it.
    let bad = json!({
        "resources": [{"resource": "https://mcp.example.com/mcp", "authorization_servers": ["joe"]}],
        "issuers": [{"issuer": "joe", "jwks": {"keys": [doc["A.2"]["key"]]}, "algorithms": ["HS256"]}],
    });
    let e = Config::from_json(bad.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(e.kind, ConfigErrorKind::ForbiddenAlgorithm(_)),
        "{e:?}"
    );
}

#[test]
fn rfc7515_a5_unsecured_jws_is_refused() {
    let doc = fixture("rfc7515.json");
    let c = config("joe", vec![doc["A.2"]["key"].clone()]);
    assert_eq!(
        check(&c, &token(&doc, "A.5"), BEFORE_EXP),
        Err(AuthError::AlgNotAllowed)
    );
}

#[test]
fn rfc7515_appendix_e_crit_is_refused() {
    let doc = fixture("rfc7515.json");
    let c = config("joe", vec![doc["A.2"]["key"].clone()]);
    let t = token(&doc, "E");
    // The RFC's example is also `alg: none`, refused first.
    assert_eq!(check(&c, &t, BEFORE_EXP), Err(AuthError::AlgNotAllowed));
    // Derived (not an RFC vector): the same `crit` header with a supported alg.
    let header = String::from_utf8(b64url_decode(t.split('.').next().unwrap()).unwrap())
        .unwrap()
        .replace("\"none\"", "\"RS256\"");
    assert!(header.contains("\"crit\""));
    assert_eq!(
        check(&c, &with_header(&t, &header), BEFORE_EXP),
        Err(AuthError::UnsupportedHeader(
            "unsupported critical header (crit)"
        ))
    );
}

#[test]
fn rfc7520_4_1_rs256_signature_verifies_and_prose_claims_are_refused() {
    let doc = fixture("rfc7520.json");
    let t = token(&doc, "4.1");
    let (input, sig) = signing_input(&t);
    let k = key(&doc, "4.1");
    assert_eq!(k.kid.as_deref(), Some("bilbo.baggins@hobbiton.example"));
    assert!(k.verify(Alg::Rs256, input.as_bytes(), &sig));
    let c = config("joe", vec![doc["4.1"]["key"].clone()]);
    assert_eq!(
        check(&c, &t, BEFORE_EXP),
        Err(AuthError::Malformed(
            "token claims are not a valid JSON object"
        ))
    );
}

#[test]
fn rfc7520_4_2_ps384_signature_verifies() {
    // PS384 signatures are randomized: the RFC's is verified, none is produced.
    let doc = fixture("rfc7520.json");
    let t = token(&doc, "4.2");
    let (input, sig) = signing_input(&t);
    let k = key(&doc, "4.2");
    assert!(k.verify(Alg::Ps384, input.as_bytes(), &sig));
    assert!(!k.verify(Alg::Ps256, input.as_bytes(), &sig));
    assert!(!k.verify(Alg::Rs384, input.as_bytes(), &sig));
}

#[test]
fn rfc7520_4_3_es512_is_refused_not_accepted() {
    let doc = fixture("rfc7520.json");
    // The P-521 key is not a key we can use ...
    assert!(matches!(
        parse_jwk(&doc["4.3"]["key"]),
        JwkOutcome::Skipped(_)
    ));
    // ... and ES512 is not an algorithm we verify, whatever keys there are.
    let c = config("joe", vec![doc["4.1"]["key"].clone()]);
    assert_eq!(
        check(&c, &token(&doc, "4.3"), BEFORE_EXP),
        Err(AuthError::AlgNotAllowed)
    );
}

#[test]
fn rfc7520_4_4_hs256_is_refused() {
    let doc = fixture("rfc7520.json");
    assert!(matches!(
        parse_jwk(&doc["4.4"]["key"]),
        JwkOutcome::Skipped(_)
    ));
    let c = config("joe", vec![doc["4.1"]["key"].clone()]);
    assert_eq!(
        check(&c, &token(&doc, "4.4"), BEFORE_EXP),
        Err(AuthError::AlgNotAllowed)
    );
}
