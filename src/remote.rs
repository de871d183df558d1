//! Remote keys (README, "Remote keys"): when to fetch an issuer's JWKS, from where (configured `jwks_uri`,
//! or discovered through RFC 8414 then OpenID Connect Discovery), and what a response means.
//!
//! This is a pure state machine over [`FetchState`], a small record every worker shares
//! through proxy-wasm shared data: the glue drives it from `on_tick` and
//! `on_http_call_response`, and compare-and-swap on that record makes one worker fetch for
//! all of them. Good keys are never replaced by a bad response; a failed fetch keeps the last
//! good keys and retries with exponential back-off.

use crate::keys::{JwkOutcome, KeySet, KeysError};
use crate::url::HttpUrl;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest JWKS or discovery document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
pub const MIN_CACHE_SECONDS: u64 = 60;
pub const MAX_CACHE_SECONDS: u64 = 24 * 3600;
const MAX_BACKOFF_SECONDS: u64 = 300;

/// Per-issuer tunables (configuration fields, documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Key lifetime when the response has no `Cache-Control: max-age`.
    pub cache_seconds: u64,
    /// Least time between two refetches caused by an unknown `kid`.
    pub refetch_interval_seconds: u64,
    pub fetch_timeout_ms: u64,
    /// How long a request waits for the issuer's first key set before a 503.
    pub wait_ms: u64,
}

impl Default for FetchPolicy {
    fn default() -> FetchPolicy {
        FetchPolicy {
            cache_seconds: 900,
            refetch_interval_seconds: 30,
            fetch_timeout_ms: 5000,
            wait_ms: 5000,
        }
    }
}

impl FetchPolicy {
    fn lease_seconds(&self) -> u64 {
        // Long enough for discovery plus the key set, two requests in a row.
        2 * self.fetch_timeout_ms.div_ceil(1000) + 1
    }
}

/// Why a fetch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Why {
    Initial,
    Refresh,
    Retry,
    UnknownKid,
}

/// Which document the next request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Jwks(String),
    /// RFC 8414 §3: `/.well-known/oauth-authorization-server` + issuer path.
    AuthorizationServerMetadata(String),
    /// OpenID Connect Discovery 1.0 §4: issuer + `/.well-known/openid-configuration`.
    OpenIdConfiguration(String),
}

impl Target {
    pub fn url(&self) -> &str {
        match self {
            Target::Jwks(u)
            | Target::AuthorizationServerMetadata(u)
            | Target::OpenIdConfiguration(u) => u,
        }
    }
}

/// The shared fetch record of one issuer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchState {
    /// Bumped each time a different key set is stored; 0 = never loaded.
    pub version: u64,
    /// Bumped at the end of every fetch, successful or not (wakes waiting requests).
    pub generation: u64,
    pub fetched_at: u64,
    pub expires_at: u64,
    /// A worker is fetching until then.
    pub lease_until: u64,
    pub failures: u32,
    pub retry_at: u64,
    pub last_on_demand: u64,
    /// The key set URL found by discovery.
    pub discovered_jwks_uri: Option<String>,
    /// The RFC 7662 endpoint found by discovery (for an issuer whose tokens are introspected
    /// and whose `introspection.endpoint` is not configured).
    #[serde(default)]
    pub discovered_introspection_endpoint: Option<String>,
    /// Which discovery document is asked for next (see [`DiscoveryStep`]).
    pub discovery_step: DiscoveryStep,
    pub last_error: Option<String>,
    /// Identifies the key set bytes stored beside this record.
    pub digest: u64,
}

/// The discovery documents, in the order the MCP authorization specification (2026-07-28)
/// gives clients: for issuer `https://as/t`, `https://as/.well-known/oauth-authorization-server/t`
/// (RFC 8414 §3.1), `https://as/.well-known/openid-configuration/t`, then
/// `https://as/t/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4). An issuer
/// without a path skips the middle one (it would be the same URL as the last).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiscoveryStep {
    #[default]
    OAuthInserted,
    OpenIdInserted,
    OpenIdAppended,
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    Status(u16),
    TooLarge,
    Keys(KeysError),
    Discovery(&'static str),
    Timeout,
}

impl FetchError {
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::Status(_) => "http_status",
            FetchError::TooLarge => "too_large",
            FetchError::Keys(e) => e.code(),
            FetchError::Discovery(_) => "discovery",
            FetchError::Timeout => "timeout",
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Status(s) => write!(f, "HTTP status {s}"),
            FetchError::TooLarge => write!(f, "document larger than {MAX_DOCUMENT_BYTES} bytes"),
            FetchError::Keys(e) => write!(f, "JWK set {e}"),
            FetchError::Discovery(why) => f.write_str(why),
            FetchError::Timeout => f.write_str("no response (timeout or connection failure)"),
        }
    }
}

impl FetchState {
    fn lease_active(&self, now: u64) -> bool {
        self.lease_until > now
    }

    /// When a loaded key set is refreshed: three quarters into its lifetime, so fresh keys
    /// are in place before the old ones expire.
    pub fn refresh_at(&self) -> u64 {
        self.fetched_at + (self.expires_at.saturating_sub(self.fetched_at)) * 3 / 4
    }

    /// Whether a scheduled fetch is due at `now`.
    pub fn due(&self, now: u64) -> Option<Why> {
        if self.lease_active(now) || now < self.retry_at {
            return None;
        }
        if self.version == 0 {
            return Some(if self.failures > 0 {
                Why::Retry
            } else {
                Why::Initial
            });
        }
        if self.failures > 0 {
            return Some(Why::Retry);
        }
        (now >= self.refresh_at()).then_some(Why::Refresh)
    }

    /// Whether an unknown `kid` may trigger a refetch now (the refetch rate limit).
    pub fn may_refetch(&self, now: u64, policy: &FetchPolicy) -> bool {
        self.version > 0
            && !self.lease_active(now)
            && now
                >= self
                    .last_on_demand
                    .saturating_add(policy.refetch_interval_seconds)
    }

    /// Takes the fetch lease (the caller then compare-and-swaps this record).
    pub fn begin(&mut self, now: u64, why: Why, policy: &FetchPolicy) {
        self.lease_until = now + policy.lease_seconds();
        if why == Why::UnknownKid {
            self.last_on_demand = now;
        }
    }

    /// A key set was fetched; `digest` identifies its bytes.
    pub fn succeed(&mut self, now: u64, max_age: Option<u64>, digest: u64, policy: &FetchPolicy) {
        let ttl = max_age
            .unwrap_or(policy.cache_seconds)
            .clamp(MIN_CACHE_SECONDS, MAX_CACHE_SECONDS);
        if digest != self.digest || self.version == 0 {
            self.version += 1;
            self.digest = digest;
        }
        self.generation += 1;
        self.fetched_at = now;
        self.expires_at = now + ttl;
        self.lease_until = 0;
        self.failures = 0;
        self.retry_at = 0;
        self.last_error = None;
    }

    /// A fetch failed: keep the keys, retry after 1, 2, 4, ... seconds (at most 5 minutes).
    pub fn fail(&mut self, now: u64, error: &FetchError) {
        self.failures = self.failures.saturating_add(1);
        let backoff = 1u64 << (self.failures - 1).min(16);
        self.retry_at = now + backoff.min(MAX_BACKOFF_SECONDS);
        self.generation += 1;
        self.lease_until = 0;
        self.last_error = Some(error.to_string());
    }

    /// The next document to ask for, to fetch the keys.
    pub fn target(&self, issuer: &str, jwks_uri: Option<&HttpUrl>) -> Target {
        self.next(issuer, jwks_uri, Want::KEYS)
            .unwrap_or_else(|| self.discovery_target(issuer))
    }

    /// The next document to ask for what `want` says; `None` when everything is known (an
    /// issuer fetched only for its introspection endpoint, once it is discovered).
    pub fn next(&self, issuer: &str, jwks_uri: Option<&HttpUrl>, want: Want) -> Option<Target> {
        let need_endpoint = want.endpoint && self.discovered_introspection_endpoint.is_none();
        let need_jwks_uri = want.keys && jwks_uri.is_none() && self.discovered_jwks_uri.is_none();
        if need_endpoint || need_jwks_uri {
            return Some(self.discovery_target(issuer));
        }
        if !want.keys {
            return None;
        }
        if let Some(uri) = jwks_uri {
            return Some(Target::Jwks(format!(
                "{}{}{}",
                uri.origin(),
                uri.path,
                query_suffix(uri)
            )));
        }
        self.discovered_jwks_uri.clone().map(Target::Jwks)
    }

    /// The discovery document this record asks for next.
    pub fn discovery_target(&self, issuer: &str) -> Target {
        let appended = || {
            let trimmed = issuer.trim_end_matches('/');
            Target::OpenIdConfiguration(format!("{trimmed}/.well-known/openid-configuration"))
        };
        // Inserted: the well-known suffix goes between host and path.
        let Ok(url) = HttpUrl::parse(issuer) else {
            return appended();
        };
        let path = url.path.trim_end_matches('/');
        match self.discovery_step {
            DiscoveryStep::OAuthInserted => Target::AuthorizationServerMetadata(format!(
                "{}/.well-known/oauth-authorization-server{path}",
                url.origin()
            )),
            DiscoveryStep::OpenIdInserted if !path.is_empty() => Target::OpenIdConfiguration(
                format!("{}/.well-known/openid-configuration{path}", url.origin()),
            ),
            _ => appended(),
        }
    }

    /// Every discovery document URL for `issuer`, in the order they are tried.
    pub fn discovery_urls(issuer: &str) -> Vec<String> {
        let mut state = FetchState::default();
        let mut urls = vec![state.discovery_target(issuer).url().to_string()];
        while let Some(step) = state.next_discovery_step(issuer) {
            state.discovery_step = step;
            urls.push(state.discovery_target(issuer).url().to_string());
        }
        urls
    }

    /// The discovery step after the current one for `issuer`, if any is left.
    fn next_discovery_step(&self, issuer: &str) -> Option<DiscoveryStep> {
        let has_path =
            HttpUrl::parse(issuer).is_ok_and(|u| !u.path.trim_end_matches('/').is_empty());
        match self.discovery_step {
            DiscoveryStep::OAuthInserted if has_path => Some(DiscoveryStep::OpenIdInserted),
            DiscoveryStep::OAuthInserted | DiscoveryStep::OpenIdInserted => {
                Some(DiscoveryStep::OpenIdAppended)
            }
            DiscoveryStep::OpenIdAppended => None,
        }
    }

    /// Reads a discovery document for the keys. `Ok(true)`: the key set URL is known, fetch
    /// it next; `Ok(false)`: try the next discovery document; `Err`: the last one failed too.
    pub fn on_discovery(
        &mut self,
        target: &Target,
        issuer: &str,
        status: u16,
        body: &[u8],
    ) -> Result<bool, FetchError> {
        self.on_discovery_for(target, issuer, status, body, Want::KEYS)
    }

    /// Reads a discovery document for what `want` needs discovered; as [`Self::on_discovery`].
    pub fn on_discovery_for(
        &mut self,
        target: &Target,
        issuer: &str,
        status: u16,
        body: &[u8],
        want: Want,
    ) -> Result<bool, FetchError> {
        let result = read_discovery(issuer, status, body, want);
        match (result, target) {
            (Ok(found), _) => {
                if found.jwks_uri.is_some() {
                    self.discovered_jwks_uri = found.jwks_uri;
                }
                if found.introspection_endpoint.is_some() {
                    self.discovered_introspection_endpoint = found.introspection_endpoint;
                }
                Ok(true)
            }
            (Err(e), target) => {
                // Only an answer to the document this record asks for moves it on.
                let next = (*target == self.discovery_target(issuer))
                    .then(|| self.next_discovery_step(issuer))
                    .flatten();
                match next {
                    Some(step) => {
                        self.discovery_step = step;
                        Ok(false)
                    }
                    None => {
                        // Start over from RFC 8414 next time.
                        self.discovery_step = DiscoveryStep::default();
                        Err(e)
                    }
                }
            }
        }
    }
}

fn query_suffix(uri: &HttpUrl) -> String {
    uri.query
        .as_ref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default()
}

/// What a fetch is for: the keys (`keys`; their URL is discovered unless configured), the
/// introspection endpoint (`endpoint`: discovered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub keys: bool,
    pub endpoint: bool,
}

impl Want {
    pub const KEYS: Want = Want {
        keys: true,
        endpoint: false,
    };
    /// Only the document itself (an issuer's metadata served at a resource's origin).
    pub const DOCUMENT: Want = Want {
        keys: false,
        endpoint: false,
    };
}

/// What a discovery document names.
#[derive(Debug, Default)]
struct Discovered {
    jwks_uri: Option<String>,
    introspection_endpoint: Option<String>,
}

fn read_discovery(
    issuer: &str,
    status: u16,
    body: &[u8],
    want: Want,
) -> Result<Discovered, FetchError> {
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(FetchError::TooLarge);
    }
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| FetchError::Discovery("discovery document is not JSON"))?;
    // RFC 8414 §3.3 / OIDC Discovery §4.3: the document must name the same issuer.
    if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
        return Err(FetchError::Discovery(
            "discovery document names another issuer",
        ));
    }
    let url = |member: &str, bad: &'static str| -> Result<Option<String>, FetchError> {
        match doc.get(member).and_then(|v| v.as_str()) {
            None => Ok(None),
            Some(uri) => HttpUrl::parse(uri)
                .map(|_| Some(uri.to_string()))
                .map_err(|_| FetchError::Discovery(bad)),
        }
    };
    let found = Discovered {
        jwks_uri: url("jwks_uri", "discovery jwks_uri is not an http(s) URL")?,
        introspection_endpoint: url(
            "introspection_endpoint",
            "discovery introspection_endpoint is not an http(s) URL",
        )?,
    };
    if want.keys && found.jwks_uri.is_none() {
        return Err(FetchError::Discovery("discovery document has no jwks_uri"));
    }
    if want.endpoint && found.introspection_endpoint.is_none() {
        return Err(FetchError::Discovery(
            "discovery document has no introspection_endpoint",
        ));
    }
    Ok(found)
}

/// Reads a JWKS response. Returns the key set and a line per skipped key.
pub fn read_jwks(status: u16, body: &[u8]) -> Result<(KeySet, Vec<String>), FetchError> {
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(FetchError::TooLarge);
    }
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| FetchError::Keys(KeysError::NotJson))?;
    let (set, unused) = KeySet::from_jwks(&doc).map_err(FetchError::Keys)?;
    if set.is_empty() {
        return Err(FetchError::Keys(KeysError::NoUsableKey));
    }
    let skipped = unused
        .into_iter()
        .map(|(i, outcome)| match outcome {
            JwkOutcome::Skipped(why) => format!("keys[{i}] skipped: {why}"),
            JwkOutcome::Invalid { member, reason } => {
                format!("keys[{i}].{member} {reason}: skipped")
            }
            JwkOutcome::Usable(_) => String::new(),
        })
        .collect();
    Ok((set, skipped))
}

/// `max-age` from a `Cache-Control` value (RFC 9111 §5.2.2.1); `no-store`/`no-cache` mean 0.
pub fn max_age(cache_control: Option<&str>) -> Option<u64> {
    let value = cache_control?;
    let mut found = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(0);
        }
        if name.eq_ignore_ascii_case("max-age") {
            // RFC 9111 §1.2.2: delta-seconds too large to represent mean the largest value.
            found = arg
                .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
                .map(|a| a.parse::<u64>().unwrap_or(u64::MAX));
        }
    }
    found
}

/// Tells workers whether a refetched key set changed.
pub fn digest(bytes: &[u8]) -> u64 {
    crate::keys::fnv1a(&[bytes])
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn policy() -> FetchPolicy {
        FetchPolicy::default()
    }

    fn loaded(max_age: Option<u64>) -> FetchState {
        let mut s = FetchState::default();
        s.begin(T0, Why::Initial, &policy());
        s.succeed(T0, max_age, 7, &policy());
        s
    }

    #[test]
    fn fetches_at_once_when_never_loaded_and_not_while_leased() {
        let mut s = FetchState::default();
        assert_eq!(s.due(T0), Some(Why::Initial));
        s.begin(T0, Why::Initial, &policy());
        assert_eq!(s.due(T0 + 1), None);
        assert_eq!(
            s.due(T0 + 100),
            Some(Why::Initial),
            "an abandoned lease expires"
        );
    }

    #[test]
    fn caches_for_max_age_bounded_and_refreshes_ahead_of_expiry() {
        let s = loaded(None);
        assert_eq!(s.expires_at, T0 + 900);
        assert_eq!(s.due(T0 + 600), None);
        assert_eq!(s.due(T0 + 675), Some(Why::Refresh));
        assert_eq!(loaded(Some(5)).expires_at, T0 + 60);
        assert_eq!(loaded(Some(10 * 86400)).expires_at, T0 + 86400);
        assert_eq!(loaded(Some(120)).due(T0 + 90), Some(Why::Refresh));
    }

    #[test]
    fn backs_off_exponentially_and_keeps_stale_keys() {
        let mut s = loaded(None);
        let version = s.version;
        s.begin(T0 + 700, Why::Refresh, &policy());
        s.fail(T0 + 700, &FetchError::Status(500));
        assert_eq!(s.version, version, "keys kept");
        assert_eq!(s.retry_at, T0 + 701);
        assert_eq!(s.due(T0 + 700), None);
        assert_eq!(s.due(T0 + 701), Some(Why::Retry));
        for _ in 0..3 {
            s.fail(T0 + 701, &FetchError::Timeout);
        }
        assert_eq!(s.retry_at, T0 + 701 + 8);
        for _ in 0..20 {
            s.fail(T0 + 800, &FetchError::Timeout);
        }
        assert_eq!(s.retry_at, T0 + 800 + MAX_BACKOFF_SECONDS);
        s.succeed(T0 + 2000, None, 7, &policy());
        assert_eq!(
            (s.failures, s.retry_at, s.version),
            (0, 0, version),
            "same bytes, same version"
        );
        s.succeed(T0 + 3000, None, 8, &policy());
        assert_eq!(s.version, version + 1);
    }

    #[test]
    fn rate_limits_unknown_kid_refetches() {
        let p = policy();
        let mut s = loaded(None);
        assert!(s.may_refetch(T0 + 1, &p));
        s.begin(T0 + 1, Why::UnknownKid, &p);
        assert!(!s.may_refetch(T0 + 2, &p), "in flight");
        s.succeed(T0 + 2, None, 7, &p);
        assert!(!s.may_refetch(T0 + 30, &p));
        assert!(s.may_refetch(T0 + 31, &p));
        // Scheduled fetches do not consume the window.
        let mut s = loaded(None);
        s.begin(T0 + 5, Why::Refresh, &p);
        s.succeed(T0 + 6, None, 7, &p);
        assert!(s.may_refetch(T0 + 6, &p));
        assert!(
            !FetchState::default().may_refetch(T0, &p),
            "nothing loaded yet: wait, do not refetch"
        );
    }

    #[test]
    fn builds_discovery_urls_per_rfc8414_then_oidc() {
        let mut s = FetchState::default();
        assert_eq!(
            s.target("https://as.example.com/tenant/1", None),
            Target::AuthorizationServerMetadata(
                "https://as.example.com/.well-known/oauth-authorization-server/tenant/1".into()
            )
        );
        assert_eq!(
            s.target("https://as.example.com", None).url(),
            "https://as.example.com/.well-known/oauth-authorization-server"
        );
        // The current document answers 404: move on, or start over after the last.
        let miss = |s: &mut FetchState, issuer: &str| {
            let t = s.target(issuer, None);
            s.on_discovery(&t, issuer, 404, b"")
        };
        let tenant = "https://as.example.com/tenant/1";
        assert_eq!(miss(&mut s, tenant), Ok(false));
        assert_eq!(
            s.target(tenant, None),
            Target::OpenIdConfiguration(
                "https://as.example.com/.well-known/openid-configuration/tenant/1".into()
            )
        );
        assert_eq!(miss(&mut s, tenant), Ok(false));
        assert_eq!(
            s.target(tenant, None),
            Target::OpenIdConfiguration(
                "https://as.example.com/tenant/1/.well-known/openid-configuration".into()
            )
        );
        // Without a path, the inserted and appended OpenID URLs are one: asked once.
        let mut root = FetchState::default();
        let host = "https://as.example.com";
        assert_eq!(miss(&mut root, host), Ok(false));
        assert_eq!(
            root.target(host, None).url(),
            "https://as.example.com/.well-known/openid-configuration"
        );
        assert_eq!(miss(&mut root, host), Err(FetchError::Status(404)));
        assert_eq!(root.discovery_step, DiscoveryStep::OAuthInserted);
        assert_eq!(
            FetchState::discovery_urls("https://as.example.com/tenant/1"),
            [
                "https://as.example.com/.well-known/oauth-authorization-server/tenant/1",
                "https://as.example.com/.well-known/openid-configuration/tenant/1",
                "https://as.example.com/tenant/1/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            FetchState::discovery_urls("https://as.example.com").len(),
            2
        );
        let oidc = s.target("https://as.example.com/tenant/1", None);
        let doc = br#"{"issuer":"https://as.example.com/tenant/1","jwks_uri":"https://keys.example.com/jwks"}"#;
        assert_eq!(
            s.on_discovery(&oidc, "https://as.example.com/tenant/1", 200, doc),
            Ok(true)
        );
        assert_eq!(
            s.target("https://as.example.com/tenant/1", None),
            Target::Jwks("https://keys.example.com/jwks".into())
        );
        let configured = HttpUrl::parse("https://as.example.com/jwks?v=2").unwrap();
        assert_eq!(
            FetchState::default()
                .target("https://x", Some(&configured))
                .url(),
            "https://as.example.com/jwks?v=2"
        );
    }

    #[test]
    fn refuses_discovery_documents_for_another_issuer_or_without_keys() {
        let issuer = "https://as.example.com";
        let cases: [(&[u8], &str); 4] = [
            (
                br#"{"issuer":"https://as.example.com/","jwks_uri":"https://k/j"}"#,
                "discovery document names another issuer",
            ),
            (
                br#"{"issuer":"https://as.example.com"}"#,
                "discovery document has no jwks_uri",
            ),
            (
                br#"{"issuer":"https://as.example.com","jwks_uri":"file:///etc/passwd"}"#,
                "discovery jwks_uri is not an http(s) URL",
            ),
            (b"<html>", "discovery document is not JSON"),
        ];
        for (body, why) in cases {
            let mut s = FetchState {
                discovery_step: DiscoveryStep::OpenIdAppended,
                ..FetchState::default()
            };
            let t = s.target(issuer, None);
            assert_eq!(
                s.on_discovery(&t, issuer, 200, body),
                Err(FetchError::Discovery(why))
            );
            assert_eq!(
                s.discovery_step,
                DiscoveryStep::OAuthInserted,
                "starts over from RFC 8414"
            );
        }
    }

    #[test]
    fn reads_jwks_responses_and_refuses_what_would_replace_good_keys_with_nothing() {
        let jwks = std::fs::read(format!(
            "{}/tests/fixtures/jwks.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let (set, skipped) = read_jwks(200, &jwks).unwrap();
        assert_eq!((set.len(), skipped.len()), (5, 0));
        assert_eq!(read_jwks(503, &jwks).unwrap_err(), FetchError::Status(503));
        assert_eq!(
            read_jwks(200, b"garbage").unwrap_err(),
            FetchError::Keys(KeysError::NotJson)
        );
        assert_eq!(
            read_jwks(200, br#"{"keys":[]}"#).unwrap_err(),
            FetchError::Keys(KeysError::NoUsableKey)
        );
        assert_eq!(
            read_jwks(200, br#"{"keys":[{"kty":"oct","k":"AA"}]}"#).unwrap_err(),
            FetchError::Keys(KeysError::NoUsableKey)
        );
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert_eq!(read_jwks(200, &big).unwrap_err(), FetchError::TooLarge);
        let mixed = br#"{"keys":[{"kty":"oct","k":"AA"},{"kty":"OKP","crv":"Ed25519","x":"pZIJzoNHgKL9XeD4AKKJxfYgrAGUnORL2i_OMBwlRlw"}]}"#;
        let (set, skipped) = read_jwks(200, mixed).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(
            skipped,
            ["keys[0] skipped: symmetric (oct) keys are never used"]
        );
    }

    #[test]
    fn reads_max_age_from_cache_control() {
        assert_eq!(max_age(Some("public, max-age=300")), Some(300));
        assert_eq!(max_age(Some("Max-Age=\"60\"")), Some(60));
        assert_eq!(
            max_age(Some("max-age=99999999999999999999999")),
            Some(u64::MAX),
            "too large to represent: the largest value (then bounded to 24 h)"
        );
        assert_eq!(max_age(Some("max-age=-5")), None);
        assert_eq!(max_age(Some("max-age=")), None);
        assert_eq!(max_age(Some("no-store")), Some(0));
        assert_eq!(max_age(Some("public")), None);
        assert_eq!(max_age(Some("max-age=abc")), None);
        assert_eq!(max_age(None), None);
    }

    #[test]
    fn shared_record_round_trips_through_json() {
        let s = loaded(Some(120));
        let bytes = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<FetchState>(&bytes).unwrap(), s);
        assert_ne!(digest(b"a"), digest(b"b"));
    }
}
