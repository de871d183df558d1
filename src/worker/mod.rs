//! One worker's filter (Envoy runs one wasm VM per worker thread): everything that happens
//! between the host's callbacks and the pure decisions, behind the [`Host`] trait so it is
//! tested natively against a fake host.
//!
//! A request's headers are decided at once where they can be (`decide`); a request that must
//! wait, for its issuer's keys or for its body, is held as one [`Pending`] entry until a
//! decision releases or answers it. Nothing else releases it: not the end of its body, not its
//! trailers (RFC 9113 §8.1), not a timeout (a wait that runs out answers 503 or 408). Key
//! fetches run on the tick and on HTTP call answers (`keyfetch`). Counters are counted in
//! memory and handed to the host on the tick (`metrics`).

mod docfetch;
pub mod host;
mod introspector;
mod keyfetch;
mod pending;
mod requests;
mod responses;

#[cfg(test)]
pub mod fake;
#[cfg(test)]
mod tests;

pub use host::{CallResponse, Flow, ForeignError, Host, MAX_CALL_BODY};
pub use pending::Pending;

use crate::cache::TokenCache;
use crate::config::{Config, ConfigError, IssuerId};
use crate::hostsig::{self, HostVerify};
use crate::introspect::{self, Answer};
use crate::keyring::KeyRing;
use crate::keys::KeySet;
use crate::metrics::{Counters, Metric};
use crate::reason::Reason;
use crate::verify::KeyStore;
use docfetch::DocFetcher;
use introspector::Introspector;
use keyfetch::{KeyFetcher, KeysAt};
use pending::PendingRequests;
use std::cell::Cell;

/// How often the host calls [`Worker::on_tick`]: counters reach `/stats` within this, held
/// requests are decided again at least this often, fetches start within this.
pub const TICK_MS: u64 = 200;

/// The filter of one worker.
pub struct Worker<H: Host> {
    config: Config,
    state: State<H>,
}

/// Everything but the configuration, so a decision (which borrows the configuration) can be
/// applied to it.
struct State<H: Host> {
    host: H,
    keys: KeyRing,
    cache: TokenCache,
    fetcher: KeyFetcher,
    /// Authorization server metadata served at resource origins.
    documents: DocFetcher,
    introspector: Introspector,
    pending: PendingRequests,
    counters: Counters,
    signatures: SignatureState,
    /// When the last "no body reached the filter" warning was logged (one a minute).
    body_warned_ms: Option<u64>,
    /// The request whose callback is running (`None`: the root's tick or configuration).
    running_in: Option<u32>,
}

impl<H: Host> Worker<H> {
    /// Compiles the plugin configuration and starts: counters defined at 0, shared key
    /// records created, key sets other workers stored taken.
    pub fn configure(host: H, text: &[u8]) -> Result<Worker<H>, ConfigError> {
        let config = Config::from_json(text)?;
        let introspector = Introspector::new(&config, |name| host.env_var(name))?;
        for warning in &config.warnings {
            log::warn!("mcp-oauth-filter: configuration: {warning}");
        }
        log::info!(
            "mcp-oauth-filter: configured {} resource(s), {} issuer(s)",
            config.resources.len(),
            config.issuers.len()
        );
        let mut worker = Worker {
            state: State {
                host,
                keys: KeyRing::new(&config),
                cache: TokenCache::new(config.token_cache_size),
                fetcher: KeyFetcher::new(&config),
                documents: DocFetcher::new(&config),
                introspector,
                pending: PendingRequests::default(),
                counters: Counters::new(&config),
                signatures: SignatureState::default(),
                body_warned_ms: None,
                running_in: None,
            },
            config,
        };
        worker.define_counters_at_zero();
        worker.state.probe_signature_backend();
        let s = &mut worker.state;
        s.fetcher.start(&mut KeysAt {
            host: &s.host,
            keys: &mut s.keys,
            cache: &s.cache,
            counters: &mut s.counters,
        });
        s.documents.start(&s.host);
        Ok(worker)
    }

    /// The counters an operator needs a first sample of (README, "What the operator sees"):
    /// denials by other reasons appear when they first happen.
    fn define_counters_at_zero(&mut self) {
        let mut zero = vec![
            Metric::RequestsAllowed,
            Metric::MetadataServed,
            Metric::RequestsDenied(Reason::MissingToken),
        ];
        if self.config.token_cache_size > 0 {
            zero.extend([Metric::TokenCacheHits, Metric::TokenCacheMisses]);
        }
        if !self.state.fetcher.is_empty() {
            zero.extend([Metric::KeyFetchesOk, Metric::KeyFetchesFailed]);
        }
        if !self.state.documents.is_empty() {
            zero.extend([
                Metric::AsMetadataServed,
                Metric::AsMetadataUnavailable,
                Metric::AsMetadataFetchesOk,
                Metric::AsMetadataFetchesFailed,
            ]);
        }
        if self.config.resources.iter().any(|r| r.filter_tools_list) {
            zero.push(Metric::ToolsHidden);
        }
        if !self.state.introspector.is_empty() {
            zero.extend([
                Metric::IntrospectionsActive,
                Metric::IntrospectionsInactive,
                Metric::IntrospectionsFailed,
                Metric::IntrospectionCacheHits,
                Metric::IntrospectionCacheMisses,
            ]);
        }
        let s = &mut self.state;
        s.counters.define(&s.host, &zero);
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn host(&self) -> &H {
        &self.state.host
    }

    /// How many requests are held or answered and not yet forgotten.
    pub fn pending_len(&self) -> usize {
        self.state.pending.len()
    }

    /// The periodic tick: counters handed over, keys synced and fetched, held requests whose
    /// keys changed (or whose wait ran out) decided again, body waits that ran out answered.
    pub fn on_tick(&mut self) {
        let Worker { config, state } = self;
        state.running_in = None;
        let now = state.host.now_ms() / 1000;
        state.introspector.forget_unanswered(state.host.now_ms());
        state.fetcher.on_tick(
            &mut KeysAt {
                host: &state.host,
                keys: &mut state.keys,
                cache: &state.cache,
                counters: &mut state.counters,
            },
            now,
        );
        state
            .documents
            .on_tick(&state.host, &mut state.counters, now);
        state.wake_key_waits(config);
        state.expire_body_waits(config);
        state.flush_counters();
    }

    /// An HTTP call the worker made was answered (or timed out), in the callback of `context`
    /// (the request whose callback sent it; `None`: the root's).
    pub fn on_http_call_response(
        &mut self,
        context: Option<u32>,
        token: u32,
        response: &CallResponse,
    ) {
        let Worker { config, state } = self;
        state.running_in = context;
        let changed = state.fetcher.on_response(
            &mut KeysAt {
                host: &state.host,
                keys: &mut state.keys,
                cache: &state.cache,
                counters: &mut state.counters,
            },
            token,
            response,
        );
        match changed {
            Some(true) => state.wake_key_waits(config),
            Some(false) => {}
            None if state.documents.on_response(
                &state.host,
                &mut state.counters,
                token,
                response,
            ) => {}
            None => state.on_introspection_answer(config, token, response),
        }
    }

    pub fn on_request_headers(&mut self, context: u32, pairs: &[u8], end_of_stream: bool) -> Flow {
        let Worker { config, state } = self;
        state.running_in = Some(context);
        state.on_request_headers(config, context, pairs, end_of_stream)
    }

    pub fn on_request_body(&mut self, context: u32, body_size: usize, end_of_stream: bool) -> Flow {
        let Worker { config, state } = self;
        state.running_in = Some(context);
        state.on_body(config, context, Some(body_size), end_of_stream)
    }

    /// Trailers end the body (HTTP/2, or chunked HTTP/1.1 where Envoy passes them on).
    pub fn on_request_trailers(&mut self, context: u32) -> Flow {
        let Worker { config, state } = self;
        state.running_in = Some(context);
        state.on_body(config, context, None, true)
    }

    /// The upstream's response headers (`end_of_stream`: no body follows).
    pub fn on_response_headers(&mut self, context: u32, end_of_stream: bool) -> Flow {
        let Worker { config, state } = self;
        state.running_in = Some(context);
        state.on_response_headers(config, context, end_of_stream)
    }

    pub fn on_response_body(
        &mut self,
        context: u32,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        self.state.running_in = Some(context);
        self.state
            .on_response_body(context, body_size, end_of_stream)
    }

    pub fn on_response_trailers(&mut self, context: u32) -> Flow {
        self.state.running_in = Some(context);
        self.state.on_response_trailers(context)
    }

    /// The plugin instance is going away (a reconfiguration, a drain): fetches it leased are
    /// given up, so the next instance fetches at once instead of waiting for the lease.
    pub fn on_shutdown(&mut self) {
        let s = &self.state;
        s.fetcher.release(&s.host);
        s.documents.release(&s.host);
    }

    /// The host dropped the request's context: whatever it was waiting for is forgotten.
    pub fn on_done(&mut self, context: u32) {
        self.state.pending.forget(context);
        self.state.introspector.forget_owner(context);
    }
}

impl<H: Host> State<H> {
    /// An introspection call answered: the answer is counted, kept in the shared cache for
    /// every worker, and handed to the requests waiting for it. An unusable answer fails
    /// them with 503 and is not kept (RFC 7662 §2.3: never a verdict on the token).
    fn on_introspection_answer(&mut self, config: &Config, call: u32, response: &CallResponse) {
        let Some((issuer, digest)) = self.introspector.answered(call) else {
            return;
        };
        let Some((name, spec)) = config
            .issuers
            .get(issuer)
            .and_then(|i| Some((i.issuer.as_str(), i.introspection.as_ref()?)))
        else {
            return;
        };
        match introspect::read_answer(response.status(), response.whole_body()) {
            Ok(answer) => {
                let metric = match answer {
                    Answer::Active(_) => Metric::IntrospectionsActive,
                    Answer::Inactive => Metric::IntrospectionsInactive,
                };
                self.counters.add(metric, 1);
                let now = self.host.now_ms() / 1000;
                if let Some(record) = introspect::record(&answer, &digest, name, spec, now) {
                    self.host
                        .set_shared(&introspect::cache_key(name, &digest), &record, None);
                }
                self.wake_introspection_waits(config, issuer, digest, Ok(&answer));
            }
            Err(e) => {
                self.counters.add(Metric::IntrospectionsFailed, 1);
                log::warn!(
                    "mcp-oauth-filter: introspection of token {} at {name:?} failed: {e} [{}]",
                    introspect::log_id(&digest),
                    e.code()
                );
                self.wake_introspection_waits(config, issuer, digest, Err(()));
            }
        }
    }

    /// Says once, at start, which backend checks signatures (README, Compatibility): an empty
    /// request tells whether the host has Envoy's `verify_signature` at all.
    fn probe_signature_backend(&mut self) {
        let backend = match self.host.call_foreign(hostsig::FUNCTION, &[]) {
            Err(ForeignError::NotFound) => {
                self.signatures.missing.set(true);
                "ring in the VM (the host has no verify_signature function)"
            }
            _ => "the host's verify_signature (BoringSSL) for RS*/ES*, ring in the VM for the rest",
        };
        log::info!("mcp-oauth-filter: signature checks: {backend}");
    }

    /// Hands the counts since the last tick to the host.
    fn flush_counters(&mut self) {
        let answered = self.signatures.answered.take();
        self.counters.add(Metric::SignatureChecksHost, answered);
        self.counters.flush(&self.host);
    }

    /// Counts the verified-token cache's hits and misses of a decision that stands.
    fn count_cache(&mut self) {
        let counts = self.cache.take_counts();
        self.counters.add(Metric::TokenCacheHits, counts.hits);
        self.counters.add(Metric::TokenCacheMisses, counts.misses);
        // An opaque token this worker already accepted: its introspection answer came from
        // the worker's memory rather than the shared cache, a cache hit all the same.
        self.counters
            .add(Metric::IntrospectionCacheHits, counts.introspected_hits);
    }

    fn sync_all_keys(&mut self) -> bool {
        self.fetcher.sync_all(&mut KeysAt {
            host: &self.host,
            keys: &mut self.keys,
            cache: &self.cache,
            counters: &mut self.counters,
        })
    }
}

/// Whether the host has Envoy's `verify_signature`, and how many checks it answered since the
/// last tick.
#[derive(Debug, Default)]
struct SignatureState {
    missing: Cell<bool>,
    answered: Cell<u64>,
}

/// The host's signature check (`hostsig`), asked until the host says it has no such
/// function. Its answers are counted in `signature_checks_host`, defined at the first one.
struct HostSignatures<'a, H: Host> {
    host: &'a H,
    state: &'a SignatureState,
}

impl<H: Host> HostVerify for HostSignatures<'_, H> {
    fn call(&self, request: &[u8]) -> Option<Vec<u8>> {
        if self.state.missing.get() {
            return None;
        }
        match self.host.call_foreign(hostsig::FUNCTION, request) {
            Ok(answer) => {
                self.state.answered.set(self.state.answered.get() + 1);
                Some(answer)
            }
            Err(ForeignError::NotFound) => {
                self.state.missing.set(true);
                log::info!(
                    "mcp-oauth-filter: the host has no {} function: signatures are checked in wasm",
                    hostsig::FUNCTION
                );
                None
            }
            Err(ForeignError::Failed(status)) => {
                log::debug!("mcp-oauth-filter: host signature check refused (status {status})");
                None
            }
        }
    }
}

/// The worker's keys, with the host's signature check.
struct Trusted<'a> {
    ring: &'a KeyRing,
    host: &'a dyn HostVerify,
}

impl KeyStore for Trusted<'_> {
    fn keys(&self, issuer: IssuerId) -> Option<&KeySet> {
        self.ring.keys(issuer)
    }

    fn refetch_allowed(&self, issuer: IssuerId, now: u64) -> bool {
        self.ring.refetch_allowed(issuer, now)
    }

    fn host(&self) -> Option<&dyn HostVerify> {
        Some(self.host)
    }
}
