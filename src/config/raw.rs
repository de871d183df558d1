//! The plugin configuration as written (README, "Configuration"): serde structs that refuse
//! unknown fields, every field with its default. `super` compiles them.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::{
    DEFAULT_BODY_WAIT_MS, DEFAULT_CLOCK_SKEW, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_TOKEN_BYTES,
    DEFAULT_TOKEN_CACHE_SIZE,
};

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
    /// Origins (`scheme://host[:port]`, lower case) browsers may call from; others get 403
    /// (MCP 2026-07-28 transport security: DNS rebinding). Default absent: any origin.
    pub allowed_origins: Option<Vec<String>>,
    /// Set the decision as filter state for the access log (`mcp_oauth.outcome`, ...): about 2
    /// µs of Envoy CPU per value set. Default `true`.
    #[serde(default = "default_true")]
    pub audit_filter_state: bool,
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
    /// Answer the first authorization server's RFC 8414 metadata at this resource's origin,
    /// for MCP 2025-03-26 clients. Default `false`.
    #[serde(default)]
    pub origin_authorization_server_metadata: bool,
    /// Filter the results of `tools/list` to the tools the caller may call, marked
    /// `cacheScope: "private"`. Default `true` when `tool_scopes` is not empty, else `false`.
    pub filter_tools_list: Option<bool>,
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
    /// RFC 7662 introspection of this issuer's opaque tokens. Default absent.
    pub introspection: Option<RawIntrospection>,
}

/// How the filter introspects an issuer's tokens (RFC 7662).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// The endpoint. Default: the `introspection_endpoint` of the issuer's metadata.
    pub endpoint: Option<String>,
    /// The filter's client id at the authorization server. Required.
    pub client_id: String,
    /// The client secret, inline (for development). Exactly one of this and
    /// `client_secret_env`.
    pub client_secret: Option<String>,
    /// The wasm VM's environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// `client_secret_basic` or `client_secret_post`. Default `client_secret_basic`.
    pub auth_method: Option<String>,
    /// Longest an active answer is reused, 0 to 86400 (never past its `exp`). Default 60.
    pub cache_seconds: Option<u64>,
    /// How long an inactive answer is reused, 0 to 3600. Default 10.
    pub negative_cache_seconds: Option<u64>,
    /// Timeout of each call, 100 to 60000. Default 2000.
    pub timeout_ms: Option<u64>,
    /// Calls outstanding per worker before a request gets 503, 1 to 10000. Default 64.
    pub max_in_flight: Option<u64>,
}
