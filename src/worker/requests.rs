//! A request's way through the worker: decided at its headers, or held (for keys, for its
//! body) as one pending entry until a decision lets it go or answers it.
//!
//! What a decision does to a request depends on where it is made: in its own callback the
//! worker returns `Continue`; on the tick (keys arrived, a wait ran out) it asks the host to
//! resume the held request. A request is only ever let go by an `Allow` (or a path that is not
//! ours); everything else answers it.

use super::pending::{BodySoFar, BodyWait, KeyWait, Pending};
use super::{Flow, Host, HostSignatures, State, Trusted};
use crate::config::{Config, IssuerId};
use crate::decide::{decide, decide_body, Allow, BodyCheck, Decision};
use crate::headers::RequestHead;
use crate::metrics::Metric;
use crate::reason::{Outcome, Reason};
use crate::response::{self, Response};

/// How often the worker may log that held headers got no body (it is a setting, not news).
const BODY_WARNING_EVERY_MS: u64 = 60_000;

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
        match self.decide_head(config, &head, now) {
            Decision::PassThrough => {
                self.remove_claim_headers(config, context, &head);
                Flow::Continue
            }
            Decision::Allow(allow) => {
                self.edit_headers(config, context, &head, &allow);
                self.counters.add(Metric::RequestsAllowed, 1);
                Flow::Continue
            }
            Decision::Respond(r) => {
                self.respond(context, &head, r);
                Flow::Pause
            }
            Decision::ReadBody { check, edits } => {
                // Safe before the body decides: a denied request goes nowhere.
                self.edit_headers(config, context, &head, &edits);
                if end_of_stream {
                    let decision = decide_body(config, &check, &head.request(), b"");
                    return self.apply_body_decision(context, &head, decision);
                }
                let held = config.hold_headers_for_body;
                self.await_body(config, context, check, head, held, false);
                if held {
                    Flow::Pause
                } else {
                    Flow::Continue
                }
            }
            Decision::WaitForKeys {
                issuer,
                resource,
                refetch,
            } => {
                self.hold_for_keys(context, head, issuer, resource, refetch);
                Flow::Pause
            }
        }
    }

    /// Holds a request until its issuer's keys change or its wait runs out.
    fn hold_for_keys(
        &mut self,
        context: u32,
        head: RequestHead,
        issuer: IssuerId,
        resource: usize,
        refetch: bool,
    ) {
        if refetch {
            self.fetcher.want_refetch(issuer);
        }
        let generation = self.keys.state(issuer).map_or(0, |s| s.generation);
        let deadline_ms = self.host.now_ms() + self.fetcher.wait_ms(issuer);
        self.pending.insert(
            context,
            Pending::Keys(KeyWait {
                issuer,
                resource,
                deadline_ms,
                generation,
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
            Some(Pending::Keys(wait)) => {
                let reads_body = config
                    .resources
                    .get(wait.resource)
                    .is_some_and(|r| r.inspects_body());
                if !reads_body {
                    return Flow::Pause; // decided on its headers once the keys are here
                }
                if too_large {
                    let origin = wait.head.origin().map(str::to_string);
                    let head = std::mem::take(&mut wait.head);
                    let r = response::body_too_large(config, origin.as_deref());
                    self.respond(context, &head, r);
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
                self.apply_body_decision(context, &wait.head, decision)
            }
        }
    }

    /// Applies the decision on a read body, in the request's own callback.
    fn apply_body_decision(
        &mut self,
        context: u32,
        head: &RequestHead,
        decision: Decision<'_>,
    ) -> Flow {
        match decision {
            // The header edits were made when the headers were decided.
            Decision::Allow(_) => {
                self.counters.add(Metric::RequestsAllowed, 1);
                Flow::Continue
            }
            Decision::Respond(r) => {
                self.respond(context, head, r);
                Flow::Pause
            }
            // `decide_body` answers or allows; anything else would be a request it does not
            // know, which is refused rather than let through.
            _ => {
                self.respond(context, head, response::keys_unavailable(head.origin()));
                Flow::Pause
            }
        }
    }

    /// Decides again every request held for keys whose issuer's keys changed or whose wait
    /// ran out; one still without keys at its deadline gets a 503.
    pub(super) fn wake_key_waits(&mut self, config: &Config) {
        let now_ms = self.host.now_ms();
        let keys = &self.keys;
        let due = self.pending.key_waits(|w| {
            let generation = keys.state(w.issuer).map_or(0, |s| s.generation);
            generation != w.generation || now_ms >= w.deadline_ms
        });
        for context in due {
            let Some(Pending::Keys(mut wait)) = self.pending.remove(context) else {
                continue;
            };
            match self.decide_head(config, &wait.head, now_ms / 1000) {
                Decision::WaitForKeys { refetch, .. } if now_ms < wait.deadline_ms => {
                    if refetch {
                        self.fetcher.want_refetch(wait.issuer);
                    }
                    wait.generation = self.keys.state(wait.issuer).map_or(0, |s| s.generation);
                    self.pending.insert(context, Pending::Keys(wait));
                }
                Decision::WaitForKeys { .. } => {
                    let r = response::keys_unavailable(wait.head.origin());
                    self.respond(context, &wait.head, r);
                }
                Decision::PassThrough => {
                    self.remove_claim_headers(config, context, &wait.head);
                    self.host.resume(context);
                }
                Decision::Allow(allow) => {
                    self.edit_headers(config, context, &wait.head, &allow);
                    self.counters.add(Metric::RequestsAllowed, 1);
                    self.host.resume(context);
                }
                Decision::Respond(r) => self.respond(context, &wait.head, r),
                Decision::ReadBody { check, edits } => {
                    self.edit_headers(config, context, &wait.head, &edits);
                    self.read_held_body(config, context, wait, check);
                }
            }
        }
    }

    /// A request held for keys whose body now decides. A body that arrived whole while the
    /// request was held is decided at once. Otherwise the request waits for it: with the
    /// headers still held, unless the operator lets them go first (`hold_headers_for_body:
    /// false`) and no chunk of the body reached the filter yet (resuming then would release
    /// chunks unread).
    fn read_held_body(&mut self, config: &Config, context: u32, wait: KeyWait, check: BodyCheck) {
        match wait.body {
            BodySoFar::Whole(body) => {
                let decision = if body.len() > config.max_body_bytes {
                    Decision::Respond(response::body_too_large(config, wait.head.origin()))
                } else {
                    decide_body(config, &check, &wait.head.request(), &body)
                };
                if self.apply_body_decision(context, &wait.head, decision) == Flow::Continue {
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
            self.respond(context, &wait.head, r);
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
    fn respond(&mut self, context: u32, head: &RequestHead, r: Response<'_>) {
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
