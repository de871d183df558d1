//! Strict decoding of the JOSE pieces: base64url without padding or stray characters
//! (RFC 7515 §2, §C) and JSON objects that refuse duplicate member names (RFC 7515 §5.2 and
//! RFC 8725 §3.x: a parser that keeps "the last `aud`" lets two verifiers disagree on one token).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// base64url, no padding accepted, non-canonical trailing bits refused.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

pub fn b64url_decode(input: &str) -> Option<Vec<u8>> {
    B64URL.decode(input).ok()
}

pub fn b64url_encode(input: &[u8]) -> String {
    B64URL.encode(input)
}

/// A JSON object whose member names are unique.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StrictObject(pub Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = StrictObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value: Value = access.next_value()?;
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate member {key:?}"
                        )));
                    }
                    map.insert(key, value);
                }
                Ok(StrictObject(map))
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Why a JOSE segment did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentError {
    Base64,
    NotObject,
    DuplicateMember,
}

/// Decodes one base64url segment holding a JSON object with unique member names.
pub fn decode_object(segment: &str) -> Result<Map<String, Value>, SegmentError> {
    let bytes = b64url_decode(segment).ok_or(SegmentError::Base64)?;
    parse_object(&bytes)
}

pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, SegmentError> {
    match serde_json::from_slice::<StrictObject>(bytes) {
        Ok(StrictObject(map)) => Ok(map),
        Err(e) if e.to_string().starts_with("duplicate member") => {
            Err(SegmentError::DuplicateMember)
        }
        Err(_) => Err(SegmentError::NotObject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_canonical_base64url_only() {
        assert_eq!(b64url_decode("aGk").unwrap(), b"hi");
        assert!(b64url_decode("aGk=").is_none(), "padding");
        assert!(
            b64url_decode("aGl").is_none(),
            "non-canonical trailing bits"
        );
        assert!(b64url_decode("a+8").is_none(), "standard alphabet");
        assert!(b64url_decode("aG k").is_none(), "whitespace");
        assert_eq!(b64url_encode(b"hi"), "aGk");
    }

    #[test]
    fn refuses_duplicate_member_names() {
        assert_eq!(
            parse_object(br#"{"aud":"a","aud":"b"}"#),
            Err(SegmentError::DuplicateMember)
        );
        assert_eq!(parse_object(br#"{"aud":"a"}"#).unwrap()["aud"], "a");
    }

    #[test]
    fn refuses_values_that_are_not_objects() {
        for text in [&b"[]"[..], b"\"x\"", b"1", b"null", b"{", b"{} x"] {
            assert_eq!(parse_object(text), Err(SegmentError::NotObject));
        }
    }
}
