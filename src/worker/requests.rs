//! A request's way through the worker: decided at its headers, or held (for keys, for its
//! body) as one pending entry until a decision lets it go or answers it.
//!
//! What a decision does to a request depends on where it is made: in its own callback the
//! worker returns `Continue`; on the tick (keys arrived, a wait ran out) it asks the host to
//! resume the held request. A request is only ever let go by an `Allow` (or a path that is not
//! ours); everything else answers it.

use super::introspector::CallError;
use super::pending::{Awaiting, BodySoFar, BodyWait, Listing, Pending, TokenWait};
use super::{Flow, Host, HostSignatures, State, Trusted};
use crate::challenge::ErrorCode;
use crate::config::{Config, IssuerId, KeySource};
use crate::decide::{authorize, decide, decide_body, Allow, BodyCheck, Decision};
use crate::extract::{self, Credential};
use crate::headers::RequestHead;
use crate::introspect::{self, Answer, Cached, Digest};
use crate::metrics::Metric;
use crate::paths;
use crate::reason::{Outcome, Reason};
use crate::response::{self, Response};
use crate::token::Audit;
use crate::tools_list::ListFilter;
use crate::verify::AuthError;

/// The outcome of a request let through, as the audit trail names it.
const ALLOWED: &str = "allowed";

/// How often the worker may log that held headers got no body (it is a setting, not news).
const BODY_WARNING_EVERY_MS: u64 = 60_000;

/// A decision that stands, or what the request must wait for first.
enum Step<'c> {
    Decided(Decision<'c>),
    Hold { awaiting: Awaiting, resource: usize },
}

/// An introspection answer that just came, for the requests that waited for it.
#[derive(Clone, Copy)]
pub(super) struct Fresh<'a> {
    pub issuer: IssuerId,
    pub digest: Digest,
    pub answer: &'a Answer,
}

/// The bearer token of a request (there is one: only a token is introspected).
fn bearer(head: &RequestHead) -> Option<&str> {
    let req = head.request();
    match extract::extract(&req.authorization, paths::split_query(req.path).1) {
        Credential::Bearer(token) => Some(token),
        _ => None,
    }
}

/// Whether a decision was made without keys this worker may simply not have synced yet.
fn missed_keys(decision: &Decision<'_>) -> bool {
    match decision {
        Decision::WaitForKeys { .. } => true,
        Decision::Respond(r) => r.outcome == Outcome::Denied(Reason::UnknownKid),
        _ => false,
    }
}

impl<H: Host> State<H> {
    /// Decides a request's headers at `now` (seconds). A decision made without keys another
    /// worker may already have stored is made again after taking them.
    fn decide_head<'c>(
        &mut self,
        config: &'c Config,
        head: &RequestHead,
        now: u64,
    ) -> Decision<'c> {
        let mut decision = self.decide_once(config, head, now);
        if missed_keys(&decision) && self.sync_all_keys() {
            self.cache.take_counts(); // the request is decided again: count that one
            decision = self.decide_once(config, head, now);
        }
        if matches!(decision, Decision::WaitForKeys { .. }) {
            self.cache.take_counts(); // counted when the held request is decided
        } else {
            self.count_cache();
        }
        decision
    }

    fn decide_once<'c>(&self, config: &'c Config, head: &RequestHead, now: u64) -> Decision<'c> {
        let signatures = HostSignatures {
            host: &self.host,
            state: &self.signatures,
        };
        let keys = Trusted {
            ring: &self.keys,
            host: &signatures,
        };
        decide(config, &keys, Some(&self.cache), &head.request(), now)
    }

    pub(super) fn on_request_headers(
        &mut self,
        config: &Config,
        context: u32,
        pairs: &[u8],
        end_of_stream: bool,
    ) -> Flow {
        let head = RequestHead::parse(pairs, config, !end_of_stream);
        // Only a token needs the time: skip the host call for everything else.
        let now = if head.has_authorization() {
            self.host.now_ms() / 1000
        } else {
            0
        };
        let decision = self.decide_head(config, &head, now);
        let decision = match self.settle(config, &head, decision, now, None) {
            Step::Decided(decision) => decision,
            Step::Hold { awaiting, resource } => {
                self.hold(config, context, head, awaiting, resource);
                return Flow::Pause;
            }
        };
        match decision {
            Decision::PassThrough => {
                self.remove_claim_headers(config, context, &head);
                Flow::Continue
            }
            Decision::Allow(allow) => {
                self.edit_headers(config, context, &head, &allow);
                self.counters.add(Metric::RequestsAllowed, 1);
                self.record(config, context, &allow.audit, ALLOWED);
                self.expect_tool_lists(context, allow.tools_list, true);
                Flow::Continue
            }
            Decision::ReadBody { check, edits } => {
                // Safe before the body decides: a denied request goes nowhere.
                self.edit_headers(config, context, &head, &edits);
                if end_of_stream {
                    let decision = decide_body(config, &check, &head.request(), b"");
                    return self.apply_body_decision(config, context, &head, decision, true);
                }
                let held = config.hold_headers_for_body;
                self.await_body(config, context, check, head, held, false);
                if held {
                    Flow::Pause
                } else {
                    Flow::Continue
                }
            }
            Decision::Respond(r) => {
                self.respond(config, context, &head, r);
                Flow::Pause
            }
            // `settle` turned these into a hold or a decision.
            Decision::WaitForKeys { .. }
            | Decision::Introspect { .. }
            | Decision::OriginMetadata { .. } => {
                self.respond(
                    config,
                    context,
                    &head,
                    response::keys_unavailable(head.origin()),
                );
                Flow::Pause
            }
        }
    }

    /// Turns a decision that needs something first into what the request waits for, or
    /// settles it now: an introspection answer in the shared cache (or just come) decides at
    /// once, an unknown token is asked about.
    fn settle<'c>(
        &mut self,
        config: &'c Config,
        head: &RequestHead,
        decision: Decision<'c>,
        now: u64,
        fresh: Option<Fresh<'_>>,
    ) -> Step<'c> {
        match decision {
            Decision::WaitForKeys {
                issuer,
                resource,
                refetch,
            } => {
                if refetch {
                    self.fetcher.want_refetch(issuer);
                }
                Step::Hold {
                    awaiting: self.awaiting_keys(issuer),
                    resource,
                }
            }
            Decision::Introspect { resource, issuers } => {
                self.introspect(config, head, resource, &issuers, now, fresh)
            }
            Decision::OriginMetadata { issuer } => {
                let now = self.host.now_ms() / 1000;
                let served = self.documents.served(&self.host, issuer, now);
                let req = head.request();
                Step::Decided(Decision::Respond(response::as_metadata(
                    served.map(|s| (s.body, s.max_age)),
                    req.method,
                    req.origin,
                )))
            }
            other => Step::Decided(other),
        }
    }

    fn awaiting_keys(&self, issuer: IssuerId) -> Awaiting {
        Awaiting::Keys {
            issuer,
            generation: self.keys.state(issuer).map_or(0, |s| s.generation),
        }
    }

    /// Asks the resource's introspecting issuers about an opaque token, in order (RFC 7662):
    /// the first that says it is active decides; an issuer whose answer is not known yet is
    /// asked (once per worker), and the request waits for it.
    fn introspect<'c>(
        &mut self,
        config: &'c Config,
        head: &RequestHead,
        index: usize,
        issuers: &[IssuerId],
        now: u64,
        fresh: Option<Fresh<'_>>,
    ) -> Step<'c> {
        let (Some(resource), Some(token_text)) = (config.resources.get(index), bearer(head)) else {
            return Step::Decided(Decision::PassThrough);
        };
        let deny = |e: AuthError| {
            Step::Decided(Decision::Respond(response::denial(
                resource,
                head.origin(),
                ErrorCode::InvalidToken,
                e.reason(),
                e.description(),
                &[],
            )))
        };
        let unavailable = |reason| {
            Step::Decided(Decision::Respond(response::introspection_unavailable(
                reason,
                head.origin(),
            )))
        };
        let digest = introspect::digest(token_text);
        for &issuer in issuers {
            let Some(name) = config.issuers.get(issuer).map(|i| i.issuer.as_str()) else {
                continue;
            };
            let discovered = self
                .keys
                .state(issuer)
                .and_then(|s| s.discovered_introspection_endpoint.clone());
            if !self
                .introspector
                .ready(config, issuer, discovered.as_deref())
            {
                // The endpoint is discovered from the issuer's metadata: wait for it.
                return Step::Hold {
                    awaiting: self.awaiting_keys(issuer),
                    resource: index,
                };
            }
            let known = match fresh {
                Some(f) if f.issuer == issuer && f.digest == digest => match f.answer {
                    Answer::Active(members) => {
                        let keep = config
                            .issuers
                            .get(issuer)
                            .and_then(|i| i.introspection.as_ref());
                        let keep =
                            keep.map_or(0, |spec| introspect::keep_seconds(f.answer, spec, now));
                        Cached::Active(members.clone(), now.saturating_add(keep))
                    }
                    Answer::Inactive => Cached::Inactive,
                },
                _ => {
                    let (slot, _) = self.host.get_shared(&introspect::cache_key(name, &digest));
                    let cached = introspect::cached(slot.as_deref(), &digest, name, now);
                    let metric = if cached == Cached::Unknown {
                        Metric::IntrospectionCacheMisses
                    } else {
                        Metric::IntrospectionCacheHits
                    };
                    self.counters.add(metric, 1);
                    cached
                }
            };
            match known {
                Cached::Active(members, until) => {
                    return match introspect::accept(&members, issuer, resource, config, now) {
                        Ok(token) => {
                            // This worker answers the token again from its verified-token
                            // cache, as long as the shared cache would.
                            if until > now {
                                let key = self.cache.key(token_text);
                                self.cache.insert(key, token.0.clone(), until as f64);
                            }
                            Step::Decided(authorize(
                                config,
                                resource,
                                index,
                                &head.request(),
                                token,
                            ))
                        }
                        Err(e) => deny(e),
                    };
                }
                Cached::Inactive => continue,
                Cached::Unknown => {
                    let asked = self.introspector.ask(
                        &self.host,
                        config,
                        issuer,
                        discovered.as_deref(),
                        token_text,
                        digest,
                        self.running_in,
                    );
                    return match asked {
                        Ok(()) => Step::Hold {
                            awaiting: Awaiting::Answer { issuer, digest },
                            resource: index,
                        },
                        Err(CallError::Busy) => unavailable(Reason::IntrospectionBusy),
                        Err(CallError::Refused(status)) => {
                            log::warn!(
                                "mcp-oauth-filter: cannot introspect at {name:?}: the host refused the call (status {status}; is the cluster defined?)"
                            );
                            unavailable(Reason::IntrospectionUnavailable)
                        }
                    };
                }
            }
        }
        deny(AuthError::Inactive)
    }

    /// Holds a request until what it waits for comes or its wait runs out.
    fn hold(
        &mut self,
        config: &Config,
        context: u32,
        head: RequestHead,
        awaiting: Awaiting,
        resource: usize,
    ) {
        let now_ms = self.host.now_ms();
        let deadline_ms = match awaiting {
            Awaiting::Keys { issuer, .. } => now_ms + self.fetcher.wait_ms(issuer),
            // The call's own timeout answers it; this only bounds a call never answered.
            Awaiting::Answer { issuer, .. } => {
                let timeout = config
                    .issuers
                    .get(issuer)
                    .and_then(|i| i.introspection.as_ref())
                    .map_or(0, |i| i.timeout_ms);
                now_ms + timeout + 1000
            }
        };
        self.pending.insert(
            context,
            Pending::Token(TokenWait {
                awaiting,
                resource,
                deadline_ms,
                head,
                body: BodySoFar::Nothing,
            }),
        );
    }

    /// Starts the `body_wait_ms` clock for a request whose body decides.
    fn await_body(
        &mut self,
        config: &Config,
        context: u32,
        check: BodyCheck,
        head: RequestHead,
        headers_held: bool,
        seen: bool,
    ) {
        let deadline_ms = self.host.now_ms() + config.body_wait_ms;
        self.pending.insert(
            context,
            Pending::Body(BodyWait {
                check,
                head,
                headers_held,
                seen,
                deadline_ms,
            }),
        );
    }

    /// A body chunk (`size` is what the host has buffered so far), or the trailers (no size;
    /// `ended`). Nothing held is released here except by a decision.
    pub(super) fn on_body(
        &mut self,
        config: &Config,
        context: u32,
        size: Option<usize>,
        ended: bool,
    ) -> Flow {
        let too_large = size.is_some_and(|s| s > config.max_body_bytes);
        match self.pending.get_mut(context) {
            // Let go (allowed, or not ours): the rest of it goes on.
            None => Flow::Continue,
            Some(Pending::Answered) => Flow::Pause,
            // Let go once its body was read whole.
            Some(Pending::Listing(_)) => Flow::Continue,
            Some(Pending::Token(wait)) => {
                let reads_body = config
                    .resources
                    .get(wait.resource)
                    .is_some_and(|r| r.inspects_body());
                if !reads_body {
                    return Flow::Pause; // decided on its headers once its token is
                }
                if too_large {
                    let origin = wait.head.origin().map(str::to_string);
                    let head = std::mem::take(&mut wait.head);
                    let r = response::body_too_large(config, origin.as_deref());
                    self.respond(config, context, &head, r);
                    return Flow::Pause;
                }
                wait.body = if ended {
                    BodySoFar::Whole(self.host.request_body(context, config.max_body_bytes + 1))
                } else {
                    BodySoFar::Partial
                };
                Flow::Pause
            }
            Some(Pending::Body(wait)) => {
                wait.seen = true;
                if !ended && !too_large {
                    return Flow::Pause; // buffer until the whole body is here
                }
                let Some(Pending::Body(wait)) = self.pending.remove(context) else {
                    return Flow::Pause;
                };
                let body = if too_large {
                    Vec::new()
                } else {
                    self.host.request_body(context, config.max_body_bytes + 1)
                };
                let decision = if too_large || body.len() > config.max_body_bytes {
                    Decision::Respond(response::body_too_large(config, wait.head.origin()))
                } else {
                    decide_body(config, &wait.check, &wait.head.request(), &body)
                };
                self.apply_body_decision(config, context, &wait.head, decision, wait.headers_held)
            }
        }
    }

    /// Applies the decision on a read body, in the request's own callback (or, for a body
    /// that came whole while its token was held, on the tick). `headers_held`: the request's
    /// headers have not gone upstream yet.
    fn apply_body_decision(
        &mut self,
        config: &Config,
        context: u32,
        head: &RequestHead,
        decision: Decision<'_>,
        headers_held: bool,
    ) -> Flow {
        match decision {
            // The header edits were made when the headers were decided.
            Decision::Allow(allow) => {
                self.counters.add(Metric::RequestsAllowed, 1);
                self.record(config, context, &allow.audit, ALLOWED);
                self.expect_tool_lists(context, allow.tools_list, headers_held);
                Flow::Continue
            }
            Decision::Respond(r) => {
                self.respond(config, context, head, r);
                Flow::Pause
            }
            // `decide_body` answers or allows; anything else would be a request it does not
            // know, which is refused rather than let through.
            _ => {
                self.respond(
                    config,
                    context,
                    head,
                    response::keys_unavailable(head.origin()),
                );
                Flow::Pause
            }
        }
    }

    /// The decision, as filter state for the access log (README, "Audit trail in the access
    /// log").
    fn record(&self, config: &Config, context: u32, audit: &Audit, outcome: &str) {
        if !config.audit_filter_state {
            return;
        }
        for (name, value) in audit.fields(outcome) {
            self.host.set_filter_state(context, name, &value);
        }
    }

    /// An allowed request whose response carries tool lists to filter stays known until its
    /// response is done. `headers_held`: its headers can still be edited.
    fn expect_tool_lists(&mut self, context: u32, filter: Option<ListFilter>, headers_held: bool) {
        let Some(filter) = filter else {
            return;
        };
        if headers_held {
            // A compressed list cannot be read (it would be replaced with an error): ask
            // the upstream for one that is not.
            self.host.remove_request_header(context, "accept-encoding");
        }
        self.pending
            .insert(context, Pending::Listing(Listing::Requested(filter)));
    }

    /// Decides again every held token whose issuer's keys changed, or whose wait ran out
    /// (then, still undecided, it gets a 503).
    pub(super) fn wake_key_waits(&mut self, config: &Config) {
        let now_ms = self.host.now_ms();
        let (keys, introspector) = (&self.keys, &self.introspector);
        let due = self.pending.token_waits(|w| match w.awaiting {
            Awaiting::Keys { issuer, generation } => {
                now_ms >= w.deadline_ms
                    || keys.state(issuer).map_or(0, |s| s.generation) != generation
            }
            // Its call is gone (the request that sent it ended): ask again.
            Awaiting::Answer { issuer, digest } => {
                now_ms >= w.deadline_ms || !introspector.asking(issuer, &digest)
            }
        });
        for context in due {
            self.decide_held(config, context, None);
        }
    }

    /// An introspection call answered (or failed: `answer` is `Err`): every request waiting
    /// for it is decided again, with the answer in hand.
    pub(super) fn wake_introspection_waits(
        &mut self,
        config: &Config,
        issuer: IssuerId,
        digest: Digest,
        answer: Result<&Answer, ()>,
    ) {
        let due = self
            .pending
            .token_waits(|w| w.awaiting == Awaiting::Answer { issuer, digest });
        for context in due {
            match answer {
                Ok(answer) => {
                    let fresh = Fresh {
                        issuer,
                        digest,
                        answer,
                    };
                    self.decide_held(config, context, Some(fresh));
                }
                Err(()) => {
                    let Some(Pending::Token(wait)) = self.pending.remove(context) else {
                        continue;
                    };
                    let r = response::introspection_unavailable(
                        Reason::IntrospectionUnavailable,
                        wait.head.origin(),
                    );
                    self.respond(config, context, &wait.head, r);
                }
            }
        }
    }

    /// Decides a held token again, on the tick or when what it waited for came: the request
    /// is resumed, answered, waits for its body, or (before its deadline) keeps waiting.
    fn decide_held(&mut self, config: &Config, context: u32, fresh: Option<Fresh<'_>>) {
        let Some(Pending::Token(wait)) = self.pending.remove(context) else {
            return;
        };
        let now_ms = self.host.now_ms();
        let decision = self.decide_head(config, &wait.head, now_ms / 1000);
        let decision = match self.settle(config, &wait.head, decision, now_ms / 1000, fresh) {
            Step::Decided(decision) => decision,
            Step::Hold { awaiting, resource } if now_ms < wait.deadline_ms => {
                // Still waiting, for this (or the next) thing, within the same deadline.
                let deadline_ms = if awaiting == wait.awaiting {
                    wait.deadline_ms
                } else {
                    now_ms.max(wait.deadline_ms)
                };
                self.pending.insert(
                    context,
                    Pending::Token(TokenWait {
                        awaiting,
                        resource,
                        deadline_ms,
                        ..wait
                    }),
                );
                return;
            }
            Step::Hold { awaiting, .. } => {
                let r = Self::unavailable(config, awaiting, wait.head.origin());
                self.respond(config, context, &wait.head, r);
                return;
            }
        };
        match decision {
            Decision::PassThrough => {
                self.remove_claim_headers(config, context, &wait.head);
                self.host.resume(context);
            }
            Decision::Allow(allow) => {
                self.edit_headers(config, context, &wait.head, &allow);
                self.counters.add(Metric::RequestsAllowed, 1);
                self.record(config, context, &allow.audit, ALLOWED);
                self.expect_tool_lists(context, allow.tools_list, true);
                self.host.resume(context);
            }
            Decision::Respond(r) => self.respond(config, context, &wait.head, r),
            Decision::ReadBody { check, edits } => {
                self.edit_headers(config, context, &wait.head, &edits);
                self.read_held_body(config, context, wait, check);
            }
            Decision::WaitForKeys { .. }
            | Decision::Introspect { .. }
            | Decision::OriginMetadata { .. } => {
                let r = response::keys_unavailable(wait.head.origin());
                self.respond(config, context, &wait.head, r);
            }
        }
    }

    /// The 503 of a token whose wait ran out: keys not loaded, or no introspection answer
    /// (nor endpoint, for an issuer without keys).
    fn unavailable<'c>(config: &Config, awaiting: Awaiting, origin: Option<&str>) -> Response<'c> {
        match awaiting {
            Awaiting::Keys { issuer, .. }
                if config
                    .issuers
                    .get(issuer)
                    .is_none_or(|i| i.keys != KeySource::None) =>
            {
                response::keys_unavailable(origin)
            }
            _ => response::introspection_unavailable(Reason::IntrospectionUnavailable, origin),
        }
    }

    /// A held token whose body now decides. A body that arrived whole while the request was
    /// held is decided at once. Otherwise the request waits for it: with the headers still
    /// held, unless the operator lets them go first (`hold_headers_for_body: false`) and no
    /// chunk of the body reached the filter yet (resuming then would release chunks unread).
    fn read_held_body(&mut self, config: &Config, context: u32, wait: TokenWait, check: BodyCheck) {
        match wait.body {
            BodySoFar::Whole(body) => {
                let decision = if body.len() > config.max_body_bytes {
                    Decision::Respond(response::body_too_large(config, wait.head.origin()))
                } else {
                    decide_body(config, &check, &wait.head.request(), &body)
                };
                if self.apply_body_decision(config, context, &wait.head, decision, true)
                    == Flow::Continue
                {
                    self.host.resume(context);
                }
            }
            BodySoFar::Partial => self.await_body(config, context, check, wait.head, true, true),
            BodySoFar::Nothing => {
                let held = config.hold_headers_for_body;
                self.await_body(config, context, check, wait.head, held, false);
                if !held {
                    self.host.resume(context);
                }
            }
        }
    }

    /// Answers requests whose body did not arrive whole within `body_wait_ms`: 503 when the
    /// headers were held and no chunk ever came (Envoy does not hand bodies to a filter that
    /// holds the headers without `allow_on_headers_stop_iteration`), else 408. Never released.
    pub(super) fn expire_body_waits(&mut self, config: &Config) {
        if self.pending.is_empty() {
            return;
        }
        let now_ms = self.host.now_ms();
        for context in self.pending.body_waits_past(now_ms) {
            let Some(Pending::Body(wait)) = self.pending.remove(context) else {
                continue;
            };
            let r = if wait.headers_held && !wait.seen {
                self.warn_body_not_delivered(config, now_ms);
                response::body_not_delivered(wait.head.origin())
            } else {
                response::body_incomplete(config, wait.head.origin())
            };
            self.respond(config, context, &wait.head, r);
        }
    }

    fn warn_body_not_delivered(&mut self, config: &Config, now_ms: u64) {
        if self
            .body_warned_ms
            .is_some_and(|at| now_ms < at + BODY_WARNING_EVERY_MS)
        {
            return;
        }
        self.body_warned_ms = Some(now_ms);
        log::warn!(
            "mcp-oauth-filter: no request body reached the filter within body_wait_ms ({} ms) while the headers were held: set allow_on_headers_stop_iteration: true on the wasm filter, or hold_headers_for_body: false in the plugin configuration where the host cannot (Istio WasmPlugin, Envoy Gateway); answered 503",
            config.body_wait_ms
        );
    }

    /// Sends a response the filter makes itself, counts it, and marks the request answered.
    fn respond(&mut self, config: &Config, context: u32, head: &RequestHead, mut r: Response<'_>) {
        if let (Some(_), Some(origin)) = (&config.allowed_origins, head.origin()) {
            response::name_origin(&mut r, origin);
        }
        let audit = r.audit.take().unwrap_or_default();
        self.record(config, context, &audit, r.outcome.code());
        if let Outcome::Denied(reason) = r.outcome {
            log::debug!(
                "mcp-oauth-filter: denied {} {} with {}: {}",
                head.method(),
                crate::paths::split_query(head.path()).0,
                r.status,
                reason.code()
            );
        }
        self.counters.add(Metric::of(r.outcome), 1);
        for tool in &r.denied_tools {
            if let Some(metric) = self.counters.tool(tool) {
                self.counters.add(metric, 1);
            }
        }
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (*n, v.as_ref())).collect();
        self.host
            .respond(context, r.status, &headers, r.body.as_bytes());
        self.pending.answered(context);
    }

    /// Removes client copies of claim headers, then applies an allowed request's edits (a
    /// no-op for headers already gone upstream).
    fn edit_headers(&self, config: &Config, context: u32, head: &RequestHead, allow: &Allow<'_>) {
        self.remove_claim_headers(config, context, head);
        if allow.strip_authorization {
            self.host.remove_request_header(context, "authorization");
        }
        for (name, value) in &allow.set_headers {
            self.host.set_request_header(context, name, value);
        }
    }

    /// The upstream may trust claim headers: a client's copy never reaches it.
    fn remove_claim_headers(&self, config: &Config, context: u32, head: &RequestHead) {
        if head.has_claim_header {
            for (header, _) in &config.claim_headers {
                self.host.remove_request_header(context, header);
            }
        }
    }
}
