//! A token that passed verification, as every later step sees it (scope checks, header edits,
//! the verified-token cache): what its signature vouched for, distilled once (RFC 9068 §2.2
//! claims, RFC 8693 §4.2 scopes), small enough to share between requests.

use crate::alg::Alg;
use crate::config::IssuerId;
use std::ops::Deref;
use std::rc::Rc;

/// What a verified signature vouches for, distilled once and shared by every request that
/// presents the same token (`cache`): only what later checks and header edits read, so a
/// cache entry stays small.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed {
    /// The JWS algorithm; `None` for a token an introspection answer vouched for.
    pub alg: Option<Alg>,
    pub issuer: IssuerId,
    /// Fingerprint of the key that verified the signature.
    pub key: u64,
    pub exp: f64,
    pub facts: Facts,
    /// Granted scopes with everything `scope_implies` adds.
    pub scopes: Vec<String>,
    /// The value of each `claims_to_headers` entry, in configuration order.
    pub header_values: Vec<Option<String>>,
}

/// The claims checked on every request, read from the token once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    pub iss: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
}

/// A token that passed every check for a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken(pub Rc<Signed>);

impl Deref for VerifiedToken {
    type Target = Signed;

    fn deref(&self) -> &Signed {
        &self.0
    }
}
