//! The one seam per request: a view of the request in, a decision out (SPEC §3-§6). The glue
//! gathers the view, calls [`decide`], and applies the result; nothing here calls the host.

use crate::challenge::{error_body, ErrorCode};
use crate::config::{Config, IssuerId, ProtectedResource};
use crate::cors;
use crate::extract::{self, Credential};
use crate::mcp;
use crate::paths::{self, Normalized};
use crate::verify::{self, AuthError, KeyStore, VerifiedToken};
use std::borrow::Cow;

/// What the filter needs to know about a request.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `:path`, query string included.
    pub path: &'a str,
    pub authority: &'a str,
    /// Every `Authorization` value the request carries.
    pub authorization: Vec<&'a str>,
    pub origin: Option<&'a str>,
    pub access_control_request_method: Option<&'a str>,
    pub mcp_method: Option<&'a str>,
    pub mcp_name: Option<&'a str>,
    pub content_length: Option<&'a str>,
}

/// A response the filter makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'c> {
    pub status: u16,
    pub headers: Vec<(&'static str, Cow<'c, str>)>,
    pub body: Cow<'c, str>,
    pub outcome: Outcome,
    /// Tools whose scopes the token lacked (for per-tool counters).
    pub denied_tools: Vec<String>,
}

/// Forward to the upstream, with these header edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow<'c> {
    pub resource: &'c ProtectedResource,
    /// Remove `Authorization` (unless `forward_authorization`).
    pub strip_authorization: bool,
    /// Claim headers to set (after every configured claim header was removed).
    pub set_headers: Vec<(&'c str, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'c> {
    /// Not a path of ours: forward (client copies of claim headers are still removed).
    PassThrough,
    Allow(Allow<'c>),
    Respond(Response<'c>),
    /// Read the body, then call [`decide_body`]. `edits` are the header edits an allowed
    /// request gets; they do not depend on the body, so they can be applied at once.
    ReadBody {
        check: BodyCheck,
        edits: Allow<'c>,
    },
    /// Hold the request and decide again when the issuer's keys change: they have not loaded
    /// yet, or (`refetch`) the token's `kid` is unknown and a refetch is allowed.
    WaitForKeys {
        issuer: IssuerId,
        refetch: bool,
    },
}

/// A valid token on a request whose body decides (SPEC §9).
#[derive(Debug, Clone, PartialEq)]
pub struct BodyCheck {
    /// Index of the resource in `Config::resources`.
    pub resource: usize,
    pub token: VerifiedToken,
}

/// What happened, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    MetadataServed,
    MetadataNotFound,
    MethodNotAllowed,
    Preflight,
    /// Denied, with the reason's stable code.
    Denied(&'static str),
}

impl Outcome {
    /// The counter this outcome increments (SPEC §8), without the `mcp_oauth_` prefix.
    pub fn metric(&self) -> Cow<'static, str> {
        match self {
            Outcome::MetadataServed => "metadata_served".into(),
            Outcome::MetadataNotFound => "metadata_not_found".into(),
            Outcome::MethodNotAllowed => "method_not_allowed".into(),
            Outcome::Preflight => "preflight_answered".into(),
            Outcome::Denied(code) => format!("requests_denied_{code}").into(),
        }
    }
}

pub const ALLOWED_METRIC: &str = "requests_allowed";

/// Decides what to do with a request at `now` (seconds since the epoch).
pub fn decide<'c>(
    config: &'c Config,
    keys: &dyn KeyStore,
    req: &Request<'_>,
    now: u64,
) -> Decision<'c> {
    let (raw_path, query) = paths::split_query(req.path);
    let normalized = paths::normalize(raw_path);
    let ambiguous = matches!(normalized, Normalized::Ambiguous(_));
    let preflight = cors::is_preflight(req.method, req.origin, req.access_control_request_method);

    if !ambiguous {
        if let Some(found) = config.metadata_for_path(normalized.as_str(), req.authority) {
            return Decision::Respond(metadata_response(found, req, preflight));
        }
    }
    // Fail closed: a path that is protected however an upstream reads it is protected, and
    // one that different upstreams would read as different resources is refused.
    let (resource, split) = match normalized {
        Normalized::Plain(path) => (config.resource_for_path(path, req.authority), false),
        _ => {
            let readings = paths::partial_readings(raw_path);
            let mut found = [normalized.as_str(), raw_path]
                .into_iter()
                .chain(readings.iter().map(String::as_str))
                .filter_map(|reading| config.resource_for_path(reading, req.authority));
            let first = found.next();
            let split = first.is_some_and(|f| found.any(|r| !std::ptr::eq(f, r)));
            (first, split)
        }
    };
    let Some(resource) = resource else {
        return Decision::PassThrough;
    };
    if preflight {
        return Decision::Respond(preflight_response());
    }
    let deny = |code, reason, description: &str| {
        Decision::Respond(denial(resource, req, code, reason, description, &[]))
    };
    if ambiguous {
        return deny(
            ErrorCode::InvalidRequest,
            "bad_path",
            "request path is not normalized (encoded slash, backslash or escaped escape)",
        );
    }
    if split {
        return deny(
            ErrorCode::InvalidRequest,
            "bad_path",
            "request path reads as more than one protected resource",
        );
    }
    let token = match extract::extract(&req.authorization, query) {
        Credential::Missing => return Decision::Respond(missing_token(resource, req)),
        Credential::Invalid(description) => {
            return deny(ErrorCode::InvalidRequest, "invalid_request", description)
        }
        Credential::Bearer(token) => token,
    };
    if token.len() > config.max_token_bytes {
        let e = AuthError::TooLarge;
        return deny(ErrorCode::InvalidToken, e.code(), e.description());
    }
    let verified = match verify::verify(token, resource, config, keys, now) {
        Ok(v) => v,
        Err(AuthError::KeysPending(issuer)) => {
            return Decision::WaitForKeys {
                issuer,
                refetch: false,
            }
        }
        Err(AuthError::UnknownKid(issuer)) if keys.refetch_allowed(issuer, now) => {
            return Decision::WaitForKeys {
                issuer,
                refetch: true,
            }
        }
        Err(AuthError::Syntax(description)) => {
            return deny(ErrorCode::InvalidRequest, "invalid_request", description)
        }
        Err(e) => return deny(ErrorCode::InvalidToken, e.code(), e.description()),
    };
    authorize(config, resource, req, verified)
}

/// The scope check and the header edits for a verified token. A POST to a resource with
/// per-tool or per-method scopes first needs its body: the scope check then covers the whole
/// operation at once (one challenge with every scope it needs).
fn authorize<'c>(
    config: &'c Config,
    resource: &'c ProtectedResource,
    req: &Request<'_>,
    token: VerifiedToken,
) -> Decision<'c> {
    if resource.inspects_body() && req.method == "POST" {
        // Refuse a body announced too large before any of it is buffered.
        let announced = req
            .content_length
            .and_then(|l| l.trim().parse::<u64>().ok());
        if announced.is_some_and(|l| l > config.max_body_bytes as u64) {
            return Decision::Respond(body_too_large(config, req));
        }
        let index = config
            .resources
            .iter()
            .position(|r| std::ptr::eq(r, resource))
            .unwrap_or_default();
        let edits = allow(config, resource, &token);
        return Decision::ReadBody {
            check: BodyCheck {
                resource: index,
                token,
            },
            edits,
        };
    }
    let needed: Vec<&str> = resource
        .required_scopes
        .iter()
        .map(String::as_str)
        .collect();
    check_scopes_then_allow(config, resource, req, &token, &needed, &[])
}

fn check_scopes_then_allow<'c>(
    config: &'c Config,
    resource: &'c ProtectedResource,
    req: &Request<'_>,
    token: &VerifiedToken,
    needed: &[&str],
    tools: &[&str],
) -> Decision<'c> {
    let lacking: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|n| !token.scopes.iter().any(|g| g == n))
        .collect();
    if !lacking.is_empty() {
        let description = format!("insufficient scope: requires {}", lacking.join(" "));
        let mut response = denial(
            resource,
            req,
            ErrorCode::InsufficientScope,
            "insufficient_scope",
            &description,
            needed,
        );
        // Name the tools whose own scopes were missing, for the per-tool counters.
        response.denied_tools = tools
            .iter()
            .filter(|t| {
                resource
                    .tool_scopes
                    .get(**t)
                    .is_some_and(|s| s.iter().any(|scope| lacking.contains(&scope.as_str())))
            })
            .map(|t| t.to_string())
            .collect();
        return Decision::Respond(response);
    }
    Decision::Allow(allow(config, resource, token))
}

/// The header edits of an allowed request.
fn allow<'c>(
    config: &'c Config,
    resource: &'c ProtectedResource,
    token: &VerifiedToken,
) -> Allow<'c> {
    let set_headers = config
        .claim_headers
        .iter()
        .zip(&token.header_values)
        .filter_map(|((header, _), value)| Some((header.as_str(), value.clone()?)))
        .collect();
    Allow {
        resource,
        strip_authorization: !config.forward_authorization,
        set_headers,
    }
}

/// Decides a request whose body was read (SPEC §9): the JSON-RPC calls it makes must agree
/// with `Mcp-Method`/`Mcp-Name`, and the token must hold every scope they need (required,
/// per method and per tool; a batch needs the union).
pub fn decide_body<'c>(
    config: &'c Config,
    check: &BodyCheck,
    req: &Request<'_>,
    body: &[u8],
) -> Decision<'c> {
    let Some(resource) = config.resources.get(check.resource) else {
        return Decision::PassThrough;
    };
    let calls = match mcp::calls(body)
        .and_then(|calls| mcp::check_headers(&calls, req.mcp_method, req.mcp_name).map(|_| calls))
    {
        Ok(calls) => calls,
        Err(e) => {
            let reason = if e == mcp::BodyError::HeaderMismatch {
                "mcp_header_mismatch"
            } else {
                "invalid_body"
            };
            return Decision::Respond(denial(
                resource,
                req,
                ErrorCode::InvalidRequest,
                reason,
                e.description(),
                &[],
            ));
        }
    };
    let mut needed: Vec<&str> = resource
        .required_scopes
        .iter()
        .map(String::as_str)
        .collect();
    let mut add = |scopes: Option<&'c Vec<String>>| {
        for scope in scopes.into_iter().flatten() {
            if !needed.contains(&scope.as_str()) {
                needed.push(scope);
            }
        }
    };
    for call in &calls {
        add(resource.method_scopes.get(&call.method));
        if let Some(tool) = call.tool() {
            add(resource.tool_scopes.get(tool));
        }
    }
    let tools: Vec<&str> = calls.iter().filter_map(mcp::Call::tool).collect();
    check_scopes_then_allow(config, resource, req, &check.token, &needed, &tools)
}

/// A body over `max_body_bytes`: refused rather than let through unchecked.
pub fn body_too_large<'c>(config: &'c Config, req: &Request<'_>) -> Response<'c> {
    let description = format!("request body larger than {} bytes", config.max_body_bytes);
    let headers = json_headers(vec![("cache-control", "no-store".into())]);
    Response {
        status: 413,
        headers: with_cors(headers, req),
        body: error_body(ErrorCode::InvalidRequest.as_str(), &description).into(),
        outcome: Outcome::Denied("body_too_large"),
        denied_tools: Vec::new(),
    }
}

/// A request held for its issuer's first key set (or a refetch) past the wait: 503, try again.
pub fn keys_unavailable<'c>(req: &Request<'_>) -> Response<'c> {
    let headers = json_headers(vec![
        ("retry-after", "5".into()),
        ("cache-control", "no-store".into()),
    ]);
    Response {
        status: 503,
        headers: with_cors(headers, req),
        body: error_body("temporarily_unavailable", "signing keys not available yet").into(),
        outcome: Outcome::Denied("keys_unavailable"),
        denied_tools: Vec::new(),
    }
}

fn with_cors<'c>(
    mut headers: Vec<(&'static str, Cow<'c, str>)>,
    req: &Request<'_>,
) -> Vec<(&'static str, Cow<'c, str>)> {
    if req.origin.is_some() {
        for (name, value) in cors::response_headers() {
            if !headers.iter().any(|(n, _)| *n == name) {
                headers.push((name, value.into()));
            }
        }
    }
    headers
}

fn json_headers<'c>(extra: Vec<(&'static str, Cow<'c, str>)>) -> Vec<(&'static str, Cow<'c, str>)> {
    let mut headers = vec![("content-type", "application/json".into())];
    headers.extend(extra);
    headers
}

fn preflight_response<'c>() -> Response<'c> {
    Response {
        status: 204,
        headers: cors::preflight_headers()
            .into_iter()
            .map(|(n, v)| (n, v.into()))
            .collect(),
        body: "".into(),
        outcome: Outcome::Preflight,
        denied_tools: Vec::new(),
    }
}

fn metadata_response<'c>(
    found: Option<&'c ProtectedResource>,
    req: &Request<'_>,
    preflight: bool,
) -> Response<'c> {
    if preflight {
        return preflight_response();
    }
    let (status, body, outcome, extra): (u16, Cow<'c, str>, Outcome, Vec<_>) =
        match (req.method, found) {
            ("GET" | "HEAD", Some(resource)) => (
                200,
                resource.metadata_body.as_str().into(),
                Outcome::MetadataServed,
                vec![("cache-control", "public, max-age=3600".into())],
            ),
            ("GET" | "HEAD", None) => (
                404,
                error_body("not_found", "no protected resource metadata for this host").into(),
                Outcome::MetadataNotFound,
                vec![("cache-control", "no-store".into())],
            ),
            _ => (
                405,
                error_body("method_not_allowed", "metadata supports GET and HEAD").into(),
                Outcome::MethodNotAllowed,
                vec![("allow", "GET, HEAD, OPTIONS".into())],
            ),
        };
    let mut headers = json_headers(extra);
    headers.push(("access-control-allow-origin", "*".into()));
    Response {
        status,
        headers: with_cors(headers, req),
        body,
        outcome,
        denied_tools: Vec::new(),
    }
}

fn missing_token<'c>(resource: &'c ProtectedResource, req: &Request<'_>) -> Response<'c> {
    let headers = json_headers(vec![
        ("www-authenticate", resource.challenge.missing().into()),
        ("cache-control", "no-store".into()),
    ]);
    Response {
        status: 401,
        headers: with_cors(headers, req),
        body: resource.challenge.missing_body().into(),
        outcome: Outcome::Denied("missing_token"),
        denied_tools: Vec::new(),
    }
}

fn denial<'c>(
    resource: &'c ProtectedResource,
    req: &Request<'_>,
    code: ErrorCode,
    reason: &'static str,
    description: &str,
    needed: &[&str],
) -> Response<'c> {
    let challenge = resource.challenge.with_error(code, description, needed);
    let headers = json_headers(vec![
        ("www-authenticate", challenge.into()),
        ("cache-control", "no-store".into()),
    ]);
    Response {
        status: code.status(),
        headers: with_cors(headers, req),
        body: error_body(code.as_str(), description).into(),
        outcome: Outcome::Denied(reason),
        denied_tools: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{base, base_json, compile, remote_json};
    use crate::keyring::KeyRing;
    use crate::verify::tests::{good_claims, good_token, token, NOW};
    use serde_json::{json, Value};

    fn request<'a>(method: &'a str, path: &'a str, auth: Option<&'a str>) -> Request<'a> {
        Request {
            method,
            path,
            authority: "mcp.example.com",
            authorization: auth.into_iter().collect(),
            ..Request::default()
        }
    }

    /// `Bearer <token>` for these claims, signed by rsa-a.
    fn bearer(claims: Value) -> String {
        let header = json!({"alg": "RS256", "kid": "rsa-a"});
        format!("Bearer {}", token("rsa-a", "RS256", header, claims))
    }

    fn run<'c>(config: &'c Config, req: &Request<'_>) -> Decision<'c> {
        decide(config, &KeyRing::new(config), req, NOW)
    }

    fn header<'a>(r: &'a Response<'_>, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }

    fn respond<'c>(d: Decision<'c>) -> Response<'c> {
        match d {
            Decision::Respond(r) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    const RM: &str =
        "resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\"";

    #[test]
    fn walks_every_row_of_the_decision_table() {
        let c = base();
        let valid = format!("Bearer {}", good_token());
        let mut no_scope = good_claims();
        no_scope["scope"] = json!("other");
        let weak = bearer(no_scope);
        let expired = {
            let mut claims = good_claims();
            claims["exp"] = json!(NOW - 3600);
            bearer(claims)
        };
        let table: Vec<(Option<&str>, &str, u16, String)> = vec![
            (None, "/mcp", 401, format!("Bearer {RM}, scope=\"mcp:read\"")),
            (Some("Basic dTpw"), "/mcp", 401, format!("Bearer {RM}, scope=\"mcp:read\"")),
            (Some("Bearer"), "/mcp", 400, format!("Bearer error=\"invalid_request\", error_description=\"Bearer scheme without a token\", {RM}")),
            (Some("Bearer a b"), "/mcp", 400, format!("Bearer error=\"invalid_request\", error_description=\"malformed Bearer credential\", {RM}")),
            (None, "/mcp?access_token=x", 400, format!("Bearer error=\"invalid_request\", error_description=\"access_token in the query string is not accepted; use the Authorization header\", {RM}")),
            (Some("Bearer abc"), "/mcp", 401, format!("Bearer error=\"invalid_token\", error_description=\"token is not a JWS in compact form (three parts)\", {RM}, scope=\"mcp:read\"")),
            (Some(expired.as_str()), "/mcp", 401, format!("Bearer error=\"invalid_token\", error_description=\"token expired\", {RM}, scope=\"mcp:read\"")),
            (Some(weak.as_str()), "/mcp", 403, format!("Bearer error=\"insufficient_scope\", scope=\"mcp:read\", {RM}, error_description=\"insufficient scope: requires mcp:read\"")),
        ];
        for (auth, path, status, challenge) in table {
            let r = respond(run(&c, &request("POST", path, auth)));
            assert_eq!(r.status, status, "{auth:?} {path}");
            assert_eq!(
                header(&r, "www-authenticate"),
                Some(challenge.as_str()),
                "{auth:?}"
            );
            let body: Value = serde_json::from_str(&r.body).unwrap();
            assert!(body["error"].is_string() && body["error_description"].is_string());
            assert_eq!(header(&r, "content-type"), Some("application/json"));
        }
        match run(&c, &request("POST", "/mcp", Some(&valid))) {
            Decision::Allow(a) => {
                assert!(a.strip_authorization);
                assert_eq!(a.set_headers, vec![("x-mcp-subject", "user-1".to_string())]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protects_every_method_and_sub_path_but_not_neighbours() {
        let c = base();
        for method in ["GET", "POST", "DELETE", "PUT", "OPTIONS"] {
            for path in ["/mcp", "/mcp/", "/mcp/x", "/mcp?x=1"] {
                assert_eq!(
                    respond(run(&c, &request(method, path, None))).status,
                    401,
                    "{method} {path}"
                );
            }
        }
        for path in [
            "/mcpx",
            "/",
            "/other",
            "/.well-known/oauth-protected-resource/nope",
            "/MCP",
        ] {
            assert_eq!(
                run(&c, &request("GET", path, None)),
                Decision::PassThrough,
                "{path}"
            );
        }
    }

    #[test]
    fn never_lets_unnormalized_paths_past_a_protected_prefix() {
        let c = base();
        for path in [
            "/%6Dcp",
            "//mcp",
            "/./mcp",
            "/x/../mcp",
            "/mcp/../other",
            "/mc%70/x",
            "/mcp;jsessionid=1",
            "/mcp;v=1/x",
            "/mcp//../x",
        ] {
            assert_eq!(
                respond(run(&c, &request("POST", path, None))).status,
                401,
                "{path}"
            );
        }
        for path in [
            "/mcp%2Fx",
            "/mcp%5cx",
            "/mcp\\x",
            "/x%2F..%2Fmcp",
            "/mcp%252Fx",
            "/x%252F..%252Fmcp",
        ] {
            let r = respond(run(&c, &request("POST", path, None)));
            assert_eq!(r.status, 400, "{path}");
            assert_eq!(r.outcome, Outcome::Denied("bad_path"));
        }
        // Read as /tools by an upstream that merges slashes first, as /mcp/tools by one that
        // only removes dot segments (RFC 3986): two resources, so neither token may pass.
        let valid = format!("Bearer {}", good_token());
        for path in ["/mcp//../tools", "/tools//../mcp", "/tools/..//mcp/x"] {
            let r = respond(run(&c, &request("GET", path, Some(valid.as_str()))));
            assert_eq!(
                (r.status, r.outcome),
                (400, Outcome::Denied("bad_path")),
                "{path}"
            );
        }
        // A path parameter is no reason to refuse a valid token.
        assert!(matches!(
            run(&c, &request("POST", "/mcp;v=1", Some(valid.as_str()))),
            Decision::Allow(_)
        ));
        assert_eq!(
            run(&c, &request("GET", "/a%2Fb", None)),
            Decision::PassThrough
        );
    }

    #[test]
    fn keys_unavailable_is_a_503_a_browser_can_read() {
        let mut req = request("GET", "/mcp", None);
        let plain = keys_unavailable(&req);
        assert_eq!(plain.status, 503);
        assert_eq!(header(&plain, "retry-after"), Some("5"));
        assert_eq!(header(&plain, "access-control-allow-origin"), None);
        assert_eq!(plain.outcome, Outcome::Denied("keys_unavailable"));
        let body: serde_json::Value = serde_json::from_str(&plain.body).unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
        req.origin = Some("https://app.example");
        let cors = keys_unavailable(&req);
        assert_eq!(header(&cors, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            header(&cors, "access-control-expose-headers"),
            Some("www-authenticate")
        );
    }

    #[test]
    fn serves_metadata_at_path_suffixed_well_known() {
        let c = base();
        for method in ["GET", "HEAD"] {
            let r = respond(run(
                &c,
                &request(method, "/.well-known/oauth-protected-resource/mcp?x", None),
            ));
            assert_eq!(r.status, 200);
            assert_eq!(r.outcome, Outcome::MetadataServed);
            assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
            assert!(header(&r, "cache-control").unwrap().contains("max-age="));
            let doc: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
            assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        }
        let r = respond(run(
            &c,
            &request("POST", "/.well-known/oauth-protected-resource/mcp", None),
        ));
        assert_eq!(r.status, 405);
        let mut root = request("GET", "/.well-known/oauth-protected-resource", None);
        root.authority = "unknown.example.com";
        assert_eq!(respond(run(&c, &root)).status, 404);
    }

    #[test]
    fn answers_preflights_without_challenging() {
        let c = base();
        for path in ["/mcp", "/.well-known/oauth-protected-resource/mcp"] {
            let mut req = request("OPTIONS", path, None);
            req.origin = Some("https://app.example");
            req.access_control_request_method = Some("POST");
            let r = respond(run(&c, &req));
            assert_eq!(r.status, 204);
            assert!(header(&r, "access-control-allow-headers")
                .unwrap()
                .contains("mcp-session-id"));
        }
        let mut outside = request("OPTIONS", "/other", None);
        outside.origin = Some("https://app.example");
        outside.access_control_request_method = Some("POST");
        assert_eq!(run(&c, &outside), Decision::PassThrough);
    }

    #[test]
    fn exposes_the_challenge_to_browsers() {
        let c = base();
        let mut req = request("POST", "/mcp", None);
        req.origin = Some("https://app.example");
        let r = respond(run(&c, &req));
        assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            header(&r, "access-control-expose-headers"),
            Some("www-authenticate")
        );
        let no_origin = respond(run(&c, &request("POST", "/mcp", None)));
        assert_eq!(header(&no_origin, "access-control-expose-headers"), None);
    }

    #[test]
    fn refuses_a_token_minted_for_another_resource() {
        let c = base();
        let mut claims = good_claims();
        claims["aud"] = json!("https://other.example.com/tools");
        let t = token(
            "rsa-a",
            "RS256",
            json!({"alg": "RS256", "kid": "rsa-a"}),
            claims,
        );
        let auth = format!("Bearer {t}");
        let r = respond(run(&c, &request("POST", "/mcp", Some(&auth))));
        assert_eq!(r.status, 401);
        assert_eq!(r.outcome, Outcome::Denied("audience_not_accepted"));
        let mut other = request("POST", "/tools", Some(&auth));
        other.authority = "other.example.com";
        assert!(matches!(run(&c, &other), Decision::Allow(_)));
    }

    #[test]
    fn forwards_only_clean_scalar_claims_as_headers() {
        let mut v = base_json();
        v["claims_to_headers"] =
            json!({"x-sub": "sub", "x-n": "n", "x-b": "b", "x-o": "o", "x-bad": "bad"});
        v["forward_authorization"] = json!(true);
        let c = compile(&v).unwrap();
        let mut claims = good_claims();
        claims["n"] = json!(42);
        claims["b"] = json!(true);
        claims["o"] = json!({"a": 1});
        claims["bad"] = json!("a\r\nx-injected: 1");
        let t = token(
            "rsa-a",
            "RS256",
            json!({"alg": "RS256", "kid": "rsa-a"}),
            claims,
        );
        let auth = format!("Bearer {t}");
        let Decision::Allow(a) = run(&c, &request("GET", "/mcp", Some(&auth))) else {
            panic!()
        };
        assert!(!a.strip_authorization);
        let mut got = a.set_headers.clone();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("x-b", "true".into()),
                ("x-n", "42".into()),
                ("x-sub", "user-1".into())
            ]
        );
    }

    #[test]
    fn waits_for_remote_keys_instead_of_failing() {
        let c = compile(&remote_json()).unwrap();
        let auth = format!("Bearer {}", good_token());
        assert_eq!(
            run(&c, &request("GET", "/mcp", Some(&auth))),
            Decision::WaitForKeys {
                issuer: 0,
                refetch: false
            }
        );
    }

    #[test]
    fn holds_an_unknown_kid_for_one_rate_limited_refetch_then_refuses() {
        use crate::keys::{tests::fixture_set, KeySet};
        use crate::remote::{FetchPolicy, FetchState, Why};
        let c = compile(&remote_json()).unwrap();
        let only_a: Vec<_> = fixture_set()
            .keys()
            .iter()
            .filter(|k| k.kid.as_deref() == Some("rsa-a"))
            .cloned()
            .collect();
        let mut ring = KeyRing::new(&c);
        let policy = FetchPolicy::default();
        let mut state = FetchState::default();
        state.succeed(NOW - 100, None, 1, &policy);
        ring.install(0, KeySet::new(only_a), state.clone());
        let rotated = token(
            "rsa-b",
            "RS256",
            json!({"alg": "RS256", "kid": "rsa-b"}),
            good_claims(),
        );
        let auth = format!("Bearer {rotated}");
        let req = request("GET", "/mcp", Some(&auth));
        assert_eq!(
            decide(&c, &ring, &req, NOW),
            Decision::WaitForKeys {
                issuer: 0,
                refetch: true
            }
        );
        state.begin(NOW, Why::UnknownKid, &policy);
        state.succeed(NOW, None, 1, &policy);
        ring.observe(0, state);
        let r = respond(decide(&c, &ring, &req, NOW + 1));
        assert_eq!((r.status, r.outcome), (401, Outcome::Denied("unknown_kid")));
        ring.install(0, fixture_set(), ring.state(0).unwrap().clone());
        assert!(matches!(
            decide(&c, &ring, &req, NOW + 1),
            Decision::Allow(_)
        ));
    }

    fn mcp_config() -> Config {
        let mut v = base_json();
        v["resources"][0]["required_scopes"] = json!(["mcp:read"]);
        v["resources"][0]["tool_scopes"] =
            json!({"delete_all": ["mcp:admin"], "write_file": ["mcp:write"]});
        v["resources"][0]["method_scopes"] = json!({"resources/read": ["files:read"]});
        v["scope_implies"] = json!({"mcp:admin": ["mcp:write"], "mcp:write": ["mcp:read"]});
        compile(&v).unwrap()
    }

    fn bearer_with_scope(scope: &str) -> String {
        let mut claims = good_claims();
        claims["scope"] = json!(scope);
        bearer(claims)
    }

    fn call(name: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}","arguments":{{}}}}}}"#
        )
    }

    /// Runs the header phase, which must ask for the body, then the body phase.
    fn with_body<'c>(c: &'c Config, req: &Request<'_>, body: &str) -> Decision<'c> {
        match run(c, req) {
            Decision::ReadBody { check, .. } => decide_body(c, &check, req, body.as_bytes()),
            other => panic!("expected ReadBody, got {other:?}"),
        }
    }

    #[test]
    fn computes_the_scopes_a_body_needs_per_tool_method_and_batch() {
        let c = mcp_config();
        let batch_forbidden = format!("[{}, {}]", call("add"), call("delete_all"));
        let table: Vec<(&str, String, Option<&str>)> = vec![
            // (token scopes, body, scope param of the 403 or None when allowed)
            ("mcp:read", call("add"), None),
            ("mcp:read", call("unknown_tool"), None),
            ("mcp:read", call("write_file"), Some("mcp:read mcp:write")),
            ("mcp:write", call("write_file"), None),
            ("mcp:admin", call("delete_all"), None),
            ("mcp:admin", call("write_file"), None),
            ("mcp:write", call("delete_all"), Some("mcp:read mcp:admin")),
            ("mcp:read", batch_forbidden.clone(), Some("mcp:read mcp:admin")),
            ("mcp:admin", batch_forbidden, None),
            ("mcp:read", r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///x"}}"#.into(), Some("mcp:read files:read")),
            ("mcp:read files:read", r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///x"}}"#.into(), None),
            ("other", r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#.into(), Some("mcp:read")),
        ];
        for (scopes, body, want) in table {
            let auth = bearer_with_scope(scopes);
            let req = request("POST", "/mcp", Some(&auth));
            match (with_body(&c, &req, &body), want) {
                (Decision::Allow(_), None) => {}
                (Decision::Respond(r), Some(scope)) => {
                    assert_eq!(r.status, 403, "{scopes} {body}");
                    let challenge = header(&r, "www-authenticate").unwrap();
                    assert!(
                        challenge.contains(&format!("scope=\"{scope}\"")),
                        "{challenge}"
                    );
                }
                (other, _) => panic!("{scopes} {body}: {other:?}"),
            }
        }
    }

    #[test]
    fn names_the_denied_tools_for_counters() {
        let c = mcp_config();
        let auth = bearer_with_scope("mcp:read");
        let req = request("POST", "/mcp", Some(&auth));
        let body = format!(
            "[{}, {}, {}]",
            call("add"),
            call("delete_all"),
            call("write_file")
        );
        let r = respond(with_body(&c, &req, &body));
        assert_eq!(r.denied_tools, ["delete_all", "write_file"]);
    }

    #[test]
    fn refuses_bodies_that_are_not_json_rpc_or_disagree_with_the_mcp_headers() {
        let c = mcp_config();
        let auth = bearer_with_scope("mcp:admin");
        for (body, method, name, reason) in [
            ("not json", None, None, "invalid_body"),
            ("[]", None, None, "invalid_body"),
            (r#"{"id":1}"#, None, None, "invalid_body"),
            (
                call("add").as_str(),
                Some("tools/list"),
                None,
                "mcp_header_mismatch",
            ),
            (
                call("add").as_str(),
                Some("tools/call"),
                Some("delete_all"),
                "mcp_header_mismatch",
            ),
        ] {
            let mut req = request("POST", "/mcp", Some(&auth));
            req.mcp_method = method;
            req.mcp_name = name;
            let r = respond(with_body(&c, &req, body));
            assert_eq!(
                (r.status, r.outcome),
                (400, Outcome::Denied(reason)),
                "{body}"
            );
            assert!(header(&r, "www-authenticate")
                .unwrap()
                .starts_with("Bearer error=\"invalid_request\""));
        }
        let mut agreeing = request("POST", "/mcp", Some(&auth));
        agreeing.mcp_method = Some("tools/call");
        agreeing.mcp_name = Some("add");
        assert!(matches!(
            with_body(&c, &agreeing, &call("add")),
            Decision::Allow(_)
        ));
        let r = body_too_large(&c, &agreeing);
        assert_eq!(
            (r.status, r.outcome),
            (413, Outcome::Denied("body_too_large"))
        );
    }

    #[test]
    fn decides_bad_tokens_and_non_post_requests_at_the_headers() {
        let c = mcp_config();
        let r = respond(run(&c, &request("POST", "/mcp", Some("Bearer abc"))));
        assert_eq!(r.status, 401, "a bad token never waits for the body");
        let auth = bearer_with_scope("mcp:read");
        for method in ["GET", "DELETE"] {
            assert!(
                matches!(
                    run(&c, &request(method, "/mcp", Some(&auth))),
                    Decision::Allow(_)
                ),
                "{method}"
            );
        }
        let weak = bearer_with_scope("other");
        assert_eq!(
            respond(run(&c, &request("GET", "/mcp", Some(&weak)))).status,
            403
        );
        // The hierarchy counts for required scopes too.
        let admin = bearer_with_scope("mcp:admin");
        assert!(matches!(
            run(&c, &request("GET", "/mcp", Some(&admin))),
            Decision::Allow(_)
        ));
    }

    #[test]
    fn names_a_counter_for_every_outcome() {
        assert_eq!(
            Outcome::Denied("token_expired").metric(),
            "requests_denied_token_expired"
        );
        assert_eq!(Outcome::MetadataServed.metric(), "metadata_served");
    }
}
