//! Signature checks the host can do natively. Envoy offers a `verify_signature` foreign
//! function (BoringSSL, `EVP_DigestVerify`); an RS256 check there costs a tenth of `ring`
//! compiled to wasm, which is what a cache miss or a forged token costs us (see README,
//! design notes). This module builds its request and reads its answer; the glue only moves
//! the bytes. Whatever the host cannot answer, `ring` checks in the VM: the host is a faster
//! path to the same verdict, never a second opinion that could let a token through.
//!
//! Only RSASSA-PKCS1-v1_5 (RS256/384/512) and ECDSA (ES256/384) go to the host: its call
//! sets no padding (PKCS#1 v1.5 is BoringSSL's default, so PS* cannot be asked) and always
//! passes a digest (Ed25519 takes none).

use crate::alg::Alg;
use crate::keys::VerifyingKey;
use der::asn1::{SequenceOf, UintRef};
use der::Encode;
use prost::Message;

/// The name Envoy registers its function under.
pub const FUNCTION: &str = "verify_signature";

/// Moves one encoded request to the host and back.
pub trait HostVerify {
    /// The host's encoded answer, or `None` when it gave none (function missing, refused).
    fn call(&self, request: &[u8]) -> Option<Vec<u8>>;
}

/// Envoy's `VerifySignatureArguments` (source/extensions/common/wasm/ext/verify_signature.proto).
#[derive(Clone, PartialEq, Message)]
struct VerifySignatureArguments {
    #[prost(string, tag = "1")]
    hash_function: String,
    /// DER SubjectPublicKeyInfo.
    #[prost(bytes = "vec", tag = "2")]
    public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    signature: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    text: Vec<u8>,
}

/// Envoy's `VerifySignatureResult`.
#[derive(Clone, PartialEq, Message)]
struct VerifySignatureResult {
    #[prost(bool, tag = "1")]
    result: bool,
    #[prost(string, tag = "2")]
    error: String,
}

/// The failure Envoy reports when the check ran and the signature does not match; any other
/// failure (a key or digest it could not set up) is not a verdict on the token.
const MISMATCH: &str = "Failed to verify digest";

/// A JWS ECDSA signature (`r || s`, RFC 7518 §3.4) as the DER `Ecdsa-Sig-Value` BoringSSL
/// reads (RFC 3279 §2.2.3). `None` when it is not exactly two `width`-byte integers.
pub fn ecdsa_der(sig: &[u8], width: usize) -> Option<Vec<u8>> {
    if sig.len() != 2 * width {
        return None;
    }
    let (r, s) = sig.split_at(width);
    let mut pair = SequenceOf::<UintRef<'_>, 2>::new();
    pair.add(UintRef::new(r).ok()?).ok()?;
    pair.add(UintRef::new(s).ok()?).ok()?;
    pair.to_der().ok()
}

/// The encoded request for checking `sig` over `text` with `key`, or `None` when the host is
/// not asked about this key and algorithm.
pub fn request(key: &VerifyingKey, alg: Alg, text: &[u8], sig: &[u8]) -> Option<Vec<u8>> {
    if key.public_key_der.is_empty() || !key.accepts(alg) {
        return None;
    }
    // ECDSA signatures go as DER, of the curve's width; PKCS#1 ones as they are.
    let (hash, ecdsa_width) = match alg {
        Alg::Rs256 => ("sha256", None),
        Alg::Rs384 => ("sha384", None),
        Alg::Rs512 => ("sha512", None),
        Alg::Es256 => ("sha256", Some(32)),
        Alg::Es384 => ("sha384", Some(48)),
        Alg::Ps256 | Alg::Ps384 | Alg::Ps512 | Alg::EdDsa => return None,
    };
    let signature = match ecdsa_width {
        Some(width) => ecdsa_der(sig, width)?,
        None => sig.to_vec(),
    };
    Some(
        VerifySignatureArguments {
            hash_function: hash.into(),
            public_key: key.public_key_der.clone(),
            signature,
            text: text.to_vec(),
        }
        .encode_to_vec(),
    )
}

/// The verdict in the host's answer: `Some(valid)` when the check ran, `None` when the
/// answer is unreadable or the host failed before checking.
pub fn verdict(answer: &[u8]) -> Option<bool> {
    let answer = VerifySignatureResult::decode(answer).ok()?;
    if answer.result {
        Some(true)
    } else {
        answer.error.starts_with(MISMATCH).then_some(false)
    }
}

/// Which backend decided a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Host,
    Wasm,
}

/// Checks a JWS signature: by the host when it can answer, else by `ring` in the VM.
pub fn check(
    key: &VerifyingKey,
    alg: Alg,
    text: &[u8],
    sig: &[u8],
    host: Option<&dyn HostVerify>,
) -> (bool, Backend) {
    let native = host.and_then(|host| {
        let answer = host.call(&request(key, alg, text, sig)?)?;
        verdict(&answer)
    });
    match native {
        Some(valid) => (valid, Backend::Host),
        None => (key.verify(alg, text, sig), Backend::Wasm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{parse_jwk, JwkOutcome};
    use serde_json::json;

    fn key(jwk: serde_json::Value) -> VerifyingKey {
        match parse_jwk(&jwk) {
            JwkOutcome::Usable(k) => k,
            other => panic!("{other:?}"),
        }
    }

    /// RFC 7515 A.2's RSA key and A.3's P-256 key.
    fn rsa() -> VerifyingKey {
        key(json!({"kty":"RSA",
            "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
            "e":"AQAB"}))
    }

    fn p256() -> VerifyingKey {
        key(json!({"kty":"EC","crv":"P-256",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tO57FfS6kfNsoO9dkNr0LLCAZhx0"}))
    }

    /// The SubjectPublicKeyInfo prefix for a 2048-bit RSA key and the P-256 one, as
    /// `openssl` writes them.
    #[test]
    fn public_keys_are_standard_subject_public_key_infos() {
        let der = rsa().public_key_der;
        assert_eq!(der.len(), 294);
        assert_eq!(
            der[..33],
            [
                0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
                0x01, 0x01, 0x01, 0x05, 0x00, 0x03, 0x82, 0x01, 0x0f, 0x00, 0x30, 0x82, 0x01, 0x0a,
                0x02, 0x82, 0x01, 0x01, 0x00
            ]
        );
        assert_eq!(der[der.len() - 5..], [0x02, 0x03, 0x01, 0x00, 0x01]);

        let der = p256().public_key_der;
        assert_eq!(der.len(), 91);
        assert_eq!(
            der[..27],
            [
                0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04
            ]
        );
        let ed = key(json!({"kty":"OKP","crv":"Ed25519",
            "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}));
        assert!(ed.public_key_der.is_empty());
    }

    #[test]
    fn ecdsa_signatures_become_minimal_der_integers() {
        let mut sig = [0u8; 64];
        sig[0] = 0x80; // r needs a leading zero to stay positive
        sig[63] = 0x01; // s is 1: all leading zeros go
        let der = ecdsa_der(&sig, 32).unwrap();
        assert_eq!(der[..5], [0x30, 0x26, 0x02, 0x21, 0x00]);
        assert_eq!(der[der.len() - 3..], [0x02, 0x01, 0x01]);
        assert_eq!(ecdsa_der(&sig[..63], 32), None);
        assert_eq!(ecdsa_der(&[0u8; 96], 32), None);
    }

    #[test]
    fn only_pkcs1_and_ecdsa_go_to_the_host() {
        let text = b"header.payload";
        let rsa = rsa();
        let req = request(&rsa, Alg::Rs384, text, &[7; 256]).unwrap();
        let args = VerifySignatureArguments::decode(req.as_slice()).unwrap();
        assert_eq!(args.hash_function, "sha384");
        assert_eq!(args.public_key, rsa.public_key_der);
        assert_eq!(args.signature, [7; 256]);
        assert_eq!(args.text, text);
        assert_eq!(request(&rsa, Alg::Ps256, text, &[7; 256]), None);
        assert_eq!(request(&rsa, Alg::Es256, text, &[7; 64]), None);
        let req = request(&p256(), Alg::Es256, text, &[1; 64]).unwrap();
        let args = VerifySignatureArguments::decode(req.as_slice()).unwrap();
        assert_eq!(args.hash_function, "sha256");
        assert_eq!(args.signature[0], 0x30);
        assert_eq!(request(&p256(), Alg::Es256, text, &[1; 63]), None);
    }

    fn answer(result: bool, error: &str) -> Vec<u8> {
        VerifySignatureResult {
            result,
            error: error.into(),
        }
        .encode_to_vec()
    }

    #[test]
    fn only_a_completed_check_is_a_verdict() {
        assert_eq!(verdict(&answer(true, "")), Some(true));
        assert_eq!(
            verdict(&answer(false, "Failed to verify digest. Error code: 0")),
            Some(false)
        );
        assert_eq!(
            verdict(&answer(false, "Failed to initialize digest verify.")),
            None
        );
        assert_eq!(verdict(&answer(false, "sha256 is not supported.")), None);
        assert_eq!(verdict(&[0xff]), None);
        assert_eq!(
            verdict(&[]),
            None,
            "an empty answer is result=false, no error"
        );
    }

    /// A host that answers with a fixed verdict, remembering whether it was asked.
    struct Fixed(Option<Vec<u8>>, std::cell::Cell<bool>);

    impl HostVerify for Fixed {
        fn call(&self, _request: &[u8]) -> Option<Vec<u8>> {
            self.1.set(true);
            self.0.clone()
        }
    }

    #[test]
    fn the_host_decides_when_it_answers_and_ring_otherwise() {
        let rsa = rsa();
        let text = b"eyJhbGciOiJSUzI1NiJ9.e30";
        let says_valid = Fixed(Some(answer(true, "")), Default::default());
        assert_eq!(
            check(&rsa, Alg::Rs256, text, &[0; 256], Some(&says_valid)),
            (true, Backend::Host)
        );
        let silent = Fixed(None, Default::default());
        assert_eq!(
            check(&rsa, Alg::Rs256, text, &[0; 256], Some(&silent)),
            (false, Backend::Wasm)
        );
        let failed = Fixed(
            Some(answer(false, "Failed to initialize")),
            Default::default(),
        );
        assert_eq!(
            check(&rsa, Alg::Rs256, text, &[0; 256], Some(&failed)),
            (false, Backend::Wasm)
        );
        let unasked = Fixed(Some(answer(true, "")), Default::default());
        assert_eq!(
            check(&rsa, Alg::Ps256, text, &[0; 256], Some(&unasked)),
            (false, Backend::Wasm)
        );
        assert!(!unasked.1.get(), "PS256 never goes to the host");
        assert_eq!(
            check(&rsa, Alg::Rs256, text, &[0; 256], None),
            (false, Backend::Wasm)
        );
    }
}
