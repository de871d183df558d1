//! Every response the filter makes itself, built in one place: the RFC 9728 metadata document
//! and its 404/405, CORS preflight answers (README, "CORS"), the RFC 6750 §3 challenges with
//! their JSON error bodies, and the refusals that are not about a token (413, 421, 408, 503).
//! Each carries the [`Outcome`] it is counted as.

use crate::challenge::{error_body, ErrorCode};
use crate::config::{Config, ProtectedResource};
use crate::cors;
use crate::reason::{Outcome, Reason};
use crate::token::Audit;
use std::borrow::Cow;

/// A response the filter makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'c> {
    pub status: u16,
    pub headers: Vec<(&'static str, Cow<'c, str>)>,
    pub body: Cow<'c, str>,
    pub outcome: Outcome,
    /// Tools whose scopes the token lacked (for per-tool counters).
    pub denied_tools: Vec<String>,
    /// Who the request's verified token names, and the tools it called (a 403 for scopes).
    pub audit: Option<Audit>,
}

impl Response<'_> {
    /// The value of the header `name` (lower case), if it is set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// `GET`/`HEAD` on a metadata path: the document (RFC 9728 §3.2), or 404 when the path names
/// none for this authority; other methods 405.
pub fn metadata<'c>(
    found: Option<&'c ProtectedResource>,
    method: &str,
    origin: Option<&str>,
) -> Response<'c> {
    let (status, body, outcome, extra): (u16, Cow<'c, str>, Outcome, _) = match (method, found) {
        ("GET" | "HEAD", Some(resource)) => (
            200,
            resource.metadata_body.as_str().into(),
            Outcome::MetadataServed,
            ("cache-control", "public, max-age=3600"),
        ),
        ("GET" | "HEAD", None) => (
            404,
            error_body("not_found", "no protected resource metadata for this host").into(),
            Outcome::MetadataNotFound,
            ("cache-control", "no-store"),
        ),
        _ => (
            405,
            error_body("method_not_allowed", "metadata supports GET and HEAD").into(),
            Outcome::MethodNotAllowed,
            ("allow", "GET, HEAD, OPTIONS"),
        ),
    };
    let headers = vec![
        ("content-type", "application/json".into()),
        (extra.0, extra.1.into()),
    ];
    metadata_answer(status, headers, body, outcome, origin)
}

/// A metadata answer (the resource's, or an authorization server's at its origin): readable
/// from any origin, like the document itself.
fn metadata_answer<'c>(
    status: u16,
    mut headers: Vec<(&'static str, Cow<'c, str>)>,
    body: Cow<'c, str>,
    outcome: Outcome,
    origin: Option<&str>,
) -> Response<'c> {
    headers.push(("access-control-allow-origin", "*".into()));
    Response {
        status,
        headers: with_cors(headers, origin),
        body,
        outcome,
        denied_tools: Vec::new(),
        audit: None,
    }
}

/// The first authorization server's RFC 8414 metadata, answered at a resource's origin for
/// clients of MCP 2025-03-26: `document` is its bytes as fetched and their remaining
/// lifetime, `None` before the first successful fetch (503). CORS as for the resource's own
/// metadata.
pub fn as_metadata<'c>(
    document: Option<(String, u64)>,
    method: &str,
    origin: Option<&str>,
) -> Response<'c> {
    let mut headers: Vec<(&'static str, Cow<'c, str>)> =
        vec![("content-type", "application/json".into())];
    let (status, body, outcome): (u16, Cow<'c, str>, Outcome) = match (method, document) {
        ("GET" | "HEAD", Some((body, max_age))) => {
            headers.push(("cache-control", format!("public, max-age={max_age}").into()));
            (200, body.into(), Outcome::AsMetadataServed)
        }
        ("GET" | "HEAD", None) => {
            headers.push(("retry-after", "5".into()));
            headers.push(("cache-control", "no-store".into()));
            let body = error_body(
                "temporarily_unavailable",
                "authorization server metadata not fetched yet",
            );
            (503, body.into(), Outcome::AsMetadataUnavailable)
        }
        _ => {
            headers.push(("allow", "GET, HEAD, OPTIONS".into()));
            let body = error_body("method_not_allowed", "metadata supports GET and HEAD");
            (405, body.into(), Outcome::MethodNotAllowed)
        }
    };
    metadata_answer(status, headers, body, outcome, origin)
}

/// A CORS preflight on one of our paths: 204, never a challenge (Fetch §4.8: a preflight
/// carries no credentials).
pub fn preflight<'c>() -> Response<'c> {
    Response {
        status: 204,
        headers: cors::preflight_headers()
            .into_iter()
            .map(|(n, v)| (n, v.into()))
            .collect(),
        body: "".into(),
        outcome: Outcome::Preflight,
        denied_tools: Vec::new(),
        audit: None,
    }
}

/// No credentials, or another scheme: the MCP challenge, pre-rendered at configuration.
pub fn missing_token<'c>(resource: &'c ProtectedResource, origin: Option<&str>) -> Response<'c> {
    let headers = vec![
        ("content-type", "application/json".into()),
        ("www-authenticate", resource.challenge.missing().into()),
        ("cache-control", "no-store".into()),
    ];
    Response {
        status: 401,
        headers: with_cors(headers, origin),
        body: resource.challenge.missing_body().into(),
        outcome: Outcome::Denied(Reason::MissingToken),
        denied_tools: Vec::new(),
        audit: None,
    }
}

/// A denial with an RFC 6750 error code: 400, 401 or 403 and its challenge. `needed` is the
/// scope set of a 403 (every scope the operation needs).
pub fn denial<'c>(
    resource: &'c ProtectedResource,
    origin: Option<&str>,
    code: ErrorCode,
    reason: Reason,
    description: &str,
    needed: &[&str],
) -> Response<'c> {
    let challenge = resource.challenge.with_error(code, description, needed);
    let headers = vec![
        ("content-type", "application/json".into()),
        ("www-authenticate", challenge.into()),
        ("cache-control", "no-store".into()),
    ];
    Response {
        status: code.status(),
        headers: with_cors(headers, origin),
        body: error_body(code.as_str(), description).into(),
        outcome: Outcome::Denied(reason),
        denied_tools: Vec::new(),
        audit: None,
    }
}

/// A body over `max_body_bytes`: refused rather than let through unchecked.
pub fn body_too_large<'c>(config: &Config, origin: Option<&str>) -> Response<'c> {
    let description = format!("request body larger than {} bytes", config.max_body_bytes);
    plain(
        413,
        ErrorCode::InvalidRequest.as_str(),
        &description,
        Reason::BodyTooLarge,
        origin,
        None,
    )
}

/// Several resources share the path and the `:authority` names none of them (RFC 9110
/// §15.5.20): no token is accepted for a tenant the upstream may not route the request to.
pub fn misdirected<'c>(origin: Option<&str>) -> Response<'c> {
    plain(
        421,
        "misdirected_request",
        "the request's authority names none of the resources served at this path",
        Reason::MisdirectedRequest,
        origin,
        None,
    )
}

/// Held for the issuer's first key set (or a refetch) past the wait: 503, try again.
pub fn keys_unavailable<'c>(origin: Option<&str>) -> Response<'c> {
    plain(
        503,
        "temporarily_unavailable",
        "signing keys not available yet",
        Reason::KeysUnavailable,
        origin,
        Some("5"),
    )
}

/// An introspection the request needs cannot be had now: the endpoint failed, or too many
/// calls are outstanding (RFC 7662 §2.3: never an answer on the token's behalf).
pub fn introspection_unavailable<'c>(reason: Reason, origin: Option<&str>) -> Response<'c> {
    let description = match reason {
        Reason::IntrospectionBusy => "too many token introspections in progress",
        _ => "token introspection not available",
    };
    plain(
        503,
        "temporarily_unavailable",
        description,
        reason,
        origin,
        Some("5"),
    )
}

/// Headers held for a body that never came: the host does not deliver bodies to a filter that
/// holds the headers (README, Troubleshooting), or the client sent none in time.
pub fn body_not_delivered<'c>(origin: Option<&str>) -> Response<'c> {
    plain(
        503,
        "temporarily_unavailable",
        "request body not received while the headers were held",
        Reason::BodyNotDelivered,
        origin,
        None,
    )
}

/// Part of the body came, but not all of it within `body_wait_ms`.
pub fn body_incomplete<'c>(config: &Config, origin: Option<&str>) -> Response<'c> {
    let description = format!(
        "request body not complete within {} ms",
        config.body_wait_ms
    );
    plain(
        408,
        ErrorCode::InvalidRequest.as_str(),
        &description,
        Reason::BodyIncomplete,
        origin,
        None,
    )
}

/// A JSON error without a challenge: the refusal is not about the token.
fn plain<'c>(
    status: u16,
    error: &str,
    description: &str,
    reason: Reason,
    origin: Option<&str>,
    retry_after: Option<&'static str>,
) -> Response<'c> {
    let mut headers = vec![("content-type", "application/json".into())];
    if let Some(seconds) = retry_after {
        headers.push(("retry-after", seconds.into()));
    }
    headers.push(("cache-control", "no-store".into()));
    Response {
        status,
        headers: with_cors(headers, origin),
        body: error_body(error, description).into(),
        outcome: Outcome::Denied(reason),
        denied_tools: Vec::new(),
        audit: None,
    }
}

/// An `Origin` outside `allowed_origins` (MCP 2026-07-28 transport security: DNS
/// rebinding): 403 without CORS headers, so the page that sent it reads nothing.
pub fn origin_not_allowed<'c>() -> Response<'c> {
    plain(
        403,
        "forbidden",
        "requests from this origin are not allowed",
        Reason::OriginNotAllowed,
        None,
        None,
    )
}

/// With `allowed_origins` set, a response to an allowed origin names it rather than `*`,
/// and says it varies by origin (Fetch §3.2.5).
pub fn name_origin(r: &mut Response<'_>, origin: &str) {
    let mut named = false;
    for (name, value) in &mut r.headers {
        if *name == "access-control-allow-origin" {
            *value = origin.to_string().into();
            named = true;
        }
    }
    if named {
        r.headers.push(("vary", "Origin".into()));
    }
}

/// Adds what a browser needs to read the answer, when the request had an `Origin`.
fn with_cors<'c>(
    mut headers: Vec<(&'static str, Cow<'c, str>)>,
    origin: Option<&str>,
) -> Vec<(&'static str, Cow<'c, str>)> {
    if origin.is_some() {
        for (name, value) in cors::response_headers() {
            if !headers.iter().any(|(n, _)| *n == name) {
                headers.push((name, value.into()));
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::base;
    use serde_json::Value;

    fn error_of(r: &Response<'_>) -> (String, String) {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        (
            body["error"].as_str().unwrap().to_string(),
            body["error_description"].as_str().unwrap().to_string(),
        )
    }

    #[test]
    fn keys_unavailable_is_a_503_a_browser_can_read() {
        let plain = keys_unavailable(None);
        assert_eq!(plain.status, 503);
        assert_eq!(plain.header("retry-after"), Some("5"));
        assert_eq!(plain.header("access-control-allow-origin"), None);
        assert_eq!(plain.outcome, Outcome::Denied(Reason::KeysUnavailable));
        assert_eq!(error_of(&plain).0, "temporarily_unavailable");
        let cors = keys_unavailable(Some("https://app.example"));
        assert_eq!(cors.header("access-control-allow-origin"), Some("*"));
        assert_eq!(
            cors.header("access-control-expose-headers"),
            Some("www-authenticate")
        );
    }

    #[test]
    fn refusals_that_are_not_about_the_token_carry_no_challenge() {
        let c = base();
        for (r, status, reason) in [
            (misdirected(None), 421, Reason::MisdirectedRequest),
            (body_too_large(&c, None), 413, Reason::BodyTooLarge),
            (body_not_delivered(None), 503, Reason::BodyNotDelivered),
            (body_incomplete(&c, None), 408, Reason::BodyIncomplete),
        ] {
            assert_eq!((r.status, r.outcome), (status, Outcome::Denied(reason)));
            assert_eq!(r.header("www-authenticate"), None);
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("cache-control"), Some("no-store"));
            assert!(!error_of(&r).1.is_empty());
        }
        assert!(error_of(&body_incomplete(&c, None)).1.contains("10000 ms"));
    }
}
