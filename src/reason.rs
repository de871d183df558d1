//! Why a request was refused, and what the filter did with a request it answered itself: one
//! enum each, with the stable short `code()` that logs, counters
//! (`mcp_oauth_requests_denied_<code>`, README "What the operator sees") and the command line
//! share. Nothing anywhere matches these strings to recover a meaning.

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// No credentials, or a scheme other than Bearer (RFC 6750 §3.1: no `error`).
    MissingToken,
    /// A broken Bearer credential, several credentials, or a token in the query.
    InvalidRequest,
    /// A path upstreams could read in more than one way.
    BadPath,
    /// Several resources share the path and the `:authority` names none of them.
    MisdirectedRequest,
    MalformedToken,
    TokenTooLarge,
    EncryptedToken,
    UnsupportedHeader,
    /// `typ` names another kind of JWT than an access token (RFC 8725 §3.11).
    WrongTokenType,
    AlgNotAllowed,
    AlgKeyMismatch,
    AmbiguousKey,
    IssuerNotAccepted,
    AudienceNotAccepted,
    MissingExp,
    TokenExpired,
    TokenNotYetValid,
    UnknownKid,
    BadSignature,
    InsufficientScope,
    InvalidBody,
    McpHeaderMismatch,
    BodyTooLarge,
    /// Held for the issuer's keys past the wait.
    KeysUnavailable,
    /// Headers held for a body the host never delivered (README, Troubleshooting).
    BodyNotDelivered,
    /// The body did not arrive whole within `body_wait_ms`.
    BodyIncomplete,
    /// No introspection answer said the token is active (RFC 7662 §2.2).
    TokenInactive,
    /// The introspection endpoint failed: unreachable, a timeout, not RFC 7662 (503).
    IntrospectionUnavailable,
    /// `max_in_flight` introspection calls were outstanding on the worker (503).
    IntrospectionBusy,
    /// `allowed_origins` is set and the request's `Origin` is not in it (403).
    OriginNotAllowed,
}

impl Reason {
    /// Every reason, in declaration order (for counters indexed by reason).
    pub const ALL: [Reason; 30] = [
        Reason::MissingToken,
        Reason::InvalidRequest,
        Reason::BadPath,
        Reason::MisdirectedRequest,
        Reason::MalformedToken,
        Reason::TokenTooLarge,
        Reason::EncryptedToken,
        Reason::UnsupportedHeader,
        Reason::WrongTokenType,
        Reason::AlgNotAllowed,
        Reason::AlgKeyMismatch,
        Reason::AmbiguousKey,
        Reason::IssuerNotAccepted,
        Reason::AudienceNotAccepted,
        Reason::MissingExp,
        Reason::TokenExpired,
        Reason::TokenNotYetValid,
        Reason::UnknownKid,
        Reason::BadSignature,
        Reason::InsufficientScope,
        Reason::InvalidBody,
        Reason::McpHeaderMismatch,
        Reason::BodyTooLarge,
        Reason::KeysUnavailable,
        Reason::BodyNotDelivered,
        Reason::BodyIncomplete,
        Reason::TokenInactive,
        Reason::IntrospectionUnavailable,
        Reason::IntrospectionBusy,
        Reason::OriginNotAllowed,
    ];

    /// The stable short code: the counter suffix and the word logs and the CLI print.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::InvalidRequest => "invalid_request",
            Reason::BadPath => "bad_path",
            Reason::MisdirectedRequest => "misdirected_request",
            Reason::MalformedToken => "malformed_token",
            Reason::TokenTooLarge => "token_too_large",
            Reason::EncryptedToken => "encrypted_token",
            Reason::UnsupportedHeader => "unsupported_header",
            Reason::WrongTokenType => "wrong_token_type",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::AlgKeyMismatch => "alg_key_mismatch",
            Reason::AmbiguousKey => "ambiguous_key",
            Reason::IssuerNotAccepted => "issuer_not_accepted",
            Reason::AudienceNotAccepted => "audience_not_accepted",
            Reason::MissingExp => "missing_exp",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::UnknownKid => "unknown_kid",
            Reason::BadSignature => "bad_signature",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::InvalidBody => "invalid_body",
            Reason::McpHeaderMismatch => "mcp_header_mismatch",
            Reason::BodyTooLarge => "body_too_large",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::BodyNotDelivered => "body_not_delivered",
            Reason::BodyIncomplete => "body_incomplete",
            Reason::TokenInactive => "token_inactive",
            Reason::IntrospectionUnavailable => "introspection_unavailable",
            Reason::IntrospectionBusy => "introspection_busy",
            Reason::OriginNotAllowed => "origin_not_allowed",
        }
    }

    /// The reason's place in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What happened to a request the filter answered itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    MetadataServed,
    MetadataNotFound,
    /// An authorization server's metadata answered at a resource's origin.
    AsMetadataServed,
    /// The same, before its first successful fetch (503).
    AsMetadataUnavailable,
    MethodNotAllowed,
    Preflight,
    Denied(Reason),
}

impl Outcome {
    /// The stable short code: `metadata_served`, ..., or the denial's reason code.
    pub fn code(self) -> &'static str {
        match self {
            Outcome::MetadataServed => "metadata_served",
            Outcome::MetadataNotFound => "metadata_not_found",
            Outcome::AsMetadataServed => "as_metadata_served",
            Outcome::AsMetadataUnavailable => "as_metadata_unavailable",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::Preflight => "preflight_answered",
            Outcome::Denied(reason) => reason.code(),
        }
    }

    /// The counter it increments, without the `mcp_oauth_` prefix.
    pub fn counter_name(self) -> String {
        match self {
            Outcome::Denied(reason) => format!("requests_denied_{}", reason.code()),
            other => other.code().to_string(),
        }
    }

    /// The denial's reason, if it is one.
    pub fn reason(self) -> Option<Reason> {
        match self {
            Outcome::Denied(reason) => Some(reason),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_in_order_with_a_distinct_code() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
        let mut codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
        assert!(codes
            .iter()
            .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }

    #[test]
    fn outcomes_name_their_reason() {
        assert_eq!(
            Outcome::Denied(Reason::TokenExpired).code(),
            "token_expired"
        );
        assert_eq!(
            Outcome::Denied(Reason::TokenExpired).reason(),
            Some(Reason::TokenExpired)
        );
        assert_eq!(Outcome::MetadataServed.reason(), None);
        assert_eq!(Outcome::Preflight.code(), "preflight_answered");
    }
}
