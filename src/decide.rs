//! The one seam per request: a view of the request in, a decision out (README, "What the
//! filter answers"; RFC 6750, RFC 9728, MCP authorization 2026-07-28). The glue gathers the
//! view, calls [`decide`] (and [`decide_body`] once a body is read), and applies the result;
//! nothing here calls the host.

use crate::cache::TokenCache;
use crate::challenge::ErrorCode;
use crate::config::{Config, IssuerId, ProtectedResource};
use crate::cors;
use crate::extract::{self, Credential};
use crate::introspect;
use crate::mcp;
use crate::paths;
use crate::reason::Reason;
use crate::response::{self, Response};
use crate::route::{self, Route};
use crate::token::{Audit, VerifiedToken};
use crate::tools_list::{self, ListFilter};
use crate::verify::{self, AuthError, KeyStore};

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
    /// Every `Mcp-Method` value, in order (a repeated header has several).
    pub mcp_method: Vec<&'a str>,
    /// Every `Mcp-Name` value, in order.
    pub mcp_name: Vec<&'a str>,
    pub content_length: Option<&'a str>,
    /// Whether a body follows the headers (the headers did not end the stream).
    pub has_body: bool,
}

/// Forward to the upstream, with these header edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow<'c> {
    pub resource: &'c ProtectedResource,
    /// Remove `Authorization` (unless `forward_authorization`).
    pub strip_authorization: bool,
    /// Claim headers to set (after every configured claim header was removed).
    pub set_headers: Vec<(&'c str, String)>,
    /// The request's `tools/list` calls, whose results in the response are filtered to what
    /// the token may call.
    pub tools_list: Option<ListFilter>,
    /// Who the token names, and the tools the body called, for the access log.
    pub audit: Audit,
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
    /// The token is opaque (or its issuer has no keys): ask these issuers, in order, whether
    /// it is active (RFC 7662), then [`authorize`] the answer that says so.
    Introspect {
        /// Index of the resource in `Config::resources`.
        resource: usize,
        issuers: Vec<IssuerId>,
    },
    /// Hold the request and decide again when the issuer's keys change: they have not loaded
    /// yet, or (`refetch`) the token's `kid` is unknown and a refetch is allowed.
    WaitForKeys {
        issuer: IssuerId,
        /// Index of the resource in `Config::resources`.
        resource: usize,
        refetch: bool,
    },
    /// Answer with this issuer's RFC 8414 metadata as fetched ([`response::as_metadata`]):
    /// a client of MCP 2025-03-26 asked the resource's origin for it.
    OriginMetadata {
        issuer: IssuerId,
    },
}

/// A valid token on a request whose body decides (MCP-aware authorization).
#[derive(Debug, Clone, PartialEq)]
pub struct BodyCheck {
    /// Index of the resource in `Config::resources`.
    pub resource: usize,
    pub token: VerifiedToken,
}

/// Decides what to do with a request at `now` (seconds since the epoch), verifying its token
/// against `keys` through the verified-token `cache` when there is one.
pub fn decide<'c>(
    config: &'c Config,
    keys: &dyn KeyStore,
    cache: Option<&TokenCache>,
    req: &Request<'_>,
    now: u64,
) -> Decision<'c> {
    let (raw_path, query) = paths::split_query(req.path);
    if let Some(document) = route::origin_document(config, raw_path, req.authority) {
        if origin_refused(config, req.origin) {
            return Decision::Respond(response::origin_not_allowed());
        }
        if cors::is_preflight(req.method, req.origin, req.access_control_request_method) {
            return Decision::Respond(response::preflight());
        }
        return Decision::OriginMetadata {
            issuer: document.issuer,
        };
    }
    let resource = match route::route(config, raw_path, req.authority) {
        Route::Outside => return Decision::PassThrough,
        _ if origin_refused(config, req.origin) => {
            return Decision::Respond(response::origin_not_allowed())
        }
        Route::Misdirected => return Decision::Respond(response::misdirected(req.origin)),
        _ if cors::is_preflight(req.method, req.origin, req.access_control_request_method) => {
            return Decision::Respond(response::preflight())
        }
        Route::Metadata(found) => {
            return Decision::Respond(response::metadata(found, req.method, req.origin))
        }
        Route::BadPath(resource, description) => {
            return Decision::Respond(response::denial(
                resource,
                req.origin,
                ErrorCode::InvalidRequest,
                Reason::BadPath,
                description,
                &[],
            ))
        }
        Route::Protected(resource) => resource,
    };
    let deny = |code, reason, description: &str| {
        Decision::Respond(response::denial(
            resource,
            req.origin,
            code,
            reason,
            description,
            &[],
        ))
    };
    let token = match extract::extract(&req.authorization, query) {
        Credential::Missing => {
            return Decision::Respond(response::missing_token(resource, req.origin))
        }
        Credential::Invalid(description) => {
            return deny(
                ErrorCode::InvalidRequest,
                Reason::InvalidRequest,
                description,
            )
        }
        Credential::Bearer(token) => token,
    };
    if token.len() > config.max_token_bytes {
        let e = AuthError::TooLarge;
        return deny(ErrorCode::InvalidToken, e.reason(), e.description());
    }
    let index = resource_index(config, resource);
    if !resource.introspected_by.is_empty() && !introspect::is_jws(token) {
        if let Err(description) = extract::check_syntax(token) {
            return deny(
                ErrorCode::InvalidRequest,
                Reason::InvalidRequest,
                description,
            );
        }
        if let Some(cache) = cache {
            let known = cache.get(&cache.key(token), now);
            match known {
                Some(signed) if verify::still_introspected(&signed, resource, config, now) => {
                    return authorize(config, resource, index, req, VerifiedToken(signed));
                }
                _ => cache.record_miss(),
            }
        }
        return Decision::Introspect {
            resource: index,
            issuers: resource.introspected_by.clone(),
        };
    }
    let verified = match verify::verify(token, resource, config, keys, cache, now) {
        Ok(v) => v,
        Err(AuthError::KeysPending(issuer)) => {
            return Decision::WaitForKeys {
                issuer,
                resource: index,
                refetch: false,
            }
        }
        Err(AuthError::Introspect(issuer)) => {
            return Decision::Introspect {
                resource: index,
                issuers: vec![issuer],
            }
        }
        Err(AuthError::UnknownKid(issuer)) if keys.refetch_allowed(issuer, now) => {
            return Decision::WaitForKeys {
                issuer,
                resource: index,
                refetch: true,
            }
        }
        Err(e @ AuthError::Syntax(description)) => {
            return deny(ErrorCode::InvalidRequest, e.reason(), description)
        }
        Err(e) => return deny(ErrorCode::InvalidToken, e.reason(), e.description()),
    };
    authorize(config, resource, index, req, verified)
}

/// Whether `allowed_origins` refuses the request's `Origin` (byte for byte; `null` never
/// matches; a request without one is not a browser's cross-origin call and is not refused).
fn origin_refused(config: &Config, origin: Option<&str>) -> bool {
    match (&config.allowed_origins, origin) {
        (Some(allowed), Some(origin)) => !allowed.iter().any(|a| a == origin),
        _ => false,
    }
}

fn resource_index(config: &Config, resource: &ProtectedResource) -> usize {
    config
        .resources
        .iter()
        .position(|r| std::ptr::eq(r, resource))
        .unwrap_or_default()
}

/// Whether the request's body must be read before it is decided: on a resource with
/// per-tool or per-method scopes, every request with a body, whatever its method or its
/// spelling (`pOST`: ASP.NET routes methods case-insensitively), and a POST without one (an
/// empty body is not JSON-RPC).
fn body_decides(resource: &ProtectedResource, req: &Request<'_>) -> bool {
    resource.inspects_body() && (req.has_body || req.method.eq_ignore_ascii_case("POST"))
}

/// The scope check and the header edits for a verified token (a JWT's, or an introspection
/// answer's). A request whose body decides first needs its body: the scope check then covers
/// the whole operation at once (one challenge with every scope it needs).
pub fn authorize<'c>(
    config: &'c Config,
    resource: &'c ProtectedResource,
    index: usize,
    req: &Request<'_>,
    token: VerifiedToken,
) -> Decision<'c> {
    if body_decides(resource, req) {
        // Refuse a body announced too large before any of it is buffered.
        let announced = req
            .content_length
            .and_then(|l| l.trim().parse::<u64>().ok());
        if announced.is_some_and(|l| l > config.max_body_bytes as u64) {
            return Decision::Respond(response::body_too_large(config, req.origin));
        }
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
    let mut decision = check_scopes_then_allow(config, resource, req, &token, &needed, &[]);
    if let Decision::Allow(allow) = &mut decision {
        if resource.filter_tools_list && req.method.eq_ignore_ascii_case("GET") {
            // A GET stream carries answers the filter saw no request for: replayed ones on a
            // resumed stream (`Last-Event-ID`), and every answer of the HTTP+SSE transport
            // of MCP 2024-11-05. Every tool list on it is filtered.
            let denied = resource.tools_denied(&token.scopes);
            allow.tools_list = Some(ListFilter::replayed(denied));
        }
    }
    decision
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
        let mut response = response::denial(
            resource,
            req.origin,
            ErrorCode::InsufficientScope,
            Reason::InsufficientScope,
            &description,
            needed,
        );
        response.audit = Some(Audit {
            tools: tools.iter().map(|t| t.to_string()).collect(),
            ..Audit::of(token)
        });
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
        tools_list: None,
        audit: Audit::of(token),
    }
}

/// Decides a request whose body was read (MCP-aware authorization): the JSON-RPC calls it
/// makes must agree with every `Mcp-Method`/`Mcp-Name` value, and the token must hold every
/// scope they need (required, per method and per tool; a batch needs the union).
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
        .and_then(|calls| mcp::check_headers(&calls, &req.mcp_method, &req.mcp_name).map(|_| calls))
    {
        Ok(calls) => calls,
        Err(e) => {
            let reason = if e == mcp::BodyError::HeaderMismatch {
                Reason::McpHeaderMismatch
            } else {
                Reason::InvalidBody
            };
            return Decision::Respond(response::denial(
                resource,
                req.origin,
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
    let mut decision =
        check_scopes_then_allow(config, resource, req, &check.token, &needed, &tools);
    if let Decision::Allow(allow) = &mut decision {
        allow.audit.tools = tools.iter().map(|t| t.to_string()).collect();
        if resource.filter_tools_list && calls.iter().any(|c| c.method == "tools/list") {
            let (ids, batch) = tools_list::list_calls(body);
            if !ids.is_empty() {
                let denied = resource.tools_denied(&check.token.scopes);
                allow.tools_list = Some(ListFilter::new(ids, batch, denied));
            }
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{base, base_json, compile, remote_json};
    use crate::keyring::KeyRing;
    use crate::reason::Outcome;
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
        decide(config, &KeyRing::new(config), None, req, NOW)
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
        for method in ["GET", "POST", "DELETE", "PUT", "OPTIONS", "pOST"] {
            for path in [
                "/mcp", "/mcp/", "/mcp/x", "/mcp?x=1", "/MCP", "/Mcp/", "/mCP/x",
            ] {
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
            "/MCPX",
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
            assert_eq!(r.outcome, Outcome::Denied(Reason::BadPath));
        }
        // Read as /tools by an upstream that merges slashes first, as /mcp/tools by one that
        // only removes dot segments (RFC 3986): two resources, so neither token may pass.
        let valid = format!("Bearer {}", good_token());
        for path in ["/mcp//../tools", "/tools//../mcp", "/tools/..//mcp/x"] {
            let r = respond(run(&c, &request("GET", path, Some(valid.as_str()))));
            assert_eq!(
                (r.status, r.outcome),
                (400, Outcome::Denied(Reason::BadPath)),
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
    fn refuses_origins_outside_allowed_origins_on_every_path_of_ours() {
        let mut v = base_json();
        v["allowed_origins"] = json!(["https://app.example", "http://localhost:6274"]);
        let c = compile(&v).unwrap();
        let with_origin =
            |method: &'static str, path: &'static str, origin: Option<&'static str>| {
                let mut req = request(method, path, None);
                req.origin = origin;
                req.access_control_request_method = (method == "OPTIONS").then_some("POST");
                run(&c, &req)
            };
        for (method, path) in [
            ("POST", "/mcp"),
            ("GET", "/mcp/sub"),
            ("OPTIONS", "/mcp"),
            ("GET", "/.well-known/oauth-protected-resource/mcp"),
            ("OPTIONS", "/.well-known/oauth-protected-resource/mcp"),
        ] {
            for origin in [
                "https://evil.example",
                "null",
                "https://APP.example",
                "https://app.example:443",
            ] {
                let r = respond(with_origin(method, path, Some(origin)));
                assert_eq!(
                    (r.status, r.outcome),
                    (403, Outcome::Denied(Reason::OriginNotAllowed)),
                    "{method} {path} {origin}"
                );
                assert!(
                    r.headers
                        .iter()
                        .all(|(n, _)| !n.starts_with("access-control-")),
                    "{method} {path}"
                );
            }
            // Allowed, or no Origin at all: decided as before.
            for origin in [
                Some("https://app.example"),
                Some("http://localhost:6274"),
                None,
            ] {
                let d = with_origin(method, path, origin);
                assert!(
                    !matches!(&d, Decision::Respond(r) if r.outcome == Outcome::Denied(Reason::OriginNotAllowed)),
                    "{method} {path} {origin:?}"
                );
            }
        }
        // Not a path of ours: not the filter's business.
        assert_eq!(
            with_origin("POST", "/other", Some("https://evil.example")),
            Decision::PassThrough
        );
        // Without allowed_origins every origin is served, with `*`.
        let open = base();
        let mut req = request("POST", "/mcp", None);
        req.origin = Some("https://evil.example");
        let r = respond(run(&open, &req));
        assert_eq!(r.status, 401);
        assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
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
        assert_eq!(r.outcome, Outcome::Denied(Reason::AudienceNotAccepted));
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
                resource: 0,
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
        ring.install(0, KeySet::new(only_a), state.clone(), &TokenCache::new(0));
        let rotated = token(
            "rsa-b",
            "RS256",
            json!({"alg": "RS256", "kid": "rsa-b"}),
            good_claims(),
        );
        let auth = format!("Bearer {rotated}");
        let req = request("GET", "/mcp", Some(&auth));
        assert_eq!(
            decide(&c, &ring, None, &req, NOW),
            Decision::WaitForKeys {
                issuer: 0,
                resource: 0,
                refetch: true
            }
        );
        state.begin(NOW, Why::UnknownKid, &policy);
        state.succeed(NOW, None, 1, &policy);
        ring.observe(0, state);
        let r = respond(decide(&c, &ring, None, &req, NOW + 1));
        assert_eq!(
            (r.status, r.outcome),
            (401, Outcome::Denied(Reason::UnknownKid))
        );
        let state = ring.state(0).unwrap().clone();
        ring.install(0, fixture_set(), state, &TokenCache::new(0));
        assert!(matches!(
            decide(&c, &ring, None, &req, NOW + 1),
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
            ("not json", None, None, Reason::InvalidBody),
            ("[]", None, None, Reason::InvalidBody),
            (r#"{"id":1}"#, None, None, Reason::InvalidBody),
            (
                call("add").as_str(),
                Some("tools/list"),
                None,
                Reason::McpHeaderMismatch,
            ),
            (
                call("add").as_str(),
                Some("tools/call"),
                Some("delete_all"),
                Reason::McpHeaderMismatch,
            ),
        ] {
            let mut req = request("POST", "/mcp", Some(&auth));
            req.mcp_method = method.into_iter().collect();
            req.mcp_name = name.into_iter().collect();
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
        agreeing.mcp_method = vec!["tools/call"];
        agreeing.mcp_name = vec!["add"];
        assert!(matches!(
            with_body(&c, &agreeing, &call("add")),
            Decision::Allow(_)
        ));
        let r = response::body_too_large(&c, None);
        assert_eq!(
            (r.status, r.outcome),
            (413, Outcome::Denied(Reason::BodyTooLarge))
        );
    }

    #[test]
    fn reads_the_body_of_every_request_with_one_whatever_its_method() {
        let c = mcp_config();
        let auth = bearer_with_scope("mcp:read");
        for method in [
            "POST", "pOST", "post", "PUT", "PATCH", "GET", "DELETE", "X-CALL",
        ] {
            let mut req = request(method, "/MCP", Some(&auth));
            req.has_body = true;
            let r = respond(with_body(&c, &req, &call("delete_all")));
            assert_eq!(r.status, 403, "{method}");
        }
        // Without a body only a POST still needs one (an empty body is not JSON-RPC).
        let mut empty = request("pOST", "/mcp", Some(&auth));
        assert!(matches!(run(&c, &empty), Decision::ReadBody { .. }));
        empty.method = "PUT";
        assert!(matches!(run(&c, &empty), Decision::Allow(_)));
    }

    #[test]
    fn answers_421_when_resources_share_a_path_and_the_authority_names_none() {
        let mut v = base_json();
        v["resources"][1]["resource"] = json!("https://other.example.com/mcp");
        let c = compile(&v).unwrap();
        let valid = format!("Bearer {}", good_token());
        for authority in ["localhost.", "127.0.0.1:8080", "mcp.example.com:8443", ""] {
            let mut req = request("POST", "/mcp", Some(&valid));
            req.authority = authority;
            let r = respond(run(&c, &req));
            assert_eq!(
                (r.status, r.outcome),
                (421, Outcome::Denied(Reason::MisdirectedRequest)),
                "{authority}"
            );
        }
        let mut named = request("POST", "/mcp", Some(&valid));
        named.authority = "MCP.example.com.:443";
        assert!(
            matches!(run(&c, &named), Decision::Allow(a) if a.resource.resource == "https://mcp.example.com/mcp")
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
}
