//! The authorization server metadata a resource's origin answers for clients of MCP
//! 2025-03-26 (README, "Clients of MCP 2025-03-26"): each such issuer's RFC 8414 document,
//! found in the order key discovery uses (`remote`), fetched through the issuer's cluster,
//! kept in shared data for every worker, refreshed like keys and kept when a refresh fails.
//!
//! Each document has a fetch record (`FetchState`, the one keys use) and its bytes in shared
//! data; a worker takes a fetch by compare-and-swap on the record's lease, so N workers make
//! one fetch. The bytes are stored as the authorization server sent them and served so.

use super::keyfetch::{get, read_record, update_record, write_record, Leases, Refused};
use crate::config::{Config, IssuerId, KeySource};
use crate::metrics::{Counters, Metric};
use crate::remote::{self, FetchError, FetchPolicy, FetchState, Target, Want};
use crate::worker::host::{CallResponse, Host};
use std::collections::HashMap;

/// One issuer whose metadata document some origin serves.
#[derive(Debug, Clone)]
struct Document {
    issuer: IssuerId,
    name: String,
    cluster: String,
    policy: FetchPolicy,
    state_key: String,
    body_key: String,
}

/// A document as served: the authorization server's bytes and how long they stay fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub body: String,
    pub max_age: u64,
}

/// The document fetches of one worker.
#[derive(Debug, Default)]
pub struct DocFetcher {
    documents: Vec<Document>,
    /// Fetches in flight: call token → document, what was asked for, when it went out.
    in_flight: HashMap<u32, (usize, Target, u64)>,
    leases: Leases,
}

impl DocFetcher {
    pub fn new(config: &Config) -> DocFetcher {
        let mut documents: Vec<Document> = Vec::new();
        for origin in &config.origin_documents {
            let Some(issuer) = config.issuers.get(origin.issuer) else {
                continue;
            };
            let Some(cluster) = issuer.cluster.clone() else {
                continue;
            };
            if documents.iter().any(|d| d.issuer == origin.issuer) {
                continue;
            }
            let policy = match &issuer.keys {
                KeySource::Remote { policy, .. } => *policy,
                _ => FetchPolicy::default(),
            };
            let base = format!(
                "mcp-oauth-filter/v1/as-metadata/{}|{cluster}",
                issuer.issuer
            );
            documents.push(Document {
                issuer: origin.issuer,
                name: issuer.issuer.clone(),
                cluster,
                policy,
                state_key: format!("{base}/state"),
                body_key: format!("{base}/document"),
            });
        }
        DocFetcher {
            documents,
            in_flight: HashMap::new(),
            leases: Leases::default(),
        }
    }

    /// The instance is going away: its fetch leases are given up.
    pub fn release<H: Host>(&self, host: &H) {
        self.leases.release(host);
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// At configuration: creates each shared record no worker created yet.
    pub fn start<H: Host>(&self, host: &H) {
        for doc in &self.documents {
            if let (None, None) = read_record(host, &doc.state_key) {
                write_record(host, &doc.state_key, &FetchState::default(), None);
            }
        }
    }

    /// The document of `issuer` at `now`: `None` before its first successful fetch.
    pub fn served<H: Host>(&self, host: &H, issuer: IssuerId, now: u64) -> Option<Served> {
        let doc = self.documents.iter().find(|d| d.issuer == issuer)?;
        let (Some(state), _) = read_record(host, &doc.state_key) else {
            return None;
        };
        if state.version == 0 {
            return None;
        }
        let (bytes, _) = host.get_shared(&doc.body_key);
        let body = String::from_utf8(bytes?).ok()?;
        Some(Served {
            body,
            max_age: state.expires_at.saturating_sub(now),
        })
    }

    /// The tick: starts each fetch that is due unless another worker holds the lease.
    pub fn on_tick<H: Host>(&mut self, host: &H, counters: &mut Counters, now: u64) {
        let now_ms = host.now_ms();
        let documents = &self.documents;
        // A call the host never answered no longer blocks the next fetch.
        self.in_flight.retain(|_, (i, _, sent_ms)| {
            let timeout = documents.get(*i).map_or(0, |d| d.policy.fetch_timeout_ms);
            now_ms < *sent_ms + 2 * timeout + 1000
        });
        for i in 0..self.documents.len() {
            if self.in_flight.values().any(|(d, _, _)| *d == i) {
                continue;
            }
            let Some(doc) = self.documents.get(i).cloned() else {
                continue;
            };
            let (Some(mut state), cas) = read_record(host, &doc.state_key) else {
                write_record(host, &doc.state_key, &FetchState::default(), None);
                continue;
            };
            let Some(why) = state.due(now) else {
                continue;
            };
            state.begin(now, why, &doc.policy);
            if !write_record(host, &doc.state_key, &state, cas) {
                continue; // another worker took the lease
            }
            self.leases.took(&doc.state_key, state.lease_until);
            log::debug!(
                "mcp-oauth-filter: fetching the metadata of {:?} ({why:?})",
                doc.name
            );
            let target = state.discovery_target(&doc.name);
            self.dispatch(host, counters, i, target);
        }
    }

    fn dispatch<H: Host>(&mut self, host: &H, counters: &mut Counters, i: usize, target: Target) {
        let Some(doc) = self.documents.get(i) else {
            return;
        };
        match get(
            host,
            &doc.cluster,
            target.url(),
            doc.policy.fetch_timeout_ms,
        ) {
            Ok(token) => {
                self.in_flight.insert(token, (i, target, host.now_ms()));
            }
            Err(refused) => {
                if let Refused::Host(status) = refused {
                    log::warn!(
                        "mcp-oauth-filter: cannot fetch the metadata of {:?} through cluster {:?}: status {status} (is the cluster defined?)",
                        doc.name,
                        doc.cluster
                    );
                }
                fail(host, counters, doc, FetchError::Status(0));
            }
        }
    }

    /// An HTTP call answered (or timed out); whether it was one of ours.
    pub fn on_response<H: Host>(
        &mut self,
        host: &H,
        counters: &mut Counters,
        token: u32,
        response: &CallResponse,
    ) -> bool {
        let Some((i, target, _)) = self.in_flight.remove(&token) else {
            return false;
        };
        let Some(doc) = self.documents.get(i).cloned() else {
            return true;
        };
        let Some(status) = response.status() else {
            fail(host, counters, &doc, FetchError::Timeout);
            return true;
        };
        let Some(body) = response.whole_body() else {
            fail(host, counters, &doc, FetchError::TooLarge);
            return true;
        };
        let (Some(mut state), cas) = read_record(host, &doc.state_key) else {
            return true;
        };
        match state.on_discovery_for(&target, &doc.name, status, body, Want::DOCUMENT) {
            Ok(true) => {
                write_record(host, &doc.state_key, &state, cas);
                let max_age = remote::max_age(response.header("cache-control"));
                store(host, counters, &doc, body, max_age);
            }
            Ok(false) => {
                // Not there: the next document of the discovery order.
                write_record(host, &doc.state_key, &state, cas);
                let next = state.discovery_target(&doc.name);
                self.dispatch(host, counters, i, next);
            }
            Err(e) => {
                write_record(host, &doc.state_key, &state, cas);
                fail(host, counters, &doc, e);
            }
        }
        true
    }
}

/// Stores a good document for every worker, then records the success.
fn store<H: Host>(
    host: &H,
    counters: &mut Counters,
    doc: &Document,
    body: &[u8],
    max_age: Option<u64>,
) {
    host.set_shared(&doc.body_key, body, None);
    let digest = remote::digest(body);
    if let Some(state) = update_record(host, &doc.state_key, |s, now| {
        s.succeed(now, max_age, digest, &doc.policy)
    }) {
        log::info!(
            "mcp-oauth-filter: fetched the metadata of {:?} ({} bytes, valid {} s), served at its resources' origins",
            doc.name,
            body.len(),
            state.expires_at.saturating_sub(state.fetched_at)
        );
    }
    counters.add(Metric::AsMetadataFetchesOk, 1);
}

/// Records a failed fetch: the last good document stays, a retry is scheduled with back-off.
fn fail<H: Host>(host: &H, counters: &mut Counters, doc: &Document, error: FetchError) {
    if let Some(state) = update_record(host, &doc.state_key, |s, now| s.fail(now, &error)) {
        log::warn!(
            "mcp-oauth-filter: metadata fetch for {:?} failed: {error} [{}]; retry in {} s{}",
            doc.name,
            error.code(),
            state.retry_at.saturating_sub(host.now_ms() / 1000),
            if state.version > 0 {
                ", serving the last good document"
            } else {
                ""
            }
        );
    }
    counters.add(Metric::AsMetadataFetchesFailed, 1);
}
