//! Compiling one trusted issuer (README, "issuers[]"): its algorithms, where its keys come from
//! (inline, fetched, discovered, or none for an issuer whose tokens are introspected), the
//! fetch tunables, and its RFC 7662 introspection client.

use super::raw::RawIssuer;
use super::{err, in_range, is_plain_text, ConfigError, ConfigErrorKind, Issuer, KeySource};
use crate::alg::{Alg, AlgRejection, AlgSet};
use crate::keys::{JwkOutcome, KeySet};
use crate::remote::{FetchPolicy, MAX_CACHE_SECONDS, MIN_CACHE_SECONDS};
use crate::url::HttpUrl;
use serde_json::Value;

pub(super) fn compile_issuer(
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
    let introspection = match &raw.introspection {
        Some(spec) => Some(compile_introspection(
            &format!("{path}.introspection"),
            spec,
            raw.cluster.as_deref(),
        )?),
        None => None,
    };
    let introspected = introspection.is_some();
    let both = || {
        err(
            format!("{path}.jwks"),
            ConfigErrorKind::KeySource("give either inline jwks or jwks_uri/cluster, not both"),
        )
    };
    let keys = match (&raw.jwks, &raw.jwks_uri, &raw.cluster) {
        (Some(_), Some(_), _) => return Err(both()),
        // With introspection or the origin's metadata document, `cluster` is for those calls:
        // inline keys may come with it (`Config::compile` checks one of them uses it).
        (Some(jwks), None, _) => {
            no_tunables(path, &raw)?;
            KeySource::Inline(compile_inline_jwks(path, jwks, algorithms, warnings)?)
        }
        // With introspection, `cluster` alone does not mean discovered keys.
        (None, None, Some(_)) if introspected => {
            no_tunables(path, &raw)?;
            KeySource::None
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
    };
    if introspection.is_some() {
        // Without a configured endpoint, discovery needs the issuer to be a URL.
        HttpUrl::parse(&raw.issuer)
            .map_err(|e| err(format!("{path}.issuer"), ConfigErrorKind::Url(e)))?;
    }
    if let Some(cluster) = &raw.cluster {
        if !is_plain_text(cluster) {
            return Err(err(format!("{path}.cluster"), ConfigErrorKind::InvalidText));
        }
    }
    Ok(Issuer {
        issuer: raw.issuer,
        algorithms,
        keys,
        introspection,
        cluster: raw.cluster,
    })
}

/// The fetch tunables apply only to fetched keys.
fn no_tunables(path: &str, raw: &RawIssuer) -> Result<(), ConfigError> {
    match raw.tunable_set() {
        Some(field) => Err(err(
            format!("{path}.{field}"),
            ConfigErrorKind::KeySource("applies only to fetched keys (jwks_uri or cluster)"),
        )),
        None => Ok(()),
    }
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

/// How a token is introspected at an issuer (RFC 7662 §2), compiled.
#[derive(Clone, PartialEq, Eq)]
pub struct Introspection {
    /// The endpoint, or `None` for the one the issuer's metadata names.
    pub endpoint: Option<HttpUrl>,
    /// The Envoy cluster calls go through (the issuer's).
    pub cluster: String,
    pub client_id: String,
    pub secret: SecretSource,
    pub auth_method: ClientAuth,
    pub cache_seconds: u64,
    pub negative_cache_seconds: u64,
    pub timeout_ms: u64,
    pub max_in_flight: usize,
}

/// Where the client secret comes from. Its `Debug` never shows an inline secret.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(String),
    /// The name of an environment variable of the wasm VM.
    Env(String),
}

/// RFC 6749 §2.3.1 client authentication at the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

impl SecretSource {
    /// Where the secret comes from, for `check` and logs: never the secret.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Inline(_) => "inline client_secret (for development)".into(),
            SecretSource::Env(name) => format!("environment variable {name} of the wasm VM"),
        }
    }
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(<secret>)"),
            SecretSource::Env(name) => write!(f, "Env({name:?})"),
        }
    }
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("endpoint", &self.endpoint)
            .field("cluster", &self.cluster)
            .field("client_id", &self.client_id)
            .field("secret", &self.secret)
            .field("auth_method", &self.auth_method)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_INTROSPECTION_CACHE_SECONDS: u64 = 60;
pub const DEFAULT_INTROSPECTION_NEGATIVE_CACHE_SECONDS: u64 = 10;
pub const DEFAULT_INTROSPECTION_TIMEOUT_MS: u64 = 2000;
pub const DEFAULT_INTROSPECTION_MAX_IN_FLIGHT: u64 = 64;

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn compile_introspection(
    path: &str,
    raw: &super::raw::RawIntrospection,
    cluster: Option<&str>,
) -> Result<Introspection, ConfigError> {
    let field = |name: &str| format!("{path}.{name}");
    let Some(cluster) = cluster else {
        return Err(err(
            path.rsplit_once('.')
                .map_or(path, |(issuer, _)| issuer)
                .to_string()
                + ".cluster",
            ConfigErrorKind::KeySource(
                "introspection needs the Envoy cluster its endpoint is called through",
            ),
        ));
    };
    if !is_plain_text(cluster) {
        return Err(err(
            path.rsplit_once('.')
                .map_or(path, |(issuer, _)| issuer)
                .to_string()
                + ".cluster",
            ConfigErrorKind::InvalidText,
        ));
    }
    let endpoint = match &raw.endpoint {
        Some(url) => {
            Some(HttpUrl::parse(url).map_err(|e| err(field("endpoint"), ConfigErrorKind::Url(e)))?)
        }
        None => None,
    };
    if !is_plain_text(&raw.client_id) {
        return Err(err(field("client_id"), ConfigErrorKind::InvalidText));
    }
    let secret = match (&raw.client_secret, &raw.client_secret_env) {
        (Some(secret), None) if !secret.is_empty() && !secret.chars().any(char::is_control) => {
            SecretSource::Inline(secret.clone())
        }
        (Some(_), None) => return Err(err(field("client_secret"), ConfigErrorKind::InvalidText)),
        (None, Some(name)) if is_env_name(name) => SecretSource::Env(name.clone()),
        (None, Some(name)) => {
            return Err(err(
                field("client_secret_env"),
                ConfigErrorKind::InvalidEnvName(name.clone()),
            ))
        }
        (Some(_), Some(_)) => {
            return Err(err(
                path,
                ConfigErrorKind::SecretSource("give client_secret or client_secret_env, not both"),
            ))
        }
        (None, None) => {
            return Err(err(
                path,
                ConfigErrorKind::SecretSource(
                    "no client secret: give client_secret_env (or client_secret for development)",
                ),
            ))
        }
    };
    let auth_method = match raw.auth_method.as_deref() {
        None | Some("client_secret_basic") => ClientAuth::Basic,
        Some("client_secret_post") => ClientAuth::Post,
        Some(other) => {
            return Err(err(
                field("auth_method"),
                ConfigErrorKind::UnsupportedAuthMethod(other.to_string()),
            ))
        }
    };
    let bounded = |name: &str, value: Option<u64>, default: u64, min: u64, max: u64| match value {
        None => Ok(default),
        Some(v) => in_range(field(name), v, min, max),
    };
    Ok(Introspection {
        endpoint,
        cluster: cluster.to_string(),
        client_id: raw.client_id.clone(),
        secret,
        auth_method,
        cache_seconds: bounded(
            "cache_seconds",
            raw.cache_seconds,
            DEFAULT_INTROSPECTION_CACHE_SECONDS,
            0,
            86_400,
        )?,
        negative_cache_seconds: bounded(
            "negative_cache_seconds",
            raw.negative_cache_seconds,
            DEFAULT_INTROSPECTION_NEGATIVE_CACHE_SECONDS,
            0,
            3600,
        )?,
        timeout_ms: bounded(
            "timeout_ms",
            raw.timeout_ms,
            DEFAULT_INTROSPECTION_TIMEOUT_MS,
            100,
            60_000,
        )?,
        max_in_flight: bounded(
            "max_in_flight",
            raw.max_in_flight,
            DEFAULT_INTROSPECTION_MAX_IN_FLIGHT,
            1,
            10_000,
        )? as usize,
    })
}
