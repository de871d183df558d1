//! Driving the remote-key state machine (`remote`, README "Remote keys") with a host: when
//! to fetch, the fetch itself and its discovery hops, storing a good key set for every
//! worker, failure and back-off, and the rate-limited refetch an unknown `kid` asks for.
//!
//! Each fetched issuer has a small record (`FetchState`) and its last good key set in shared
//! data, under names that carry the issuer and its source, so every worker (and every
//! listener) fetching the same keys shares one copy. A worker takes the fetch by writing the
//! record's lease with compare-and-swap: N workers make one fetch.

use crate::cache::TokenCache;
use crate::config::{Config, IssuerId, KeySource};
use crate::keyring::KeyRing;
use crate::keys::KeySet;
use crate::metrics::{Counters, Metric};
use crate::remote::{self, FetchError, FetchPolicy, FetchState, Target, Want, Why};
use crate::url::HttpUrl;
use crate::worker::host::{CallResponse, Host};
use std::collections::HashMap;

/// A fetched issuer and the shared-data names of its record and key set.
#[derive(Debug, Clone)]
struct RemoteIssuer {
    id: IssuerId,
    issuer: String,
    cluster: String,
    jwks_uri: Option<HttpUrl>,
    /// Its keys, its introspection endpoint, or both.
    want: Want,
    policy: FetchPolicy,
    state_key: String,
    jwks_key: String,
}

/// What the fetcher works on besides its own state: the worker's keys, the cache that must
/// forget tokens of keys that left, and the counters.
pub struct KeysAt<'a, H: Host> {
    pub host: &'a H,
    pub keys: &'a mut KeyRing,
    pub cache: &'a TokenCache,
    pub counters: &'a mut Counters,
}

/// The fetches of one worker.
#[derive(Debug, Default)]
pub struct KeyFetcher {
    remotes: Vec<RemoteIssuer>,
    /// Fetches this worker has in flight: call token → issuer, document, when it went out.
    in_flight: HashMap<u32, (IssuerId, Target, u64)>,
    /// Issuers an unknown `kid` asked to refetch (dispatched on the next tick).
    wanted: Vec<IssuerId>,
    leases: Leases,
}

impl KeyFetcher {
    pub fn new(config: &Config) -> KeyFetcher {
        let remotes = config
            .issuers
            .iter()
            .enumerate()
            .filter_map(|(id, issuer)| {
                let endpoint = issuer
                    .introspection
                    .as_ref()
                    .filter(|i| i.endpoint.is_none());
                let (cluster, jwks_uri, policy, keys) = match (&issuer.keys, endpoint) {
                    (
                        KeySource::Remote {
                            cluster,
                            jwks_uri,
                            policy,
                        },
                        _,
                    ) => (cluster, jwks_uri.clone(), *policy, true),
                    (_, Some(introspection)) => {
                        (&introspection.cluster, None, FetchPolicy::default(), false)
                    }
                    _ => return None,
                };
                let want = Want {
                    keys,
                    endpoint: endpoint.is_some(),
                };
                let source = match (&jwks_uri, keys) {
                    (Some(u), _) => format!("{}{}", u.origin(), u.path),
                    (None, true) => "discover".to_string(),
                    (None, false) => "metadata".to_string(),
                };
                let base = format!(
                    "mcp-oauth-filter/v1/keys/{}|{}|{}",
                    issuer.issuer, cluster, source
                );
                Some(RemoteIssuer {
                    id,
                    issuer: issuer.issuer.clone(),
                    cluster: cluster.clone(),
                    jwks_uri,
                    want,
                    policy,
                    state_key: format!("{base}/state"),
                    jwks_key: format!("{base}/jwks"),
                })
            })
            .collect();
        KeyFetcher {
            remotes,
            ..KeyFetcher::default()
        }
    }

    /// Whether any issuer's keys are fetched.
    pub fn is_empty(&self) -> bool {
        self.remotes.is_empty()
    }

    /// The instance is going away: its fetch leases are given up.
    pub fn release<H: Host>(&self, host: &H) {
        self.leases.release(host);
    }

    /// How long a request waits for `issuer`'s first key set.
    pub fn wait_ms(&self, issuer: IssuerId) -> u64 {
        self.remote(issuer).map_or(0, |r| r.policy.wait_ms)
    }

    fn remote(&self, issuer: IssuerId) -> Option<&RemoteIssuer> {
        self.remotes.iter().find(|r| r.id == issuer)
    }

    /// At configuration: creates each shared record no worker created yet, and takes the key
    /// sets other workers (or an earlier configuration) already stored.
    pub fn start<H: Host>(&self, at: &mut KeysAt<'_, H>) {
        for remote in &self.remotes {
            if let (None, None) = read_state(at.host, remote) {
                write_state(at.host, remote, &FetchState::default(), None);
            }
            sync(at, remote);
        }
    }

    /// Takes every key set another worker stored since; whether any changed.
    pub fn sync_all<H: Host>(&self, at: &mut KeysAt<'_, H>) -> bool {
        self.remotes
            .iter()
            .fold(false, |changed, r| sync(at, r) | changed)
    }

    /// An unknown `kid` asks for a refetch of `issuer` (at most one per window).
    pub fn want_refetch(&mut self, issuer: IssuerId) {
        if !self.wanted.contains(&issuer) {
            self.wanted.push(issuer);
        }
    }

    /// The tick: syncs every issuer, and starts each fetch that is due (or asked for and
    /// allowed by the refetch window) unless another worker holds the lease.
    pub fn on_tick<H: Host>(&mut self, at: &mut KeysAt<'_, H>, now: u64) {
        let wanted = std::mem::take(&mut self.wanted);
        self.forget_unanswered(at.host.now_ms());
        for i in 0..self.remotes.len() {
            let Some(remote) = self.remotes.get(i).cloned() else {
                continue;
            };
            sync(at, &remote);
            let busy = self.in_flight.values().any(|(id, _, _)| *id == remote.id);
            if !busy {
                self.maybe_fetch(at, &remote, wanted.contains(&remote.id), now);
            }
        }
    }

    /// A call the host never answered (its timeout passed twice over) no longer blocks the
    /// next fetch; the shared lease it held has run out by then too.
    fn forget_unanswered(&mut self, now_ms: u64) {
        let remotes = &self.remotes;
        self.in_flight.retain(|_, (id, _, sent_ms)| {
            let timeout = remotes
                .iter()
                .find(|r| r.id == *id)
                .map_or(0, |r| r.policy.fetch_timeout_ms);
            now_ms < *sent_ms + 2 * timeout + 1000
        });
    }

    fn maybe_fetch<H: Host>(
        &mut self,
        at: &mut KeysAt<'_, H>,
        remote: &RemoteIssuer,
        wanted: bool,
        now: u64,
    ) {
        let (Some(mut state), cas) = read_state(at.host, remote) else {
            write_state(at.host, remote, &FetchState::default(), None);
            return;
        };
        let why = match state.due(now) {
            Some(why) => why,
            None if wanted && state.may_refetch(now, &remote.policy) => Why::UnknownKid,
            None => return,
        };
        state.begin(now, why, &remote.policy);
        if !write_state(at.host, remote, &state, cas) {
            return; // another worker took the lease
        }
        self.leases.took(&remote.state_key, state.lease_until);
        log::debug!(
            "mcp-oauth-filter: fetching keys of {:?} ({why:?})",
            remote.issuer
        );
        self.next(at, remote, &state);
    }

    /// Asks for the record's next document, or records the fetch as done when nothing is
    /// left to ask for (an endpoint already discovered).
    fn next<H: Host>(&mut self, at: &mut KeysAt<'_, H>, remote: &RemoteIssuer, state: &FetchState) {
        match state.next(&remote.issuer, remote.jwks_uri.as_ref(), remote.want) {
            Some(target) => self.dispatch(at, remote, target),
            None => discovered(at, remote),
        }
    }

    fn dispatch<H: Host>(&mut self, at: &mut KeysAt<'_, H>, remote: &RemoteIssuer, target: Target) {
        match get(
            at.host,
            &remote.cluster,
            target.url(),
            remote.policy.fetch_timeout_ms,
        ) {
            Ok(token) => {
                let now_ms = at.host.now_ms();
                self.in_flight.insert(token, (remote.id, target, now_ms));
            }
            Err(Refused::BadUrl) => fail(
                at,
                remote,
                FetchError::Discovery("key URL is not an http(s) URL"),
            ),
            Err(Refused::Host(status)) => {
                log::warn!(
                    "mcp-oauth-filter: cannot fetch keys of {:?} through cluster {:?}: status {status} (is the cluster defined?)",
                    remote.issuer,
                    remote.cluster
                );
                fail(at, remote, FetchError::Status(0));
            }
        }
    }

    /// An HTTP call answered (or timed out). `Some(changed)` when it was one of ours:
    /// whether requests waiting for keys should be decided again.
    pub fn on_response<H: Host>(
        &mut self,
        at: &mut KeysAt<'_, H>,
        token: u32,
        response: &CallResponse,
    ) -> Option<bool> {
        let (id, target, _) = self.in_flight.remove(&token)?;
        let remote = self.remote(id)?.clone();
        let Some(status) = response.status() else {
            fail(at, &remote, FetchError::Timeout);
            return Some(true);
        };
        let Some(body) = response.whole_body() else {
            fail(at, &remote, FetchError::TooLarge);
            return Some(true);
        };
        match target {
            Target::Jwks(_) => match remote::read_jwks(status, body) {
                Ok((set, skipped)) => {
                    for line in skipped {
                        log::warn!("mcp-oauth-filter: keys of {:?}: {line}", remote.issuer);
                    }
                    let max_age = remote::max_age(response.header("cache-control"));
                    store(at, &remote, body, max_age, set);
                }
                Err(e) => fail(at, &remote, e),
            },
            discovery => {
                let (Some(mut state), cas) = read_state(at.host, &remote) else {
                    return Some(false);
                };
                // What this document must name: a key set URL unless one is configured.
                let needs = Want {
                    keys: remote.want.keys && remote.jwks_uri.is_none(),
                    endpoint: remote.want.endpoint,
                };
                match state.on_discovery_for(&discovery, &remote.issuer, status, body, needs) {
                    Ok(_) => {
                        write_state(at.host, &remote, &state, cas);
                        let done = !remote.want.keys;
                        self.next(at, &remote, &state);
                        return Some(done);
                    }
                    Err(e) => {
                        write_state(at.host, &remote, &state, cas);
                        fail(at, &remote, e);
                    }
                }
            }
        }
        Some(true)
    }
}

/// Why a GET could not be sent.
pub(super) enum Refused {
    BadUrl,
    /// The host refused the call (an unknown cluster).
    Host(u32),
}

/// Sends `GET url` through `cluster`: the call's token.
pub(super) fn get<H: Host>(
    host: &H,
    cluster: &str,
    url: &str,
    timeout_ms: u64,
) -> Result<u32, Refused> {
    let url = HttpUrl::parse(url).map_err(|_| Refused::BadUrl)?;
    let mut path = if url.path.is_empty() {
        "/".to_string()
    } else {
        url.path.clone()
    };
    if let Some(q) = &url.query {
        path = format!("{path}?{q}");
    }
    let headers = [
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", url.authority.as_str()),
        (":scheme", url.scheme.as_str()),
        ("accept", "application/json"),
        ("user-agent", "mcp-oauth-filter"),
    ];
    host.http_call(cluster, &headers, None, timeout_ms)
        .map_err(Refused::Host)
}

/// The shared fetch record under `key`, and its compare-and-swap token.
/// The fetch leases a worker took, by the shared-data key of their record, each with the
/// `lease_until` it wrote there.
#[derive(Debug, Default)]
pub(super) struct Leases(Vec<(String, u64)>);

impl Leases {
    pub fn took(&mut self, key: &str, lease_until: u64) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_string(), lease_until));
    }

    /// The instance is going away (a reconfiguration, a drain) and its calls with it: each
    /// lease is given up, so another worker need not wait for it to run out.
    pub fn release<H: Host>(&self, host: &H) {
        for (key, until) in &self.0 {
            release_lease(host, key, *until);
        }
    }
}

/// Gives up a fetch lease this worker took (it wrote `lease_until`), if no fetch has ended or
/// started since: the instance is going away (a reconfiguration, a drain) and its calls with
/// it, so another worker need not wait for the lease to run out.
fn release_lease<H: Host>(host: &H, key: &str, lease_until: u64) {
    let (Some(mut state), cas) = read_record(host, key) else {
        return;
    };
    if lease_until == 0 || state.lease_until != lease_until {
        return; // the fetch ended, or another worker's lease stands
    }
    state.lease_until = 0;
    write_record(host, key, &state, cas);
}

pub(super) fn read_record<H: Host>(host: &H, key: &str) -> (Option<FetchState>, Option<u32>) {
    let (bytes, cas) = host.get_shared(key);
    (bytes.and_then(|b| serde_json::from_slice(&b).ok()), cas)
}

/// Writes the record under `key` (compare-and-swap with `cas`); whether it was written.
pub(super) fn write_record<H: Host>(
    host: &H,
    key: &str,
    state: &FetchState,
    cas: Option<u32>,
) -> bool {
    let Ok(bytes) = serde_json::to_vec(state) else {
        return false;
    };
    host.set_shared(key, &bytes, cas)
}

/// Read-modify-write of the record under `key`, retried on a compare-and-swap conflict.
pub(super) fn update_record<H: Host>(
    host: &H,
    key: &str,
    change: impl Fn(&mut FetchState, u64),
) -> Option<FetchState> {
    for _ in 0..8 {
        let (state, cas) = read_record(host, key);
        let mut state = state.unwrap_or_default();
        change(&mut state, host.now_ms() / 1000);
        if write_record(host, key, &state, cas) {
            return Some(state);
        }
    }
    None
}

fn read_state<H: Host>(host: &H, remote: &RemoteIssuer) -> (Option<FetchState>, Option<u32>) {
    read_record(host, &remote.state_key)
}

fn write_state<H: Host>(
    host: &H,
    remote: &RemoteIssuer,
    state: &FetchState,
    cas: Option<u32>,
) -> bool {
    write_record(host, &remote.state_key, state, cas)
}

/// Brings this worker's copy of an issuer's keys up to the shared version; whether the
/// installed key set changed.
fn sync<H: Host>(at: &mut KeysAt<'_, H>, remote: &RemoteIssuer) -> bool {
    let (Some(state), _) = read_state(at.host, remote) else {
        return false;
    };
    let installed = at.keys.installed_version(remote.id);
    if !remote.want.keys || state.version == 0 || state.version == installed {
        at.keys.observe(remote.id, state);
        return false;
    }
    let (jwks, _) = at.host.get_shared(&remote.jwks_key);
    match remote::read_jwks(200, &jwks.unwrap_or_default()) {
        Ok((set, _)) => {
            log::info!(
                "mcp-oauth-filter: keys of {:?} updated: {} key(s), version {}",
                remote.issuer,
                set.len(),
                state.version
            );
            at.keys.install(remote.id, set, state, at.cache);
            set_keys_in_use(at);
            true
        }
        Err(e) => {
            log::warn!(
                "mcp-oauth-filter: shared keys of {:?} unreadable: {e}",
                remote.issuer
            );
            at.keys.observe(remote.id, state);
            false
        }
    }
}

fn set_keys_in_use<H: Host>(at: &KeysAt<'_, H>) {
    at.host.set_gauge(
        &format!("{}keys_in_use", crate::metrics::PREFIX),
        at.keys.key_count() as u64,
    );
}

/// Stores a good key set for every worker, then records the success.
fn store<H: Host>(
    at: &mut KeysAt<'_, H>,
    remote: &RemoteIssuer,
    body: &[u8],
    max_age: Option<u64>,
    set: KeySet,
) {
    at.host.set_shared(&remote.jwks_key, body, None);
    let digest = remote::digest(body);
    if let Some(state) = update_state(at.host, remote, |s, now| {
        s.succeed(now, max_age, digest, &remote.policy)
    }) {
        log::info!(
            "mcp-oauth-filter: fetched keys of {:?}: {} key(s), version {}, valid {} s",
            remote.issuer,
            set.len(),
            state.version,
            state.expires_at.saturating_sub(state.fetched_at)
        );
        at.keys.install(remote.id, set, state, at.cache);
        set_keys_in_use(at);
    }
    at.counters.add(Metric::KeyFetchesOk, 1);
}

/// Records a fetch for the introspection endpoint only as done: the endpoint is in the record.
fn discovered<H: Host>(at: &mut KeysAt<'_, H>, remote: &RemoteIssuer) {
    let endpoint = |s: &FetchState| s.discovered_introspection_endpoint.clone();
    if let Some(state) = update_state(at.host, remote, |s, now| {
        let digest = remote::digest(endpoint(s).unwrap_or_default().as_bytes());
        s.succeed(now, None, digest, &remote.policy)
    }) {
        log::info!(
            "mcp-oauth-filter: introspection endpoint of {:?}: {}",
            remote.issuer,
            endpoint(&state).unwrap_or_default()
        );
        at.keys.observe(remote.id, state);
    }
    at.counters.add(Metric::KeyFetchesOk, 1);
}

/// Records a failed fetch: the keys stay, a retry is scheduled with back-off.
fn fail<H: Host>(at: &mut KeysAt<'_, H>, remote: &RemoteIssuer, error: FetchError) {
    if let Some(state) = update_state(at.host, remote, |s, now| s.fail(now, &error)) {
        log::warn!(
            "mcp-oauth-filter: key fetch for {:?} failed: {error} [{}]; retry in {} s{}",
            remote.issuer,
            error.code(),
            state.retry_at.saturating_sub(at.host.now_ms() / 1000),
            if state.version > 0 {
                ", keeping the last good keys"
            } else {
                ""
            }
        );
        at.keys.observe(remote.id, state);
    }
    at.counters.add(Metric::KeyFetchesFailed, 1);
}

fn update_state<H: Host>(
    host: &H,
    remote: &RemoteIssuer,
    change: impl Fn(&mut FetchState, u64),
) -> Option<FetchState> {
    update_record(host, &remote.state_key, change)
}
