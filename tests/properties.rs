//! Property tests of the pure core: nothing that reads request or configuration bytes panics
//! on any input (a panic in a callback kills the VM for every request on that worker), the
//! path normal form keeps its promises, and a `WWW-Authenticate` challenge parses back
//! (RFC 7235 §2.1 auth-params) to exactly the parameters that were put in.
//!
//! Case counts are tuned to keep this file at a few seconds under `cargo test`; `fuzz/` runs
//! the same entry points for as long as one likes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mcp_oauth_filter::cache::TokenCache;
use mcp_oauth_filter::challenge::{ErrorCode, ResourceChallenge};
use mcp_oauth_filter::config::Config;
use mcp_oauth_filter::extract::{extract, Credential};
use mcp_oauth_filter::json::b64url_encode;
use mcp_oauth_filter::keyring::KeyRing;
use mcp_oauth_filter::keys::{parse_jwk, KeySet};
use mcp_oauth_filter::paths::{normalize, split_query, Normalized};
use mcp_oauth_filter::remote::{max_age, read_jwks};
use mcp_oauth_filter::verify::verify;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const NOW: u64 = 1_800_000_000;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn base_config_json() -> Value {
    json!({
        "resources": [
            {
                "resource": "https://mcp.example.com/mcp",
                "authorization_servers": ["https://auth.example.com"],
                "scopes_supported": ["mcp:read", "mcp:write"],
                "required_scopes": ["mcp:read"]
            },
            {
                "resource": "https://other.example.com/tools",
                "authorization_servers": ["https://auth.example.com", "https://second.example.com/t"],
                "audiences": ["api://tools"]
            }
        ],
        "issuers": [
            { "issuer": "https://auth.example.com", "jwks": fixture("jwks.json") },
            { "issuer": "https://second.example.com/t", "jwks": {"keys": [fixture("ec-p256.jwk.json")]},
              "algorithms": ["ES256"] }
        ],
        "claims_to_headers": { "X-MCP-Subject": "sub" }
    })
}

thread_local! {
    static STATE: (Config, KeyRing, TokenCache) = {
        let c = Config::from_json(base_config_json().to_string().as_bytes()).unwrap();
        let ring = KeyRing::new(&c);
        let cache = TokenCache::new(c.token_cache_size);
        (c, ring, cache)
    };
}

fn verify_everywhere(token: &str, now: u64) {
    STATE.with(|(c, ring, cache)| {
        for r in &c.resources {
            let _ = verify(token, r, c, ring, Some(cache), now);
        }
    });
}

/// Arbitrary JSON values, a few levels deep, with strings and numbers near the interesting ones.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        (NOW - 100..NOW + 1000).prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "RS256",
            "ES256",
            "EdDSA",
            "none",
            "HS256",
            "https://auth.example.com",
            "https://mcp.example.com/mcp",
            "rsa-a",
            "ec-p256",
            "RSA",
            "EC",
            "P-256",
            "OKP",
            "Ed25519",
            "AQAB",
            "",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((member_name(), inner), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn member_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "alg", "kid", "typ", "crit", "enc", "b64", "zip", "jwk", "jku", "iss", "aud", "exp",
            "nbf", "iat", "sub", "scope", "scp", "kty", "crv", "n", "e", "x", "y", "d", "use",
            "key_ops", "keys",
        ])
        .prop_map(String::from),
        1 => "[a-z_]{0,6}",
    ]
}

/// JSON-ish bytes: usually a serialized value, sometimes raw bytes or a duplicate member.
fn jsonish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (member_name(), json_value(), json_value()).prop_map(|(k, a, b)| {
            format!("{{{k:?}:{a},{k:?}:{b}}}").into_bytes()
        }),
    ]
}

fn b64url_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| b64url_encode(&b)),
        "[A-Za-z0-9_=+/-]{0,20}",
    ]
}

/// Objects shaped like JWKs: right member names, arbitrary or plausible values.
fn jwk_like() -> impl Strategy<Value = Value> {
    let kty = prop::sample::select(vec!["RSA", "EC", "OKP", "oct", "rsa", ""]);
    let crv = prop::sample::select(vec!["P-256", "P-384", "P-521", "Ed25519", "X25519", ""]);
    let alg = prop::sample::select(vec![
        "RS256", "PS512", "ES256", "ES384", "EdDSA", "HS256", "",
    ]);
    (
        kty,
        crv,
        b64url_text(),
        b64url_text(),
        b64url_text(),
        b64url_text(),
        prop::option::of(alg),
        prop::option::of(json_value()),
        prop::option::of(prop::sample::select(vec!["sig", "enc"])),
    )
        .prop_map(|(kty, crv, n, e, x, y, alg, kid, usage)| {
            let mut jwk = json!({"kty": kty, "crv": crv, "n": n, "e": e, "x": x, "y": y});
            if let Some(alg) = alg {
                jwk["alg"] = json!(alg);
            }
            if let Some(kid) = kid {
                jwk["kid"] = kid;
            }
            if let Some(usage) = usage {
                jwk["use"] = json!(usage);
            }
            jwk
        })
}

fn check_normal_form(raw: &str) -> Result<(), TestCaseError> {
    let (path, query) = split_query(raw);
    prop_assert!(raw.starts_with(path));
    prop_assert!(!path.contains(['?', '#']));
    if let Some(q) = query {
        prop_assert!(!q.contains('#'));
    }
    let n = normalize(path);
    let out = n.as_str();
    if let Normalized::Plain(p) = n {
        prop_assert_eq!(p, path);
    }
    prop_assert!(out.starts_with('/'), "{:?} -> {:?}", raw, n);
    for bad in ["//", "/./", "/../"] {
        prop_assert!(!out.contains(bad), "{:?} -> {:?}", raw, n);
    }
    prop_assert!(
        !out.ends_with("/.") && !out.ends_with("/.."),
        "{:?} -> {:?}",
        raw,
        n
    );
    if !matches!(n, Normalized::Ambiguous(_)) {
        let again = normalize(out);
        prop_assert_eq!(again.as_str(), out, "{:?} -> {:?} -> {:?}", raw, n, again);
        prop_assert!(!matches!(again, Normalized::Ambiguous(_)));
    }
    Ok(())
}

/// Parses `Bearer auth-param *( OWS "," OWS auth-param )` (RFC 7235 §2.1, RFC 9110 §5.6):
/// `token "=" ( token / quoted-string )`. Refuses anything else, empty list elements included.
fn parse_bearer(header: &str) -> Result<Vec<(String, String)>, String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let rest = header.strip_prefix("Bearer ").ok_or("no Bearer scheme")?;
    let mut chars = rest.chars().peekable();
    let mut params = Vec::new();
    loop {
        let name: String = std::iter::from_fn(|| chars.next_if(|c| tchar(*c))).collect();
        if name.is_empty() {
            return Err(format!("empty parameter name in {header:?}"));
        }
        if chars.next() != Some('=') {
            return Err(format!("no '=' after {name} in {header:?}"));
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next().ok_or("unterminated quoted-string")? {
                    '"' => break,
                    '\\' => v.push(chars.next().ok_or("dangling backslash")?),
                    c if c == '\t' || c == ' ' || (c as u32 >= 0x21 && c as u32 != 0x7f) => {
                        v.push(c)
                    }
                    c => return Err(format!("{c:?} not allowed in a quoted-string")),
                }
            }
            v
        } else {
            let v: String = std::iter::from_fn(|| chars.next_if(|c| tchar(*c))).collect();
            if v.is_empty() {
                return Err(format!("empty value for {name}"));
            }
            v
        };
        params.push((name, value));
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        match chars.next() {
            None => return Ok(params),
            Some(',') => while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {},
            Some(c) => return Err(format!("unexpected {c:?} in {header:?}")),
        }
    }
}

fn scope_token() -> impl Strategy<Value = String> {
    // RFC 6749 §3.3: 1*( %x21 / %x23-5B / %x5D-7E ).
    "[!#-\\[\\]-~]{1,12}"
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn verify_never_panics_on_arbitrary_strings(token in prop_oneof![
        ".*",
        "[A-Za-z0-9_.=-]{0,200}",
    ], offset in 0u64..2000) {
        verify_everywhere(&token, NOW - 1000 + offset);
    }

    #[test]
    fn verify_never_panics_on_arbitrary_three_part_tokens(
        header in jsonish_bytes(),
        claims in jsonish_bytes(),
        sig in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let token = format!(
            "{}.{}.{}",
            b64url_encode(&header),
            b64url_encode(&claims),
            b64url_encode(&sig)
        );
        verify_everywhere(&token, NOW);
    }

    #[test]
    fn verify_never_panics_on_claims_near_the_accepted_ones(
        alg in prop::sample::select(vec!["RS256", "ES256", "EdDSA", "PS384", "ES384", "none"]),
        kid in prop::option::of(prop::sample::select(vec!["rsa-a", "rsa-b", "ec-p256", "ec-p384", "ed25519", "x"])),
        iss in json_value(),
        aud in json_value(),
        exp in json_value(),
        nbf in json_value(),
        scope in json_value(),
        sig in prop::collection::vec(any::<u8>(), 0..520),
    ) {
        let mut header = json!({"alg": alg});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": if iss.is_null() { json!("https://auth.example.com") } else { iss },
            "aud": if aud.is_null() { json!("https://mcp.example.com/mcp") } else { aud },
            "exp": exp, "nbf": nbf, "scope": scope, "iat": NOW,
        });
        let token = format!(
            "{}.{}.{}",
            b64url_encode(header.to_string().as_bytes()),
            b64url_encode(claims.to_string().as_bytes()),
            b64url_encode(&sig)
        );
        verify_everywhere(&token, NOW);
    }

    #[test]
    fn config_from_json_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Config::from_json(&bytes);
    }

    #[test]
    fn config_from_json_never_panics_on_arbitrary_json(v in json_value()) {
        let _ = Config::from_json(v.to_string().as_bytes());
    }

    #[test]
    fn config_from_json_never_panics_when_one_field_is_replaced(
        pointer in prop::sample::select(vec![
            "/resources/0/resource", "/resources/0/authorization_servers/0",
            "/resources/0/scopes_supported", "/resources/0/required_scopes/0",
            "/resources/0/audiences", "/resources/0/resource_name", "/resources/0/resource_documentation",
            "/resources/1/resource", "/issuers/0/issuer", "/issuers/0/jwks", "/issuers/0/jwks/keys/0",
            "/issuers/0/jwks/keys/0/n", "/issuers/0/algorithms", "/issuers/1/algorithms/0",
            "/issuers/1/jwks_uri", "/issuers/1/cluster", "/issuers/1/jwks_cache_seconds",
            "/clock_skew_seconds", "/max_token_bytes", "/token_cache_size", "/forward_authorization",
            "/claims_to_headers", "/claims_to_headers/X-MCP-Subject", "/extra",
        ]),
        new in prop_oneof![json_value(), ".{0,40}".prop_map(Value::String), "https?://[a-z.]{0,10}(:[0-9]{1,6})?(/[a-z%.]{0,5}){0,3}".prop_map(Value::String)],
    ) {
        let mut v = base_config_json();
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        match v.pointer_mut(parent) {
            Some(Value::Object(m)) => { m.insert(last.to_string(), new); }
            Some(Value::Array(a)) => { a[last.parse::<usize>().unwrap()] = new; }
            _ => {}
        }
        if let Ok(c) = Config::from_json(v.to_string().as_bytes()) {
            let ring = KeyRing::new(&c);
            for r in &c.resources {
                let _ = mcp_oauth_filter::route::route(&c, &r.metadata_path, "mcp.example.com");
                let _ = verify("a.b.c", r, &c, &ring, None, NOW);
            }
        }
    }

    #[test]
    fn key_sets_never_panic_on_arbitrary_json(v in json_value()) {
        let _ = parse_jwk(&v);
        let _ = KeySet::from_jwks(&v);
        let _ = KeySet::from_jwks(&json!({"keys": [v]}));
    }

    #[test]
    fn key_sets_never_panic_on_jwk_shaped_objects(jwk in jwk_like()) {
        let _ = parse_jwk(&jwk);
        let doc = json!({"keys": [jwk]});
        let _ = KeySet::from_jwks(&doc);
        let _ = read_jwks(200, doc.to_string().as_bytes());
    }

    #[test]
    fn remote_readers_never_panic(status in any::<u16>(), body in jsonish_bytes(), cc in prop::option::of(".{0,40}")) {
        let _ = read_jwks(status, &body);
        let _ = max_age(cc.as_deref());
    }

    #[test]
    fn max_age_reads_what_it_is_given(age in any::<u64>(), other in "[a-z-]{1,10}") {
        prop_assume!(other != "no-store" && other != "no-cache" && other != "max-age");
        prop_assert_eq!(max_age(Some(&format!("{other}, max-age={age}"))), Some(age));
        prop_assert_eq!(max_age(Some(&format!("max-age=\"{age}\", {other}"))), Some(age));
        prop_assert_eq!(max_age(Some(&format!("max-age={age}, no-store"))), Some(0));
    }

    #[test]
    fn normal_form_keeps_its_promises_for_arbitrary_strings(raw in ".*") {
        check_normal_form(&raw)?;
    }

    #[test]
    fn normal_form_keeps_its_promises_for_path_like_strings(
        raw in "(/|\\\\|\\.|%|2|e|E|f|F|5|c|C|a|~|%2[eEfF]|%5[cC]|%41|%7[eE]|\\?|#|é){0,24}",
    ) {
        check_normal_form(&raw)?;
    }

    #[test]
    fn extract_never_panics_and_returns_a_piece_of_the_header(
        values in prop::collection::vec(prop_oneof![".{0,30}", "(?i:bearer)[ \t]{0,3}[A-Za-z0-9._~+/=, -]{0,20}"], 0..3),
        query in prop::option::of("[a-z_%5F=&]{0,30}"),
    ) {
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        if let Credential::Bearer(token) = extract(&refs, query.as_deref()) {
            prop_assert_eq!(refs.len(), 1);
            prop_assert!(!token.is_empty() && !token.contains(',') && refs[0].contains(token));
        }
    }

    #[test]
    fn challenges_parse_back_to_exactly_what_was_put_in(
        url in "https://[a-z]{1,8}\\.example(:[0-9]{2,5})?/\\.well-known/oauth-protected-resource(/[!-~]{0,12})?",
        description in "[^\\p{Cc}]{0,40}",
        required in prop::collection::vec(scope_token(), 0..4),
        needed in prop::collection::vec(scope_token(), 1..4),
    ) {
        let c = ResourceChallenge::new(&url, &required);
        let rm = ("resource_metadata".to_string(), url.clone());
        let scope = |s: &[String]| ("scope".to_string(), s.join(" "));
        let err = |code: &str| ("error".to_string(), code.to_string());
        let desc = ("error_description".to_string(), description.clone());

        let mut want = vec![rm.clone()];
        if !required.is_empty() {
            want.push(scope(&required));
        }
        prop_assert_eq!(sorted(parse_bearer(c.missing()).unwrap()), sorted(want));

        let got = parse_bearer(&c.with_error(ErrorCode::InvalidRequest, &description, &[])).unwrap();
        prop_assert_eq!(sorted(got), sorted(vec![err("invalid_request"), desc.clone(), rm.clone()]));

        let got = parse_bearer(&c.with_error(ErrorCode::InvalidToken, &description, &[])).unwrap();
        let mut want = vec![err("invalid_token"), desc.clone(), rm.clone()];
        if !required.is_empty() {
            want.push(scope(&required));
        }
        prop_assert_eq!(sorted(got), sorted(want));

        let needed_refs: Vec<&str> = needed.iter().map(String::as_str).collect();
        let header = c.with_error(ErrorCode::InsufficientScope, &description, &needed_refs);
        let got = parse_bearer(&header).unwrap();
        prop_assert_eq!(&got[0], &err("insufficient_scope"));
        prop_assert_eq!(sorted(got), sorted(vec![err("insufficient_scope"), scope(&needed), rm, desc]));
    }
}

/// Regression (found by these properties): an empty or all-zero RSA modulus once overflowed the
/// bit-length computation. A JWKS is remote input, so it must be a plain refusal.
#[test]
fn rsa_jwk_with_an_empty_or_zero_modulus_is_refused() {
    for n in ["", "AA", "AAAA"] {
        let jwk = json!({"kty": "RSA", "n": n, "e": "AQAB"});
        let outcome = std::panic::catch_unwind(|| parse_jwk(&jwk));
        assert!(
            matches!(outcome, Ok(mcp_oauth_filter::keys::JwkOutcome::Skipped(_))),
            "n = {n:?}: {outcome:?}"
        );
    }
}

/// Regression (found by `fuzz/`, target `paths`): looking for a Bearer credential joined after
/// another scheme once sliced `part[..6]`, which panicked when byte 6 fell inside a multi-byte
/// character: `Authorization: Basic x, abcdeé` would have killed the worker's VM.
#[test]
fn a_joined_credential_with_multibyte_text_is_not_a_panic() {
    for value in [
        "Basic x, abcde\u{e9}",
        "Basic x, Beare\u{e9}",
        "a,\u{e9}\u{e9}\u{e9}\u{e9}",
    ] {
        let outcome = std::panic::catch_unwind(|| extract(&[value], None));
        assert!(outcome.is_ok(), "{value:?}");
    }
}

/// Regression: `%+2` was once read as the escape `%02` (`u8::from_str_radix` accepts a leading
/// `+`); a broken escape must make the path `Ambiguous` (README, Which requests are checked).
#[test]
fn a_percent_not_followed_by_two_hex_digits_is_ambiguous() {
    for raw in ["/mcp%+2x", "/%+0/../mcp", "/a%+f"] {
        assert!(
            matches!(normalize(raw), Normalized::Ambiguous(_)),
            "{raw}: {:?}",
            normalize(raw)
        );
    }
}

/// Regression: an `insufficient_scope` challenge with no needed scopes once rendered an empty
/// list element (`Bearer error="insufficient_scope", , resource_metadata=...`).
#[test]
fn insufficient_scope_without_scopes_is_a_clean_parameter_list() {
    let c = ResourceChallenge::new("https://h/.well-known/oauth-protected-resource", &[]);
    let header = c.with_error(ErrorCode::InsufficientScope, "d", &[]);
    assert!(parse_bearer(&header).is_ok(), "{header}");
}
