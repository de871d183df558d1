//! Plugin configuration (README, "Configuration"), in two stages: a serde "raw" form that refuses unknown
//! fields, then a fallible compile into the runtime form (parsed URLs, key sets, pre-rendered
//! metadata and challenges). All expensive and fallible work happens here, once, in
//! `on_configure`; none of it per request. Every error names the field path.

use crate::alg::{Alg, AlgRejection, AlgSet};
use crate::challenge::ResourceChallenge;
use crate::keys::{JwkOutcome, KeySet};
use crate::metadata;
use crate::paths;
use crate::remote::{FetchPolicy, MAX_CACHE_SECONDS, MIN_CACHE_SECONDS};
use crate::scopes::{self, Implications};
use crate::url::{HttpUrl, UrlError};
use serde::Deserialize;
use serde_json::Value;
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

/// The plugin configuration as written (README, "Configuration"). Unknown fields are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// What is protected; at least one. Required.
    pub resources: Vec<RawResource>,
    /// Whose tokens are trusted, with which keys; at least one. Required.
    pub issuers: Vec<RawIssuer>,
    /// Leeway for `exp` and `nbf`, 0 to 86400. Default 60.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Larger tokens are refused unparsed, 1 to 1048576. Default 8192.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Keep `Authorization` for the upstream. Default false (removed).
    #[serde(default)]
    pub forward_authorization: bool,
    /// Header name → claim name, copied from a valid token. Default `{}`.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Entries of the per-worker verified-token cache, 0 to 100000 (0: off). Default 4096.
    #[serde(default = "default_token_cache_size")]
    pub token_cache_size: usize,
    /// Scope → scopes it implies, applied transitively. Default `{}`.
    #[serde(default)]
    pub scope_implies: BTreeMap<String, Vec<String>>,
    /// Largest JSON-RPC body inspected, 1 to 67108864. Default 1048576.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Hold a request's headers until its body is decided (needs Envoy's
    /// `allow_on_headers_stop_iteration`); false lets them go first. Default true.
    #[serde(default = "default_true")]
    pub hold_headers_for_body: bool,
    /// How long a body to be inspected may take to arrive whole, 1 to 600000. Default 10000.
    #[serde(default = "default_body_wait_ms")]
    pub body_wait_ms: u64,
}

fn default_clock_skew() -> u64 {
    DEFAULT_CLOCK_SKEW
}

fn default_max_token_bytes() -> usize {
    DEFAULT_MAX_TOKEN_BYTES
}

fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

fn default_token_cache_size() -> usize {
    DEFAULT_TOKEN_CACHE_SIZE
}

fn default_true() -> bool {
    true
}

fn default_body_wait_ms() -> u64 {
    DEFAULT_BODY_WAIT_MS
}

/// One protected resource as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    /// The canonical resource URI, exactly as clients use it. Required.
    pub resource: String,
    /// Issuers whose tokens are accepted, emitted verbatim in the metadata; at least one.
    pub authorization_servers: Vec<String>,
    /// Advertised in the metadata. Default `[]`.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Every protected request needs all of them. Default `[]`.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Extra `aud` values accepted besides `resource`. Default `[]`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// In the metadata. Default absent.
    pub resource_name: Option<String>,
    /// In the metadata. Default absent.
    pub resource_documentation: Option<String>,
    /// Tool name → scopes a `tools/call` of it needs. Default `{}`.
    #[serde(default)]
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    /// JSON-RPC method → scopes it needs. Default `{}`.
    #[serde(default)]
    pub method_scopes: BTreeMap<String, Vec<String>>,
}

/// One trusted issuer as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// Compared with a token's `iss` byte for byte. Required.
    pub issuer: String,
    /// Inline RFC 7517 key set. Default absent.
    pub jwks: Option<Value>,
    /// Where keys are fetched, through `cluster`. Default absent.
    pub jwks_uri: Option<String>,
    /// The Envoy cluster keys are fetched through (alone: discovery). Default absent.
    pub cluster: Option<String>,
    /// Allow-list. Default RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    pub algorithms: Option<Vec<String>>,
    /// Fetched keys: lifetime without `max-age`, 60 to 86400. Default 900.
    pub jwks_cache_seconds: Option<u64>,
    /// Fetched keys: least time between unknown-`kid` refetches, 1 to 3600. Default 30.
    pub jwks_refetch_interval_seconds: Option<u64>,
    /// Fetched keys: timeout of each fetch, 100 to 60000. Default 5000.
    pub jwks_fetch_timeout_ms: Option<u64>,
    /// Fetched keys: wait for the first key set before a 503, 0 to 60000. Default 5000.
    pub jwks_wait_ms: Option<u64>,
}

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
    /// `resource` first, then the extra `audiences`.
    pub audiences: Vec<String>,
    pub required_scopes: Vec<String>,
    /// Tool name → scopes a `tools/call` of it needs on top of `required_scopes` (README, MCP-aware authorization).
    pub tool_scopes: HashMap<String, Vec<String>>,
    /// JSON-RPC method → scopes it needs on top of `required_scopes`.
    pub method_scopes: HashMap<String, Vec<String>>,
    pub challenge: ResourceChallenge,
}

impl ProtectedResource {
    /// Whether POST bodies on this resource are read before anything is forwarded.
    pub fn inspects_body(&self) -> bool {
        !self.tool_scopes.is_empty() || !self.method_scopes.is_empty()
    }
}

/// The compiled configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub resources: Vec<ProtectedResource>,
    pub issuers: Vec<Issuer>,
    pub clock_skew: u64,
    pub max_token_bytes: usize,
    pub forward_authorization: bool,
    /// Entries of the per-worker verified-token cache (0 disables it).
    pub token_cache_size: usize,
    /// `(header, claim)`, header names lower-cased.
    pub claim_headers: Vec<(String, String)>,
    /// `scope_implies`, closed transitively.
    pub implications: Implications,
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
        let claim_headers = compile_claim_headers(raw.claims_to_headers)?;
        Ok(Config {
            resources,
            issuers,
            clock_skew: raw.clock_skew_seconds,
            max_token_bytes: raw.max_token_bytes,
            forward_authorization: raw.forward_authorization,
            token_cache_size: raw.token_cache_size,
            claim_headers,
            implications,
            max_body_bytes: raw.max_body_bytes,
            hold_headers_for_body: raw.hold_headers_for_body,
            body_wait_ms: raw.body_wait_ms,
            warnings,
        })
    }
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

fn check_scopes(path: &str, scopes: &[String]) -> Result<(), ConfigError> {
    for (i, scope) in scopes.iter().enumerate() {
        if !is_scope_token(scope) {
            return Err(err(
                format!("{path}[{i}]"),
                ConfigErrorKind::InvalidScope(scope.clone()),
            ));
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

fn compile_implications(raw: &BTreeMap<String, Vec<String>>) -> Result<Implications, ConfigError> {
    for (scope, implied) in raw {
        let at = format!("scope_implies.{scope}");
        if !is_scope_token(scope) {
            return Err(err(at, ConfigErrorKind::InvalidScope(scope.clone())));
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
        issuers: accepted,
        audiences,
        required_scopes: raw.required_scopes,
        tool_scopes,
        method_scopes,
        challenge,
        resource: raw.resource,
        url,
    })
}

fn compile_issuer(
    path: &str,
    raw: RawIssuer,
    warnings: &mut Vec<String>,
) -> Result<Issuer, ConfigError> {
    if !is_plain_text(&raw.issuer) {
        return Err(err(format!("{path}.issuer"), ConfigErrorKind::InvalidText));
    }
    let algorithms = match &raw.algorithms {
        None => AlgSet::all(),
        Some(list) if list.is_empty() => {
            return Err(err(format!("{path}.algorithms"), ConfigErrorKind::Empty))
        }
        Some(list) => {
            let mut set = AlgSet::empty();
            for (i, name) in list.iter().enumerate() {
                let at = format!("{path}.algorithms[{i}]");
                match Alg::parse(name) {
                    Ok(alg) => set.insert(alg),
                    Err(AlgRejection::Forbidden) => {
                        return Err(err(at, ConfigErrorKind::ForbiddenAlgorithm(name.clone())))
                    }
                    Err(AlgRejection::Unsupported) => {
                        return Err(err(at, ConfigErrorKind::UnsupportedAlgorithm(name.clone())))
                    }
                }
            }
            set
        }
    };
    let keys = match (&raw.jwks, &raw.jwks_uri, &raw.cluster) {
        (Some(jwks), None, None) => {
            if let Some(field) = raw.tunable_set() {
                return Err(err(
                    format!("{path}.{field}"),
                    ConfigErrorKind::KeySource(
                        "applies only to fetched keys (jwks_uri or cluster)",
                    ),
                ));
            }
            KeySource::Inline(compile_inline_jwks(path, jwks, algorithms, warnings)?)
        }
        (None, jwks_uri, Some(cluster)) => {
            let cluster = cluster.clone();
            if !is_plain_text(&cluster) {
                return Err(err(format!("{path}.cluster"), ConfigErrorKind::InvalidText));
            }
            let jwks_uri = match jwks_uri {
                Some(uri) => Some(
                    HttpUrl::parse(uri)
                        .map_err(|e| err(format!("{path}.jwks_uri"), ConfigErrorKind::Url(e)))?,
                ),
                None => {
                    HttpUrl::parse(&raw.issuer)
                        .map_err(|e| err(format!("{path}.issuer"), ConfigErrorKind::Url(e)))?;
                    None
                }
            };
            let policy = compile_policy(path, &raw)?;
            KeySource::Remote {
                cluster,
                jwks_uri,
                policy,
            }
        }
        (None, Some(_), None) => {
            return Err(err(
                format!("{path}.cluster"),
                ConfigErrorKind::KeySource("jwks_uri needs the Envoy cluster to fetch it through"),
            ))
        }
        (None, None, None) => {
            return Err(err(
                path,
                ConfigErrorKind::KeySource(
                    "no key source: give jwks, or jwks_uri and cluster, or cluster alone",
                ),
            ))
        }
        (Some(_), _, _) => {
            return Err(err(
                format!("{path}.jwks"),
                ConfigErrorKind::KeySource("give either inline jwks or jwks_uri/cluster, not both"),
            ))
        }
    };
    Ok(Issuer {
        issuer: raw.issuer,
        algorithms,
        keys,
    })
}

impl RawIssuer {
    /// The first fetch tunable that is set, if any.
    fn tunable_set(&self) -> Option<&'static str> {
        [
            ("jwks_cache_seconds", self.jwks_cache_seconds),
            (
                "jwks_refetch_interval_seconds",
                self.jwks_refetch_interval_seconds,
            ),
            ("jwks_fetch_timeout_ms", self.jwks_fetch_timeout_ms),
            ("jwks_wait_ms", self.jwks_wait_ms),
        ]
        .into_iter()
        .find_map(|(name, v)| v.map(|_| name))
    }
}

fn compile_policy(path: &str, raw: &RawIssuer) -> Result<FetchPolicy, ConfigError> {
    let defaults = FetchPolicy::default();
    let bounded = |name: &str, value: Option<u64>, default: u64, min: u64, max: u64| match value {
        None => Ok(default),
        Some(v) => in_range(format!("{path}.{name}"), v, min, max),
    };
    Ok(FetchPolicy {
        cache_seconds: bounded(
            "jwks_cache_seconds",
            raw.jwks_cache_seconds,
            defaults.cache_seconds,
            MIN_CACHE_SECONDS,
            MAX_CACHE_SECONDS,
        )?,
        refetch_interval_seconds: bounded(
            "jwks_refetch_interval_seconds",
            raw.jwks_refetch_interval_seconds,
            defaults.refetch_interval_seconds,
            1,
            3600,
        )?,
        fetch_timeout_ms: bounded(
            "jwks_fetch_timeout_ms",
            raw.jwks_fetch_timeout_ms,
            defaults.fetch_timeout_ms,
            100,
            60_000,
        )?,
        wait_ms: bounded(
            "jwks_wait_ms",
            raw.jwks_wait_ms,
            defaults.wait_ms,
            0,
            60_000,
        )?,
    })
}

fn compile_inline_jwks(
    path: &str,
    jwks: &Value,
    algorithms: AlgSet,
    warnings: &mut Vec<String>,
) -> Result<KeySet, ConfigError> {
    let at = format!("{path}.jwks");
    let (set, unused) =
        KeySet::from_jwks(jwks).map_err(|e| err(&at, ConfigErrorKind::Jwks(e.to_string())))?;
    for (i, outcome) in unused {
        match outcome {
            JwkOutcome::Invalid { member, reason } => {
                return Err(err(
                    format!("{at}.keys[{i}].{member}"),
                    ConfigErrorKind::InvalidKey(reason),
                ))
            }
            JwkOutcome::Skipped(why) => warnings.push(format!("{at}.keys[{i}]: skipped: {why}")),
            JwkOutcome::Usable(_) => {}
        }
    }
    let usable = set
        .keys()
        .iter()
        .any(|k| algorithms.iter().any(|a| k.accepts(a)));
    if !usable {
        return Err(err(
            &at,
            ConfigErrorKind::Jwks("has no key usable with the allowed algorithms".into()),
        ));
    }
    Ok(set)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::tests::fixture;
    use serde_json::json;

    /// A valid configuration with two resources on different hosts, as JSON.
    pub fn base_json() -> Value {
        json!({
            "resources": [
                {
                    "resource": "https://mcp.example.com/mcp",
                    "authorization_servers": ["https://auth.example.com"],
                    "scopes_supported": ["mcp:read", "mcp:write"],
                    "required_scopes": ["mcp:read"],
                    "resource_name": "Example MCP"
                },
                {
                    "resource": "https://other.example.com/tools",
                    "authorization_servers": ["https://auth.example.com", "https://second.example.com/tenant"]
                }
            ],
            "issuers": [
                { "issuer": "https://auth.example.com", "jwks": fixture("jwks.json") },
                { "issuer": "https://second.example.com/tenant", "jwks": {"keys": [fixture("ec-p256.jwk.json")]},
                  "algorithms": ["ES256"] }
            ],
            "claims_to_headers": { "X-MCP-Subject": "sub" }
        })
    }

    /// `base_json` with the first issuer's keys fetched (discovery through cluster `auth`).
    pub fn remote_json() -> Value {
        let mut v = base_json();
        v["issuers"][0] = json!({"issuer": "https://auth.example.com", "cluster": "auth"});
        v
    }

    pub fn compile(value: &Value) -> Result<Config, ConfigError> {
        Config::from_json(value.to_string().as_bytes())
    }

    pub fn base() -> Config {
        compile(&base_json()).unwrap()
    }

    fn error_of(value: Value) -> (String, &'static str) {
        let e = compile(&value).unwrap_err();
        (e.path.clone(), e.kind.code())
    }

    /// `value` with the member or element at `pointer` set (created if missing).
    fn with(mut value: Value, pointer: &str, new: Value) -> Value {
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        match value.pointer_mut(parent).unwrap() {
            Value::Array(items) => items[last.parse::<usize>().unwrap()] = new,
            Value::Object(map) => {
                map.insert(last.to_string(), new);
            }
            other => panic!("cannot set {pointer} in {other}"),
        }
        value
    }

    #[test]
    fn compiles_the_example_with_documented_defaults() {
        let c = base();
        assert_eq!(c.clock_skew, 60);
        assert_eq!(c.max_token_bytes, 8192);
        assert!(!c.forward_authorization);
        assert_eq!(c.token_cache_size, 4096);
        assert!(c.hold_headers_for_body);
        assert_eq!(c.body_wait_ms, 10_000);
        assert_eq!(
            c.claim_headers,
            vec![("x-mcp-subject".to_string(), "sub".to_string())]
        );
        let r = &c.resources[0];
        assert_eq!(r.path_prefix, "/mcp");
        assert_eq!(r.metadata_path, "/.well-known/oauth-protected-resource/mcp");
        assert_eq!(
            r.metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(r.audiences, vec!["https://mcp.example.com/mcp"]);
        assert_eq!(c.resources[1].issuers, vec![0, 1]);
        assert!(c.issuers[1].algorithms.contains(Alg::Es256));
        assert!(!c.issuers[1].algorithms.contains(Alg::Rs256));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn rejects_unknown_fields_with_their_path() {
        let mut top = base_json();
        top["extra"] = json!(1);
        assert_eq!(error_of(top), ("extra".into(), "syntax"));
        let nested = with(base_json(), "/resources/0/scope", json!("x"));
        assert_eq!(error_of(nested).0, "resources[0].scope");
        let mut issuer = base_json();
        issuer["issuers"][0]["audience"] = json!("x");
        assert_eq!(error_of(issuer).0, "issuers[0].audience");
    }

    #[test]
    fn rejects_wrong_types_and_missing_fields() {
        assert_eq!(
            error_of(with(base_json(), "/clock_skew_seconds", json!(-1))).1,
            "syntax"
        );
        assert_eq!(
            error_of(with(base_json(), "/forward_authorization", json!("yes"))).1,
            "syntax"
        );
        let mut missing = base_json();
        missing["resources"][0]
            .as_object_mut()
            .unwrap()
            .remove("resource");
        let e = compile(&missing).unwrap_err();
        assert_eq!(e.path, "resources[0]");
        assert!(e.to_string().contains("missing field `resource`"), "{e}");
        assert_eq!(
            Config::from_json(b"not json").unwrap_err().kind.code(),
            "syntax"
        );
    }

    #[test]
    fn each_authorization_server_must_name_a_configured_issuer() {
        let e = compile(&with(
            base_json(),
            "/resources/1/authorization_servers/1",
            json!("https://second.example.com/tenant/"),
        ))
        .unwrap_err();
        assert_eq!(e.path, "resources[1].authorization_servers[1]");
        assert_eq!(e.kind.code(), "unknown_issuer");
        assert!(e
            .to_string()
            .contains("no issuer entry \"https://second.example.com/tenant/\""));
        assert_eq!(
            error_of(with(
                base_json(),
                "/resources/0/authorization_servers",
                json!([])
            )),
            ("resources[0].authorization_servers".into(), "empty")
        );
    }

    #[test]
    fn validates_resource_urls() {
        let cases = [
            ("mcp.example.com/mcp", "invalid_url"),
            ("https://mcp.example.com/mcp#x", "invalid_url"),
            ("https://mcp.example.com/mcp?x=1", "resource_path"),
            ("https://mcp.example.com/a/../mcp", "resource_path"),
            ("https://mcp.example.com/%6Dcp", "resource_path"),
        ];
        for (url, code) in cases {
            let e = compile(&with(base_json(), "/resources/0/resource", json!(url))).unwrap_err();
            assert_eq!(
                (e.path.as_str(), e.kind.code()),
                ("resources[0].resource", code),
                "{url}"
            );
        }
        assert_eq!(
            error_of(with(base_json(), "/resources", json!([]))),
            ("resources".into(), "empty")
        );
        let same = with(
            base_json(),
            "/resources/1/resource",
            json!("https://mcp.example.com/mcp/"),
        );
        assert_eq!(
            error_of(same),
            ("resources[1].resource".into(), "duplicate")
        );
    }

    #[test]
    fn validates_scopes_as_rfc6749_tokens() {
        for bad in ["", "a b", "a\"b", "a\\b", "é"] {
            let e = compile(&with(
                base_json(),
                "/resources/0/required_scopes/0",
                json!(bad),
            ))
            .unwrap_err();
            assert_eq!(
                (e.path.as_str(), e.kind.code()),
                ("resources[0].required_scopes[0]", "invalid_scope")
            );
        }
        let dup = with(
            base_json(),
            "/resources/0/scopes_supported/1",
            json!("mcp:read"),
        );
        assert_eq!(
            error_of(dup),
            ("resources[0].scopes_supported[1]".into(), "duplicate")
        );
    }

    #[test]
    fn refuses_none_hmac_and_unknown_algorithms() {
        let cases = [
            ("HS256", "forbidden_algorithm"),
            ("none", "forbidden_algorithm"),
            ("ES512", "unsupported_algorithm"),
        ];
        for (alg, code) in cases {
            let e = compile(&with(base_json(), "/issuers/1/algorithms/0", json!(alg))).unwrap_err();
            assert_eq!(
                (e.path.as_str(), e.kind.code()),
                ("issuers[1].algorithms[0]", code)
            );
        }
        assert_eq!(
            error_of(with(base_json(), "/issuers/1/algorithms", json!([]))),
            ("issuers[1].algorithms".into(), "empty")
        );
        // The only key is EC P-256: allowing just RS256 leaves nothing usable.
        assert_eq!(
            error_of(with(base_json(), "/issuers/1/algorithms", json!(["RS256"]))),
            ("issuers[1].jwks".into(), "invalid_jwks")
        );
    }

    #[test]
    fn needs_exactly_one_key_source() {
        let issuer = |extra: Value| {
            let mut v = base_json();
            let mut entry = json!({"issuer": "https://auth.example.com"});
            for (k, val) in extra.as_object().unwrap() {
                entry[k] = val.clone();
            }
            v["issuers"][0] = entry;
            v
        };
        assert_eq!(
            error_of(issuer(json!({}))),
            ("issuers[0]".into(), "key_source")
        );
        assert_eq!(
            error_of(issuer(json!({"jwks_uri": "https://auth.example.com/jwks"}))),
            ("issuers[0].cluster".into(), "key_source")
        );
        assert_eq!(
            error_of(issuer(
                json!({"jwks": fixture("jwks.json"), "cluster": "auth"})
            )),
            ("issuers[0].jwks".into(), "key_source")
        );
        let remote = compile(&issuer(
            json!({"jwks_uri": "https://auth.example.com/jwks", "cluster": "auth"}),
        ))
        .unwrap();
        assert!(
            matches!(&remote.issuers[0].keys, KeySource::Remote { cluster, jwks_uri: Some(_), policy } if cluster == "auth" && *policy == FetchPolicy::default())
        );
        let discovered = compile(&issuer(json!({"cluster": "auth"}))).unwrap();
        assert!(matches!(
            &discovered.issuers[0].keys,
            KeySource::Remote { jwks_uri: None, .. }
        ));
    }

    #[test]
    fn inline_keys_must_be_valid_and_unsupported_ones_are_skipped_with_a_warning() {
        let mut broken = fixture("rsa-a.jwk.json");
        broken["n"] = json!("%%%");
        let e = compile(&with(base_json(), "/issuers/0/jwks/keys/1", broken)).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.kind.code()),
            ("issuers[0].jwks.keys[1].n", "invalid_key")
        );
        let c = compile(&with(
            base_json(),
            "/issuers/0/jwks/keys/1",
            json!({"kty": "oct", "k": "AA"}),
        ))
        .unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].starts_with("issuers[0].jwks.keys[1]: skipped"),
            "{:?}",
            c.warnings
        );
        assert_eq!(
            error_of(with(base_json(), "/issuers/0/jwks", json!({"keys": []}))),
            ("issuers[0].jwks".into(), "invalid_jwks")
        );
        assert_eq!(
            error_of(with(base_json(), "/issuers/0/jwks", json!([]))),
            ("issuers[0].jwks".into(), "invalid_jwks")
        );
    }

    #[test]
    fn fetch_tunables_are_bounded_and_only_for_fetched_keys() {
        let mut v = base_json();
        v["issuers"][0] = json!({"issuer": "https://auth.example.com", "cluster": "auth",
            "jwks_cache_seconds": 120, "jwks_refetch_interval_seconds": 5, "jwks_fetch_timeout_ms": 900, "jwks_wait_ms": 0});
        let c = compile(&v).unwrap();
        let KeySource::Remote { policy, .. } = &c.issuers[0].keys else {
            panic!()
        };
        assert_eq!(
            *policy,
            FetchPolicy {
                cache_seconds: 120,
                refetch_interval_seconds: 5,
                fetch_timeout_ms: 900,
                wait_ms: 0
            }
        );
        v["issuers"][0]["jwks_cache_seconds"] = json!(10);
        assert_eq!(
            error_of(v),
            ("issuers[0].jwks_cache_seconds".into(), "out_of_range")
        );
        let inline = with(base_json(), "/issuers/0/jwks_wait_ms", json!(100));
        assert_eq!(
            error_of(inline),
            ("issuers[0].jwks_wait_ms".into(), "key_source")
        );
    }

    #[test]
    fn compiles_per_tool_and_method_scopes_and_the_scope_hierarchy() {
        let mut v = base_json();
        v["resources"][0]["tool_scopes"] = json!({"delete_all": ["mcp:admin"]});
        v["resources"][0]["method_scopes"] = json!({"resources/read": ["mcp:read"]});
        v["scope_implies"] = json!({"mcp:admin": ["mcp:write"], "mcp:write": ["mcp:read"]});
        let c = compile(&v).unwrap();
        assert!(c.resources[0].inspects_body());
        assert!(!c.resources[1].inspects_body());
        assert_eq!(c.implications["mcp:admin"], ["mcp:write", "mcp:read"]);
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        v["scope_implies"] = json!({"a": ["b"], "b": ["a"]});
        let e = compile(&v).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.kind.code()),
            ("scope_implies.a", "scope_cycle")
        );
        assert!(e.to_string().contains("a -> b -> a"), "{e}");
        v["scope_implies"] = json!({});
        v["resources"][0]["tool_scopes"] = json!({"x": ["bad scope"]});
        assert_eq!(
            error_of(v.clone()),
            ("resources[0].tool_scopes.x[0]".into(), "invalid_scope")
        );
        v["resources"][0]["tool_scopes"] = json!({});
        v["max_body_bytes"] = json!(0);
        assert_eq!(
            error_of(v.clone()),
            ("max_body_bytes".into(), "out_of_range")
        );
        v["max_body_bytes"] = json!(64);
        assert_eq!(compile(&v).map(|c| c.max_body_bytes).ok(), Some(64));
    }

    #[test]
    fn bounds_numeric_settings() {
        assert_eq!(
            error_of(with(base_json(), "/clock_skew_seconds", json!(86_401))).1,
            "out_of_range"
        );
        let skew = compile(&with(base_json(), "/clock_skew_seconds", json!(3600)));
        assert_eq!(skew.map(|c| c.clock_skew).ok(), Some(3600));
        let mut v = base_json();
        v["max_token_bytes"] = json!(0);
        assert_eq!(
            error_of(v.clone()),
            ("max_token_bytes".into(), "out_of_range")
        );
        v["max_token_bytes"] = json!(1024 * 1024 + 1);
        assert_eq!(
            error_of(v.clone()),
            ("max_token_bytes".into(), "out_of_range")
        );
        // Small limits are an operator's choice (and how tests reach "too large" cheaply).
        v["max_token_bytes"] = json!(100);
        assert_eq!(compile(&v).map(|c| c.max_token_bytes).ok(), Some(100));
        let mut v = base_json();
        v["token_cache_size"] = json!(100_001);
        assert_eq!(error_of(v), ("token_cache_size".into(), "out_of_range"));
    }

    #[test]
    fn claim_headers_must_be_valid_unreserved_names() {
        let cases = [
            (json!({"bad name": "sub"}), "invalid_header_name"),
            (json!({":path": "sub"}), "invalid_header_name"),
            (json!({"Authorization": "sub"}), "reserved_header"),
            (json!({"mcp-session-id": "sub"}), "reserved_header"),
            (json!({"x-envoy-original-path": "sub"}), "reserved_header"),
            (json!({"x-a": "sub", "X-A": "iss"}), "duplicate"),
            (json!({"x-a": ""}), "invalid_text"),
        ];
        for (map, code) in cases {
            let mut v = base_json();
            v["claims_to_headers"] = map.clone();
            assert_eq!(error_of(v).1, code, "{map}");
        }
    }

    #[test]
    fn refuses_resource_paths_that_differ_only_in_case() {
        let mut v = base_json();
        v["resources"][1]["resource"] = json!("https://other.example.com/MCP");
        let e = compile(&v).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.kind.code()),
            ("resources[1].resource", "path_case")
        );
        assert!(e.to_string().contains("resources[0]"), "{e}");
        // Nested paths in another case are distinct resources.
        v["resources"][1]["resource"] = json!("https://other.example.com/MCP/admin");
        assert!(compile(&v).is_ok());
    }

    #[test]
    fn body_hold_settings_are_a_bool_and_a_bounded_wait() {
        let mut v = base_json();
        v["hold_headers_for_body"] = json!(false);
        v["body_wait_ms"] = json!(250);
        let c = compile(&v).unwrap();
        assert!(!c.hold_headers_for_body);
        assert_eq!(c.body_wait_ms, 250);
        v["body_wait_ms"] = json!(0);
        assert_eq!(error_of(v.clone()), ("body_wait_ms".into(), "out_of_range"));
        v["body_wait_ms"] = json!(600_001);
        assert_eq!(error_of(v.clone()), ("body_wait_ms".into(), "out_of_range"));
        v["body_wait_ms"] = json!(1);
        v["hold_headers_for_body"] = json!("yes");
        assert_eq!(error_of(v), ("hold_headers_for_body".into(), "syntax"));
    }
}
