//! The counters an operator reads (README, "What the operator sees"): one [`Metric`] enum, the
//! one place that knows each counter's name, and per-worker batching. A request adds to a
//! number in memory; the worker's tick (every 200 ms) hands the sums to the host, so each
//! request is in `/stats` well within a second of its answer and costs no host call of its
//! own.

use crate::config::Config;
use crate::reason::{Outcome, Reason};
use std::collections::BTreeSet;

/// The prefix every counter carries in `/stats` and `/stats/prometheus`.
pub const PREFIX: &str = "mcp_oauth_";

/// A counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    RequestsAllowed,
    RequestsDenied(Reason),
    MetadataServed,
    MetadataNotFound,
    /// Authorization server metadata at resource origins: answered, 503 before the first
    /// fetch, and its fetches.
    AsMetadataServed,
    AsMetadataUnavailable,
    AsMetadataFetchesOk,
    AsMetadataFetchesFailed,
    MethodNotAllowed,
    PreflightAnswered,
    TokenCacheHits,
    TokenCacheMisses,
    KeyFetchesOk,
    KeyFetchesFailed,
    /// Signature checks the host's `verify_signature` answered (`hostsig`).
    SignatureChecksHost,
    /// Introspection answers (RFC 7662) by what they said, and calls that failed.
    IntrospectionsActive,
    IntrospectionsInactive,
    IntrospectionsFailed,
    /// Lookups in the shared introspection cache.
    IntrospectionCacheHits,
    IntrospectionCacheMisses,
    /// Tools removed from `tools/list` results (`tools_list`).
    ToolsHidden,
    /// Refusals of a configured tool, by its place in [`Counters::tools`].
    ToolDenied(usize),
}

/// Counters without a payload, in slot order after the reasons.
const PLAIN: [Metric; 20] = [
    Metric::RequestsAllowed,
    Metric::MetadataServed,
    Metric::MetadataNotFound,
    Metric::AsMetadataServed,
    Metric::AsMetadataUnavailable,
    Metric::AsMetadataFetchesOk,
    Metric::AsMetadataFetchesFailed,
    Metric::MethodNotAllowed,
    Metric::PreflightAnswered,
    Metric::TokenCacheHits,
    Metric::TokenCacheMisses,
    Metric::KeyFetchesOk,
    Metric::KeyFetchesFailed,
    Metric::SignatureChecksHost,
    Metric::IntrospectionsActive,
    Metric::IntrospectionsInactive,
    Metric::IntrospectionsFailed,
    Metric::IntrospectionCacheHits,
    Metric::IntrospectionCacheMisses,
    Metric::ToolsHidden,
];

impl Metric {
    /// The counter an answer the filter made itself increments.
    pub fn of(outcome: Outcome) -> Metric {
        match outcome {
            Outcome::MetadataServed => Metric::MetadataServed,
            Outcome::MetadataNotFound => Metric::MetadataNotFound,
            Outcome::AsMetadataServed => Metric::AsMetadataServed,
            Outcome::AsMetadataUnavailable => Metric::AsMetadataUnavailable,
            Outcome::MethodNotAllowed => Metric::MethodNotAllowed,
            Outcome::Preflight => Metric::PreflightAnswered,
            Outcome::Denied(reason) => Metric::RequestsDenied(reason),
        }
    }

    /// The name without [`PREFIX`]; a tool's name made safe for every stats sink.
    pub fn name(self, tools: &[String]) -> String {
        match self {
            Metric::RequestsAllowed => "requests_allowed".into(),
            Metric::RequestsDenied(reason) => format!("requests_denied_{}", reason.code()),
            Metric::MetadataServed => "metadata_served".into(),
            Metric::MetadataNotFound => "metadata_not_found".into(),
            Metric::AsMetadataServed => "as_metadata_served".into(),
            Metric::AsMetadataUnavailable => "as_metadata_unavailable".into(),
            Metric::AsMetadataFetchesOk => "as_metadata_fetches_ok".into(),
            Metric::AsMetadataFetchesFailed => "as_metadata_fetches_failed".into(),
            Metric::MethodNotAllowed => "method_not_allowed".into(),
            Metric::PreflightAnswered => "preflight_answered".into(),
            Metric::TokenCacheHits => "token_cache_hits".into(),
            Metric::TokenCacheMisses => "token_cache_misses".into(),
            Metric::KeyFetchesOk => "key_fetches_ok".into(),
            Metric::KeyFetchesFailed => "key_fetches_failed".into(),
            Metric::SignatureChecksHost => "signature_checks_host".into(),
            Metric::IntrospectionsActive => "introspections_active".into(),
            Metric::IntrospectionsInactive => "introspections_inactive".into(),
            Metric::IntrospectionsFailed => "introspections_failed".into(),
            Metric::IntrospectionCacheHits => "introspection_cache_hits".into(),
            Metric::IntrospectionCacheMisses => "introspection_cache_misses".into(),
            Metric::ToolsHidden => "tools_hidden".into(),
            Metric::ToolDenied(i) => {
                let tool = tools.get(i).map_or("", String::as_str);
                format!("tool_denied_{}", metric_safe(tool))
            }
        }
    }

    fn slot(self) -> usize {
        match self {
            Metric::RequestsDenied(reason) => reason.index(),
            Metric::ToolDenied(i) => Reason::ALL.len() + PLAIN.len() + i,
            plain => Reason::ALL.len() + PLAIN.iter().position(|m| *m == plain).unwrap_or_default(),
        }
    }
}

/// Metric names take what the operator configured, made safe for every stats sink.
fn metric_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where counts go: the host's counters.
pub trait CounterSink {
    /// Defines the counter `name` (prefix included) and returns its id.
    fn define_counter(&self, name: &str) -> Option<u32>;
    fn add_to_counter(&self, id: u32, n: u64);
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    id: Option<u32>,
    pending: u64,
}

/// One worker's counts since the last flush, and the ids of the counters it defined.
#[derive(Debug)]
pub struct Counters {
    slots: Vec<Slot>,
    /// Every tool named in some resource's `tool_scopes`, sorted.
    tools: Vec<String>,
}

impl Counters {
    pub fn new(config: &Config) -> Counters {
        let tools: BTreeSet<&String> = config
            .resources
            .iter()
            .flat_map(|r| r.tool_scopes.keys())
            .collect();
        let tools: Vec<String> = tools.into_iter().cloned().collect();
        Counters {
            slots: vec![Slot::default(); Reason::ALL.len() + PLAIN.len() + tools.len()],
            tools,
        }
    }

    /// The configured tools, in the order [`Metric::ToolDenied`] indexes them.
    pub fn tools(&self) -> &[String] {
        &self.tools
    }

    /// The counter of a configured tool's refusals (none for an unknown tool).
    pub fn tool(&self, name: &str) -> Option<Metric> {
        self.tools
            .binary_search_by(|t| t.as_str().cmp(name))
            .ok()
            .map(Metric::ToolDenied)
    }

    pub fn add(&mut self, metric: Metric, n: u64) {
        if let Some(slot) = self.slots.get_mut(metric.slot()) {
            slot.pending = slot.pending.saturating_add(n);
        }
    }

    /// Defines `metrics` with the host so they show at 0 before anything happened (a rate
    /// needs a first sample).
    pub fn define(&mut self, sink: &dyn CounterSink, metrics: &[Metric]) {
        for metric in metrics {
            self.id(sink, *metric);
        }
    }

    /// What has not been flushed yet.
    pub fn pending(&self, metric: Metric) -> u64 {
        self.slots.get(metric.slot()).map_or(0, |s| s.pending)
    }

    /// Hands every pending count to the host.
    pub fn flush(&mut self, sink: &dyn CounterSink) {
        let metrics: Vec<Metric> = Reason::ALL
            .iter()
            .map(|r| Metric::RequestsDenied(*r))
            .chain(PLAIN)
            .chain((0..self.tools.len()).map(Metric::ToolDenied))
            .filter(|m| self.pending(*m) > 0)
            .collect();
        for metric in metrics {
            let Some(id) = self.id(sink, metric) else {
                continue;
            };
            if let Some(slot) = self.slots.get_mut(metric.slot()) {
                sink.add_to_counter(id, slot.pending);
                slot.pending = 0;
            }
        }
    }

    fn id(&mut self, sink: &dyn CounterSink, metric: Metric) -> Option<u32> {
        let slot = self.slots.get(metric.slot())?;
        if slot.id.is_none() {
            let name = format!("{PREFIX}{}", metric.name(&self.tools));
            let id = sink.define_counter(&name);
            if let Some(slot) = self.slots.get_mut(metric.slot()) {
                slot.id = id;
            }
        }
        let slot = self.slots.get(metric.slot())?;
        slot.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{base_json, compile};
    use serde_json::json;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Sink {
        counters: RefCell<BTreeMap<String, u64>>,
        names: RefCell<Vec<String>>,
    }

    impl CounterSink for Sink {
        fn define_counter(&self, name: &str) -> Option<u32> {
            let mut names = self.names.borrow_mut();
            names.push(name.to_string());
            self.counters
                .borrow_mut()
                .entry(name.to_string())
                .or_default();
            Some(names.len() as u32 - 1)
        }

        fn add_to_counter(&self, id: u32, n: u64) {
            let name = self.names.borrow()[id as usize].clone();
            *self.counters.borrow_mut().entry(name).or_default() += n;
        }
    }

    #[test]
    fn names_every_counter_once() {
        let mut v = base_json();
        v["resources"][0]["tool_scopes"] = json!({"rm -rf": ["a"], "deploy": ["b"]});
        let c = Counters::new(&compile(&v).unwrap());
        let mut names: Vec<String> = Reason::ALL
            .iter()
            .map(|r| Metric::RequestsDenied(*r))
            .chain(PLAIN)
            .chain([Metric::ToolDenied(0), Metric::ToolDenied(1)])
            .map(|m| m.name(c.tools()))
            .collect();
        assert!(names.contains(&"requests_denied_token_expired".to_string()));
        assert!(names.contains(&"tool_denied_rm_-rf".to_string()));
        assert_eq!(c.tool("deploy"), Some(Metric::ToolDenied(0)));
        assert_eq!(c.tool("echo"), None);
        let all = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all);
    }

    #[test]
    fn counts_in_memory_and_hands_the_sums_over_on_flush() {
        let c = compile(&base_json()).unwrap();
        let mut counters = Counters::new(&c);
        let sink = Sink::default();
        counters.define(&sink, &[Metric::RequestsAllowed]);
        assert_eq!(sink.counters.borrow()["mcp_oauth_requests_allowed"], 0);
        for _ in 0..3 {
            counters.add(Metric::RequestsAllowed, 1);
        }
        counters.add(Metric::of(Outcome::Denied(Reason::TokenExpired)), 2);
        assert_eq!(sink.counters.borrow()["mcp_oauth_requests_allowed"], 0);
        counters.flush(&sink);
        counters.flush(&sink);
        let got = sink.counters.borrow();
        assert_eq!(got["mcp_oauth_requests_allowed"], 3);
        assert_eq!(got["mcp_oauth_requests_denied_token_expired"], 2);
        assert_eq!(got.len(), 2, "only what happened is defined: {got:?}");
        assert_eq!(sink.names.borrow().len(), 2, "each counter defined once");
    }
}
