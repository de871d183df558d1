//! JWS signature algorithms we verify (RFC 7518 §3, RFC 8037 for EdDSA) and the per-issuer
//! allow-list. `none` and the HMAC family are never accepted: our keys are public keys, and
//! accepting HS* with a public key as the secret is the classic algorithm-confusion forgery
//! (RFC 8725 §2.1, §3.1).

use std::fmt;

/// An asymmetric JWS algorithm this filter can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

/// Why an `alg` name is not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlgRejection {
    /// `none` or HMAC: never accepted with public keys.
    Forbidden,
    /// A name we do not implement (ES512, RSA-OAEP, a typo, ...).
    Unsupported,
}

impl Alg {
    pub const ALL: [Alg; 9] = [
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::Es384,
        Alg::EdDsa,
    ];

    /// Parses a JWA `alg` value. Names are case-sensitive (RFC 7515 §4.1.1), but every case
    /// variant of `none` and `HS*` is reported as forbidden so logs say what was attempted.
    pub fn parse(name: &str) -> Result<Alg, AlgRejection> {
        Ok(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            other => {
                let lower = other.to_ascii_lowercase();
                return Err(if lower == "none" || lower.starts_with("hs") {
                    AlgRejection::Forbidden
                } else {
                    AlgRejection::Unsupported
                });
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of algorithms, as a bit mask: checked on every request, so it must be cheap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlgSet(u16);

impl AlgSet {
    pub fn all() -> AlgSet {
        AlgSet(Alg::ALL.iter().fold(0, |m, a| m | a.bit()))
    }

    pub fn empty() -> AlgSet {
        AlgSet(0)
    }

    pub fn insert(&mut self, alg: Alg) {
        self.0 |= alg.bit();
    }

    pub fn contains(self, alg: Alg) -> bool {
        self.0 & alg.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Alg> {
        Alg::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_name_and_round_trips() {
        for alg in Alg::ALL {
            assert_eq!(Alg::parse(alg.name()), Ok(alg));
        }
    }

    #[test]
    fn reports_none_and_hmac_in_any_case_as_forbidden() {
        for name in ["none", "None", "NONE", "HS256", "hs384", "HS512"] {
            assert_eq!(Alg::parse(name), Err(AlgRejection::Forbidden), "{name}");
        }
    }

    #[test]
    fn treats_unknown_or_wrong_case_names_as_unsupported() {
        for name in ["ES512", "rs256", "RSA-OAEP", "", "Ed25519"] {
            assert_eq!(Alg::parse(name), Err(AlgRejection::Unsupported), "{name}");
        }
    }

    #[test]
    fn alg_set_holds_exactly_what_was_inserted() {
        let mut set = AlgSet::empty();
        set.insert(Alg::Es256);
        set.insert(Alg::EdDsa);
        assert!(set.contains(Alg::Es256) && set.contains(Alg::EdDsa));
        assert!(!set.contains(Alg::Rs256));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![Alg::Es256, Alg::EdDsa]);
        assert_eq!(AlgSet::all().iter().count(), 9);
    }
}
