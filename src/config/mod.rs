//! Plugin configuration (README, "Configuration"), in two stages: a serde "raw" form that refuses unknown
//! fields, then a fallible compile into the runtime form (parsed URLs, key sets, pre-rendered
//! metadata and challenges). All expensive and fallible work happens here, once, in
//! `on_configure`; none of it per request. Every error names the field path.

mod issuer;
mod raw;
#[cfg(test)]
pub(crate) mod tests;

pub use issuer::{ClientAuth, Introspection, SecretSource};
pub use raw::{RawConfig, RawIntrospection, RawIssuer, RawResource};

use crate::alg::AlgSet;
use crate::challenge::ResourceChallenge;
use crate::keys::KeySet;
use crate::metadata;
use crate::paths;
use crate::remote::FetchPolicy;
use crate::scopes::{self, Implications};
use crate::url::{HttpUrl, UrlError};
use issuer::compile_issuer;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

pub const DEFAULT_CLOCK_SKEW: u64 = 60;
/// A day: anything larger is a unit mistake (milliseconds), not a clock.
pub const MAX_CLOCK_SKEW: u64 = 86_400;
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
pub const MIN_MAX_TOKEN_BYTES: usize = 1;
/// Well above any header Envoy accepts by default (60 KiB).
pub const MAX_MAX_TOKEN_BYTES: usize = 1024 * 1024;
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = 4096;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const MIN_MAX_BODY_BYTES: usize = 1;
pub const MAX_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_BODY_WAIT_MS: u64 = 10_000;
pub const MAX_BODY_WAIT_MS: u64 = 600_000;
/// Tables are allocated at full size per worker (about 100 bytes an entry): 100k is ~10 MB.
pub const MAX_TOKEN_CACHE_SIZE: usize = 100_000;

/// A configuration error: where (the field path) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub kind: ConfigErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// Not JSON, an unknown field, a missing field or a wrong type (serde's words).
    Syntax(String),
    Url(UrlError),
    ResourcePath(&'static str),
    Empty,
    Duplicate(String),
    UnknownIssuer(String),
    InvalidScope(String),
    ForbiddenAlgorithm(String),
    UnsupportedAlgorithm(String),
    KeySource(&'static str),
    Jwks(String),
    InvalidKey(String),
    OutOfRange {
        min: u64,
        max: u64,
    },
    InvalidHeaderName(String),
    ReservedHeader(String),
    InvalidText,
    ScopeCycle(String),
    /// The resource's path differs only in case from this other resource's.
    PathCase(String),
    SecretSource(&'static str),
    InvalidEnvName(String),
    UnsupportedAuthMethod(String),
    /// The environment variable holding a secret is not set in the wasm VM.
    MissingEnv(String),
    /// `origin_authorization_server_metadata` cannot be served as configured.
    OriginDocument(String),
    /// `offline_access` where MCP 2026-07-28 says servers must not ask for it.
    OfflineAccess,
    /// Not an origin as browsers send it (`scheme://host[:port]`, lower case).
    InvalidOrigin(String),
}

impl ConfigErrorKind {
    /// A stable short code for logs and tooling.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigErrorKind::Syntax(_) => "syntax",
            ConfigErrorKind::Url(_) => "invalid_url",
            ConfigErrorKind::ResourcePath(_) => "resource_path",
            ConfigErrorKind::Empty => "empty",
            ConfigErrorKind::Duplicate(_) => "duplicate",
            ConfigErrorKind::UnknownIssuer(_) => "unknown_issuer",
            ConfigErrorKind::InvalidScope(_) => "invalid_scope",
            ConfigErrorKind::ForbiddenAlgorithm(_) => "forbidden_algorithm",
            ConfigErrorKind::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            ConfigErrorKind::KeySource(_) => "key_source",
            ConfigErrorKind::Jwks(_) => "invalid_jwks",
            ConfigErrorKind::InvalidKey(_) => "invalid_key",
            ConfigErrorKind::OutOfRange { .. } => "out_of_range",
            ConfigErrorKind::InvalidHeaderName(_) => "invalid_header_name",
            ConfigErrorKind::ReservedHeader(_) => "reserved_header",
            ConfigErrorKind::InvalidText => "invalid_text",
            ConfigErrorKind::ScopeCycle(_) => "scope_cycle",
            ConfigErrorKind::PathCase(_) => "path_case",
            ConfigErrorKind::SecretSource(_) => "secret_source",
            ConfigErrorKind::InvalidEnvName(_) => "invalid_env_name",
            ConfigErrorKind::UnsupportedAuthMethod(_) => "unsupported_auth_method",
            ConfigErrorKind::MissingEnv(_) => "missing_env",
            ConfigErrorKind::OriginDocument(_) => "origin_document",
            ConfigErrorKind::OfflineAccess => "offline_access",
            ConfigErrorKind::InvalidOrigin(_) => "invalid_origin",
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path)?;
        match &self.kind {
            ConfigErrorKind::Syntax(msg) => f.write_str(msg),
            ConfigErrorKind::Url(e) => f.write_str(e.reason()),
            ConfigErrorKind::ResourcePath(why) => f.write_str(why),
            ConfigErrorKind::Empty => f.write_str("must not be empty"),
            ConfigErrorKind::Duplicate(v) => write!(f, "duplicate value {v:?}"),
            ConfigErrorKind::UnknownIssuer(v) => write!(
                f,
                "no issuer entry {v:?} (each authorization server must equal an issuers[].issuer byte for byte)"
            ),
            ConfigErrorKind::InvalidScope(v) => write!(
                f,
                "{v:?} is not a valid scope token (RFC 6749 §3.3: printable ASCII without space, '\"' or '\\')"
            ),
            ConfigErrorKind::ForbiddenAlgorithm(v) => write!(
                f,
                "algorithm {v:?} is never accepted (none and HMAC cannot be used with public keys)"
            ),
            ConfigErrorKind::UnsupportedAlgorithm(v) => write!(
                f,
                "algorithm {v:?} is not supported (RS256/384/512, PS256/384/512, ES256/384, EdDSA)"
            ),
            ConfigErrorKind::KeySource(why) => f.write_str(why),
            ConfigErrorKind::Jwks(why) => write!(f, "JWK set {why}"),
            ConfigErrorKind::InvalidKey(why) => f.write_str(why),
            ConfigErrorKind::OutOfRange { min, max } => {
                write!(f, "must be between {min} and {max}")
            }
            ConfigErrorKind::InvalidHeaderName(v) => {
                write!(f, "{v:?} is not a valid HTTP header name")
            }
            ConfigErrorKind::ReservedHeader(v) => write!(
                f,
                "header {v:?} cannot carry claims (pseudo, hop-by-hop, credential or MCP protocol header)"
            ),
            ConfigErrorKind::InvalidText => {
                f.write_str("must be non-empty text without control characters")
            }
            ConfigErrorKind::ScopeCycle(cycle) => {
                write!(f, "scope hierarchy has a cycle: {cycle}")
            }
            ConfigErrorKind::SecretSource(why) => f.write_str(why),
            ConfigErrorKind::InvalidEnvName(v) => {
                write!(f, "{v:?} is not an environment variable name")
            }
            ConfigErrorKind::UnsupportedAuthMethod(v) => write!(
                f,
                "auth method {v:?} is not supported (client_secret_basic, client_secret_post)"
            ),
            ConfigErrorKind::MissingEnv(name) => write!(
                f,
                "environment variable {name} is not set (or empty) in the wasm VM: Envoy vm_config.environment_variables, Istio WasmPlugin vmConfig.env"
            ),
            ConfigErrorKind::OriginDocument(why) => f.write_str(why),
            ConfigErrorKind::OfflineAccess => f.write_str(
                "\"offline_access\" is not a resource scope: MCP 2026-07-28 (authorization, scope selection) says servers should neither advertise it nor challenge with it; a client asks its authorization server for refresh tokens itself",
            ),
            ConfigErrorKind::InvalidOrigin(v) => write!(
                f,
                "{v:?} is not an origin as browsers send it: scheme://host[:port], lower case, no path (RFC 6454 §6.1)"
            ),
            ConfigErrorKind::PathCase(other) => write!(
                f,
                "path differs only in case from {other}'s (upstreams that route case-insensitively would send both to one handler)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(path: impl Into<String>, kind: ConfigErrorKind) -> ConfigError {
    ConfigError {
        path: path.into(),
        kind,
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Inline(KeySet),
    /// No keys: the issuer's tokens, JWTs included, are introspected.
    None,
    /// Fetched through an Envoy cluster, from `jwks_uri` or, when absent, from the URI that
    /// RFC 8414 / OpenID Connect discovery on the issuer names.
    Remote {
        cluster: String,
        jwks_uri: Option<HttpUrl>,
        policy: FetchPolicy,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub issuer: String,
    pub algorithms: AlgSet,
    pub keys: KeySource,
    /// RFC 7662 introspection of the issuer's opaque tokens (and of its JWTs when it has no
    /// keys).
    pub introspection: Option<Introspection>,
    /// The Envoy cluster the filter's calls to this issuer go through (keys, discovery,
    /// introspection, the metadata document served at a resource's origin).
    pub cluster: Option<String>,
}

/// An origin (scheme, host, port of a resource) that answers its first authorization server's
/// RFC 8414 metadata at `/.well-known/oauth-authorization-server` and
/// `/.well-known/openid-configuration`, for clients of MCP 2025-03-26.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginDocument {
    /// `scheme://host:port`, host lower case, port explicit.
    pub origin: String,
    /// A resource of that origin that set the flag (its URL matches request authorities).
    pub resource: usize,
    pub issuer: IssuerId,
}

/// Index of an issuer in `Config::issuers`.
pub type IssuerId = usize;

/// One protected resource, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedResource {
    /// The canonical resource URI, verbatim.
    pub resource: String,
    pub url: HttpUrl,
    /// The protected path prefix, without a trailing slash (`""` protects the whole host).
    pub path_prefix: String,
    pub metadata_path: String,
    pub metadata_url: String,
    /// The RFC 9728 document, rendered once.
    pub metadata_body: String,
    /// The issuers whose tokens this resource accepts.
    pub issuers: Vec<IssuerId>,
    /// Those of them that introspect opaque tokens, in `authorization_servers` order.
    pub introspected_by: Vec<IssuerId>,
    /// `resource` first, then the extra `audiences`.
    pub audiences: Vec<String>,
    pub required_scopes: Vec<String>,
    /// Its origin answers the first authorization server's metadata (`origin_documents`).
    pub origin_authorization_server_metadata: bool,
    /// Tool name → scopes a `tools/call` of it needs on top of `required_scopes` (README, MCP-aware authorization).
    pub tool_scopes: HashMap<String, Vec<String>>,
    /// JSON-RPC method → scopes it needs on top of `required_scopes`.
    pub method_scopes: HashMap<String, Vec<String>>,
    /// `tools/list` results are filtered to what the caller may call (README, "Tool lists
    /// filtered per caller").
    pub filter_tools_list: bool,
    pub challenge: ResourceChallenge,
}

impl ProtectedResource {
    /// Whether POST bodies on this resource are read before anything is forwarded.
    pub fn inspects_body(&self) -> bool {
        !self.tool_scopes.is_empty() || !self.method_scopes.is_empty() || self.filter_tools_list
    }

    /// The tools of `tool_scopes` that a token with these scopes (implied ones included) may
    /// not call: what its `tools/list` results lose.
    pub fn tools_denied(&self, granted: &[String]) -> Vec<String> {
        let mut denied: Vec<String> = self
            .tool_scopes
            .iter()
            .filter(|(_, needs)| !needs.iter().all(|n| granted.contains(n)))
            .map(|(tool, _)| tool.clone())
            .collect();
        denied.sort_unstable();
        denied
    }
}

/// The compiled configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub resources: Vec<ProtectedResource>,
    pub issuers: Vec<Issuer>,
    /// Origins that answer an authorization server's metadata, one per origin.
    pub origin_documents: Vec<OriginDocument>,
    pub clock_skew: u64,
    pub max_token_bytes: usize,
    pub forward_authorization: bool,
    /// Entries of the per-worker verified-token cache (0 disables it).
    pub token_cache_size: usize,
    /// `(header, claim)`, header names lower-cased.
    pub claim_headers: Vec<(String, String)>,
    /// `scope_implies`, closed transitively.
    pub implications: Implications,
    /// Origins browsers may call from (`None`: any).
    pub allowed_origins: Option<Vec<String>>,
    /// The decision is set as filter state for the access log.
    pub audit_filter_state: bool,
    pub max_body_bytes: usize,
    /// Hold headers until the body is decided (else they go upstream first).
    pub hold_headers_for_body: bool,
    pub body_wait_ms: u64,
    /// Things worth a log line that do not make the configuration invalid.
    pub warnings: Vec<String>,
}

impl Config {
    /// Parses and compiles the plugin configuration JSON.
    pub fn from_json(text: &[u8]) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." {
                "configuration".to_string()
            } else {
                path
            };
            err(path, ConfigErrorKind::Syntax(e.inner().to_string()))
        })?;
        Config::compile(raw)
    }

    pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        in_range(
            "clock_skew_seconds",
            raw.clock_skew_seconds,
            0,
            MAX_CLOCK_SKEW,
        )?;
        in_range(
            "max_token_bytes",
            raw.max_token_bytes as u64,
            MIN_MAX_TOKEN_BYTES as u64,
            MAX_MAX_TOKEN_BYTES as u64,
        )?;
        in_range(
            "token_cache_size",
            raw.token_cache_size as u64,
            0,
            MAX_TOKEN_CACHE_SIZE as u64,
        )?;
        in_range(
            "max_body_bytes",
            raw.max_body_bytes as u64,
            MIN_MAX_BODY_BYTES as u64,
            MAX_MAX_BODY_BYTES as u64,
        )?;
        in_range("body_wait_ms", raw.body_wait_ms, 1, MAX_BODY_WAIT_MS)?;
        let implications = compile_implications(&raw.scope_implies)?;
        let allowed_origins = compile_origins(raw.allowed_origins)?;
        if raw.issuers.is_empty() {
            return Err(err("issuers", ConfigErrorKind::Empty));
        }
        let mut issuers = Vec::with_capacity(raw.issuers.len());
        for (i, raw_issuer) in raw.issuers.into_iter().enumerate() {
            let path = format!("issuers[{i}]");
            let issuer = compile_issuer(&path, raw_issuer, &mut warnings)?;
            if issuers.iter().any(|o: &Issuer| o.issuer == issuer.issuer) {
                return Err(err(
                    format!("{path}.issuer"),
                    ConfigErrorKind::Duplicate(issuer.issuer),
                ));
            }
            issuers.push(issuer);
        }
        if raw.resources.is_empty() {
            return Err(err("resources", ConfigErrorKind::Empty));
        }
        let mut resources: Vec<ProtectedResource> = Vec::with_capacity(raw.resources.len());
        for (i, raw_resource) in raw.resources.into_iter().enumerate() {
            let path = format!("resources[{i}]");
            let resource = compile_resource(&path, raw_resource, &issuers)?;
            let clash = resources.iter().any(|o| {
                o.resource == resource.resource
                    || (o.path_prefix == resource.path_prefix
                        && o.url.host == resource.url.host
                        && o.url.port == resource.url.port)
            });
            if clash {
                return Err(err(
                    format!("{path}.resource"),
                    ConfigErrorKind::Duplicate(resource.resource),
                ));
            }
            // Upstreams that route case-insensitively would send both to one handler, and
            // the filter protects case variants of each path: the two would overlap.
            if let Some(other) = resources.iter().position(|o| {
                o.path_prefix != resource.path_prefix
                    && o.path_prefix.eq_ignore_ascii_case(&resource.path_prefix)
            }) {
                return Err(err(
                    format!("{path}.resource"),
                    ConfigErrorKind::PathCase(format!("resources[{other}]")),
                ));
            }
            resources.push(resource);
        }
        for (id, issuer) in issuers.iter().enumerate() {
            if !resources.iter().any(|r| r.issuers.contains(&id)) {
                warnings.push(format!(
                    "issuers[{id}]: {:?} is not named by any resource's authorization_servers",
                    issuer.issuer
                ));
            }
        }
        let origin_documents = compile_origin_documents(&resources, &issuers)?;
        check_clusters_used(&issuers, &origin_documents)?;
        let claim_headers = compile_claim_headers(raw.claims_to_headers)?;
        Ok(Config {
            resources,
            issuers,
            origin_documents,
            clock_skew: raw.clock_skew_seconds,
            max_token_bytes: raw.max_token_bytes,
            forward_authorization: raw.forward_authorization,
            token_cache_size: raw.token_cache_size,
            claim_headers,
            implications,
            allowed_origins,
            audit_filter_state: raw.audit_filter_state,
            max_body_bytes: raw.max_body_bytes,
            hold_headers_for_body: raw.hold_headers_for_body,
            body_wait_ms: raw.body_wait_ms,
            warnings,
        })
    }
}

/// The origins that answer their first authorization server's metadata: one document per
/// origin, from an issuer the filter can fetch it from.
fn compile_origin_documents(
    resources: &[ProtectedResource],
    issuers: &[Issuer],
) -> Result<Vec<OriginDocument>, ConfigError> {
    let mut out: Vec<OriginDocument> = Vec::new();
    for (i, resource) in resources.iter().enumerate() {
        if !resource.origin_authorization_server_metadata {
            continue;
        }
        let at = format!("resources[{i}].origin_authorization_server_metadata");
        let Some(&issuer) = resource.issuers.first() else {
            continue;
        };
        let name = issuers.get(issuer).map_or("", |s| s.issuer.as_str());
        if issuers
            .get(issuer)
            .and_then(|s| s.cluster.as_ref())
            .is_none()
        {
            return Err(err(
                at,
                ConfigErrorKind::OriginDocument(format!(
                    "the first authorization server {name:?} has no cluster to fetch its metadata through (give issuers[{issuer}].cluster)"
                )),
            ));
        }
        if HttpUrl::parse(name).is_err() {
            return Err(err(
                at,
                ConfigErrorKind::OriginDocument(format!(
                    "the first authorization server {name:?} is not an http(s) URL its metadata could be discovered at"
                )),
            ));
        }
        let url = &resource.url;
        let origin = format!("{}://{}:{}", url.scheme, url.host, url.port);
        match out.iter().find(|d| d.origin == origin) {
            Some(other) if other.issuer != issuer => {
                return Err(err(
                    at,
                    ConfigErrorKind::OriginDocument(format!(
                        "resources[{}] of the same origin {origin} names another first authorization server: an origin has one metadata document",
                        other.resource
                    )),
                ))
            }
            Some(_) => {}
            None => out.push(OriginDocument {
                origin,
                resource: i,
                issuer,
            }),
        }
    }
    Ok(out)
}

/// A cluster beside inline keys must be used by something: introspection or an origin's
/// metadata document (else it reads as a key source, and one is enough).
fn check_clusters_used(
    issuers: &[Issuer],
    documents: &[OriginDocument],
) -> Result<(), ConfigError> {
    for (id, issuer) in issuers.iter().enumerate() {
        let unused = matches!(issuer.keys, KeySource::Inline(_))
            && issuer.cluster.is_some()
            && issuer.introspection.is_none()
            && !documents.iter().any(|d| d.issuer == id);
        if unused {
            return Err(err(
                format!("issuers[{id}].jwks"),
                ConfigErrorKind::KeySource("give either inline jwks or jwks_uri/cluster, not both"),
            ));
        }
    }
    Ok(())
}

/// `value`, or an error naming `path` when it is outside `[min, max]`.
fn in_range(path: impl Into<String>, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(err(path, ConfigErrorKind::OutOfRange { min, max }))
    }
}

fn is_plain_text(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

/// RFC 6749 §3.3 scope-token: `1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// The scope MCP 2026-07-28 keeps out of resource servers' scopes: a client's business with
/// its authorization server, not the resource's.
const OFFLINE_ACCESS: &str = "offline_access";

fn check_scopes(path: &str, scopes: &[String]) -> Result<(), ConfigError> {
    for (i, scope) in scopes.iter().enumerate() {
        if !is_scope_token(scope) {
            return Err(err(
                format!("{path}[{i}]"),
                ConfigErrorKind::InvalidScope(scope.clone()),
            ));
        }
        if scope == OFFLINE_ACCESS {
            return Err(err(format!("{path}[{i}]"), ConfigErrorKind::OfflineAccess));
        }
        if scopes[..i].contains(scope) {
            return Err(err(
                format!("{path}[{i}]"),
                ConfigErrorKind::Duplicate(scope.clone()),
            ));
        }
    }
    Ok(())
}

/// A name → scopes map (`tool_scopes`, `method_scopes`): names non-empty text, scopes valid.
fn compile_scope_map(
    path: &str,
    raw: BTreeMap<String, Vec<String>>,
) -> Result<HashMap<String, Vec<String>>, ConfigError> {
    let mut out = HashMap::with_capacity(raw.len());
    for (name, list) in raw {
        let at = format!("{path}.{name}");
        if !is_plain_text(&name) {
            return Err(err(at, ConfigErrorKind::InvalidText));
        }
        check_scopes(&at, &list)?;
        out.insert(name, list);
    }
    Ok(out)
}

/// `allowed_origins`: each as a browser serializes an origin (RFC 6454 §6.1), so a request's
/// `Origin` compares byte for byte.
fn compile_origins(raw: Option<Vec<String>>) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(origins) = raw else {
        return Ok(None);
    };
    for (i, origin) in origins.iter().enumerate() {
        let at = format!("allowed_origins[{i}]");
        if !is_origin(origin) {
            return Err(err(at, ConfigErrorKind::InvalidOrigin(origin.clone())));
        }
        if origins[..i].contains(origin) {
            return Err(err(at, ConfigErrorKind::Duplicate(origin.clone())));
        }
    }
    Ok(Some(origins))
}

fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    // An IPv6 literal keeps its colons inside brackets.
    let host_end = match rest.strip_prefix('[') {
        Some(v6) => match v6.find(']') {
            Some(i) => i + 2,
            None => return false,
        },
        None => rest.find(':').unwrap_or(rest.len()),
    };
    let (host, after) = rest.split_at(host_end);
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~[]:%".contains(&b));
    let port_ok = match after.strip_prefix(':') {
        Some(port) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
        None => after.is_empty(),
    };
    scheme_ok && host_ok && port_ok
}

fn compile_implications(raw: &BTreeMap<String, Vec<String>>) -> Result<Implications, ConfigError> {
    for (scope, implied) in raw {
        let at = format!("scope_implies.{scope}");
        if !is_scope_token(scope) {
            return Err(err(at, ConfigErrorKind::InvalidScope(scope.clone())));
        }
        if scope == OFFLINE_ACCESS {
            return Err(err(at, ConfigErrorKind::OfflineAccess));
        }
        check_scopes(&at, implied)?;
    }
    scopes::closure(raw).map_err(|cycle| {
        err(
            format!("scope_implies.{}", cycle[0]),
            ConfigErrorKind::ScopeCycle(cycle.join(" -> ")),
        )
    })
}

fn compile_resource(
    path: &str,
    raw: RawResource,
    issuers: &[Issuer],
) -> Result<ProtectedResource, ConfigError> {
    let field = |name: &str| format!("{path}.{name}");
    let url = HttpUrl::parse(&raw.resource)
        .map_err(|e| err(field("resource"), ConfigErrorKind::Url(e)))?;
    if url.query.is_some() {
        return Err(err(
            field("resource"),
            ConfigErrorKind::ResourcePath("must not contain a query component"),
        ));
    }
    if !url.path.is_empty() && !matches!(paths::normalize(&url.path), paths::Normalized::Plain(_)) {
        return Err(err(
            field("resource"),
            ConfigErrorKind::ResourcePath(
                "path must be normalized (no percent-escapes, '.', '..', '//' or '\\')",
            ),
        ));
    }
    if raw.authorization_servers.is_empty() {
        return Err(err(field("authorization_servers"), ConfigErrorKind::Empty));
    }
    let mut accepted = Vec::with_capacity(raw.authorization_servers.len());
    for (i, server) in raw.authorization_servers.iter().enumerate() {
        let at = format!("{path}.authorization_servers[{i}]");
        let id = issuers
            .iter()
            .position(|iss| &iss.issuer == server)
            .ok_or_else(|| err(&at, ConfigErrorKind::UnknownIssuer(server.clone())))?;
        if accepted.contains(&id) {
            return Err(err(at, ConfigErrorKind::Duplicate(server.clone())));
        }
        accepted.push(id);
    }
    check_scopes(&field("scopes_supported"), &raw.scopes_supported)?;
    check_scopes(&field("required_scopes"), &raw.required_scopes)?;
    let filter_tools_list = raw.filter_tools_list.unwrap_or(!raw.tool_scopes.is_empty());
    let tool_scopes = compile_scope_map(&field("tool_scopes"), raw.tool_scopes)?;
    let method_scopes = compile_scope_map(&field("method_scopes"), raw.method_scopes)?;
    let mut audiences = vec![raw.resource.clone()];
    for (i, aud) in raw.audiences.iter().enumerate() {
        if !is_plain_text(aud) {
            return Err(err(
                format!("{path}.audiences[{i}]"),
                ConfigErrorKind::InvalidText,
            ));
        }
        audiences.push(aud.clone());
    }
    if let Some(name) = &raw.resource_name {
        if !is_plain_text(name) {
            return Err(err(field("resource_name"), ConfigErrorKind::InvalidText));
        }
    }
    if let Some(doc) = &raw.resource_documentation {
        HttpUrl::parse(doc)
            .map_err(|e| err(field("resource_documentation"), ConfigErrorKind::Url(e)))?;
    }
    let metadata_url = metadata::metadata_url(&url);
    let metadata_body = metadata::render_document(
        &raw.resource,
        &raw.authorization_servers,
        &raw.scopes_supported,
        raw.resource_name.as_deref(),
        raw.resource_documentation.as_deref(),
    );
    let challenge = ResourceChallenge::new(&metadata_url, &raw.required_scopes);
    Ok(ProtectedResource {
        path_prefix: url.path.trim_end_matches('/').to_string(),
        metadata_path: metadata::metadata_path(&url),
        metadata_url,
        metadata_body,
        introspected_by: accepted
            .iter()
            .copied()
            .filter(|id| issuers.get(*id).is_some_and(|i| i.introspection.is_some()))
            .collect(),
        issuers: accepted,
        audiences,
        required_scopes: raw.required_scopes,
        tool_scopes,
        method_scopes,
        filter_tools_list,
        origin_authorization_server_metadata: raw.origin_authorization_server_metadata,
        challenge,
        resource: raw.resource,
        url,
    })
}

/// Headers a claim may never be written into.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "host",
    "cookie",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn compile_claim_headers(
    raw: BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(raw.len());
    for (header, claim) in raw {
        let at = format!("claims_to_headers.{header}");
        if header.is_empty() || !header.bytes().all(is_tchar) {
            return Err(err(at, ConfigErrorKind::InvalidHeaderName(header)));
        }
        let lower = header.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-envoy-") {
            return Err(err(at, ConfigErrorKind::ReservedHeader(header)));
        }
        if out.iter().any(|(h, _)| *h == lower) {
            return Err(err(at, ConfigErrorKind::Duplicate(lower)));
        }
        if !is_plain_text(&claim) {
            return Err(err(at, ConfigErrorKind::InvalidText));
        }
        out.push((lower, claim));
    }
    Ok(out)
}
