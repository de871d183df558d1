//! The glue: the only code (with `lib.rs`) that talks to the proxy-wasm host. The root context
//! compiles the configuration once and drives the remote-key state machine (`remote.rs`) from
//! `on_tick` and `on_http_call_response`; each HTTP context gathers a request view, calls
//! [`decide`], and applies the decision. No decision logic lives here.

use crate::config::{Config, IssuerId, KeySource};
use crate::decide::{decide, decide_body, Allow, BodyCheck, Decision, Request};
use crate::hostsig::{self, HostVerify};
use crate::keyring::KeyRing;
use crate::reason::{Outcome, Reason};
use crate::remote::{self, FetchError, FetchPolicy, FetchState, Target, Why};
use crate::response;
use crate::url::HttpUrl;
use crate::verify::KeyStore;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// Host calls whose status the filter must be able to ignore. The SDK's wrappers panic on any
/// status they do not expect (a header map already sent upstream, a stream already answered),
/// and a panic kills the VM for every request on that worker: these return the status.
mod host {
    const REQUEST_HEADERS: u32 = 0; // MapType::HttpRequestHeaders
    const HTTP_REQUEST: u32 = 0; // StreamType::HttpRequest

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_remove_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
        ) -> u32;
        fn proxy_continue_stream(stream_type: u32) -> u32;
        fn proxy_get_header_map_pairs(
            map_type: u32,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        fn proxy_send_local_response(
            status_code: u32,
            details_data: *const u8,
            details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        fn proxy_call_foreign_function(
            name_data: *const u8,
            name_size: usize,
            args_data: *const u8,
            args_size: usize,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
    }

    /// Calls the host's foreign function `name`: its answer, or the status it failed with.
    pub fn call_foreign(name: &str, args: &[u8]) -> Result<Vec<u8>, u32> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: pointers and lengths of live slices, which the host copies; on success it
        // wrote a buffer allocated with this module's allocator, of `size` bytes, now ours.
        unsafe {
            let status = proxy_call_foreign_function(
                name.as_ptr(),
                name.len(),
                args.as_ptr(),
                args.len(),
                &mut data,
                &mut size,
            );
            if status != 0 {
                return Err(status);
            }
            if data.is_null() {
                return Ok(Vec::new());
            }
            Ok(Vec::from_raw_parts(data, size, size))
        }
    }

    pub fn set_request_header(name: &str, value: &str) {
        // SAFETY: pointers and lengths of live slices; the host copies them.
        unsafe {
            proxy_replace_header_map_value(
                REQUEST_HEADERS,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            );
        }
    }

    pub fn remove_request_header(name: &str) {
        // SAFETY: as above.
        unsafe {
            proxy_remove_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len());
        }
    }

    /// The request headers in the proxy-wasm map encoding, in one host call; empty if the
    /// host has none to give.
    pub fn request_header_pairs() -> Vec<u8> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: on success the host wrote a buffer it allocated with this module's
        // allocator (`proxy_on_memory_allocate`), of `size` bytes, which we now own.
        unsafe {
            if proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) != 0
                || data.is_null()
            {
                return Vec::new();
            }
            Vec::from_raw_parts(data, size, size)
        }
    }

    /// Iterates over `(name, value)` in a serialized header map without copying; a
    /// malformed buffer ends the iteration.
    pub fn pairs(buf: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        let u32_at = |at: usize| -> Option<usize> {
            let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
            Some(u32::from_le_bytes(bytes) as usize)
        };
        let count = u32_at(0).unwrap_or(0);
        let mut data = 4 + count.saturating_mul(8);
        (0..count).map_while(move |i| {
            let name_len = u32_at(4 + i * 8)?;
            let value_len = u32_at(8 + i * 8)?;
            let name = buf.get(data..data + name_len)?;
            let value_start = data + name_len + 1;
            let value = buf.get(value_start..value_start + value_len)?;
            data = value_start + value_len + 1;
            Some((name, value))
        })
    }

    pub fn resume_request() {
        // SAFETY: no pointers.
        unsafe {
            proxy_continue_stream(HTTP_REQUEST);
        }
    }

    /// The proxy-wasm header map encoding: count, then each name and value length, then
    /// each name and value NUL-terminated (all little-endian u32).
    fn serialize(headers: &[(&str, &str)]) -> Vec<u8> {
        let size = 4 + headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 10)
            .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
        for (n, v) in headers {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (n, v) in headers {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    pub fn send_response(status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let headers = serialize(headers);
        // SAFETY: as above.
        unsafe {
            proxy_send_local_response(
                status,
                std::ptr::null(),
                0,
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            );
        }
    }
}

const METRIC_PREFIX: &str = "mcp_oauth_";
const ALLOWED_METRIC: &str = "requests_allowed";
/// The tick while keys are fetched or bodies awaited.
const TICK: Duration = Duration::from_millis(200);
/// The tick otherwise: it only follows the host's log level.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Logs at the host's level for this VM, so a disabled level costs nothing: no formatting, no
/// host call per denied request. Re-read every tick, so a level changed at run time (Envoy's
/// `/logging?wasm=debug`) takes effect within a second.
fn follow_host_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters and gauges, defined with the host on first use and remembered per VM (SPEC §8).
#[derive(Default)]
struct Metrics {
    ids: RefCell<HashMap<String, u32>>,
    /// Outcome counters by outcome, so a denial formats no name; a handful, scanned in order.
    outcomes: RefCell<Vec<(Outcome, u32)>>,
    /// The counters of the common path, so it looks up no name.
    allowed: Cell<Option<u32>>,
    cache_hits: Cell<Option<u32>>,
    cache_misses: Cell<Option<u32>>,
}

impl Metrics {
    fn increment_outcome(&self, outcome: Outcome) {
        let cached = self
            .outcomes
            .borrow()
            .iter()
            .find(|(o, _)| *o == outcome)
            .map(|(_, id)| *id);
        let id = match cached {
            Some(id) => Some(id),
            None => {
                let id = self.id(&outcome.counter_name(), MetricType::Counter);
                if let Some(id) = id {
                    self.outcomes.borrow_mut().push((outcome, id));
                }
                id
            }
        };
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    /// The id of the counter `name`, remembered in `slot`.
    fn slot_id(&self, slot: &Cell<Option<u32>>, name: &str) -> Option<u32> {
        if slot.get().is_none() {
            slot.set(self.id(name, MetricType::Counter));
        }
        slot.get()
    }

    /// Adds `n` to the counter `name`, its id remembered in `slot`.
    fn add_cached(&self, slot: &Cell<Option<u32>>, name: &str, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(id) = self.slot_id(slot, name) {
            let _ = hostcalls::increment_metric(id, n as i64);
        }
    }

    fn increment_allowed(&self) {
        self.add_cached(&self.allowed, ALLOWED_METRIC, 1);
    }

    /// Defines the counters SPEC §8 names before any request, so they show in `/stats` at 0
    /// (a rate needs a first sample) and the first request defines none. Denials by other
    /// reasons appear when they first happen.
    fn define_at_zero(&self, token_cache: bool, fetches_keys: bool) {
        self.slot_id(&self.allowed, ALLOWED_METRIC);
        if token_cache {
            self.slot_id(&self.cache_hits, "token_cache_hits");
            self.slot_id(&self.cache_misses, "token_cache_misses");
        }
        for outcome in [
            Outcome::MetadataServed,
            Outcome::Denied(Reason::MissingToken),
        ] {
            if let Some(id) = self.id(&outcome.counter_name(), MetricType::Counter) {
                self.outcomes.borrow_mut().push((outcome, id));
            }
        }
        if fetches_keys {
            self.id("key_fetches_ok", MetricType::Counter);
            self.id("key_fetches_failed", MetricType::Counter);
        }
    }

    fn id(&self, name: &str, kind: MetricType) -> Option<u32> {
        let mut ids = self.ids.borrow_mut();
        if let Some(id) = ids.get(name) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(kind, &format!("{METRIC_PREFIX}{name}")).ok()?;
        ids.insert(name.to_string(), id);
        Some(id)
    }

    fn increment(&self, name: &str) {
        self.add(name, 1);
    }

    fn add(&self, name: &str, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(id) = self.id(name, MetricType::Counter) {
            let _ = hostcalls::increment_metric(id, n as i64);
        }
    }

    /// Moves the token cache's hit and miss counts into the counters.
    fn count_cache(&self, keys: &KeyRing) {
        if let Some(cache) = keys.cache() {
            let (hits, misses) = cache.take_counts();
            self.add_cached(&self.cache_hits, "token_cache_hits", hits);
            self.add_cached(&self.cache_misses, "token_cache_misses", misses);
        }
    }

    fn set(&self, name: &str, value: u64) {
        if let Some(id) = self.id(name, MetricType::Gauge) {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

/// The request headers the filter reads, fetched in one host call. All `Authorization`
/// values are kept: asking the host for one header returns only its first value.
///
/// The values live one after another in one string (one allocation per request), each
/// field a range of it. Header values may hold any byte; lossy decoding keeps the ASCII
/// structure.
#[derive(Default, Clone)]
struct Headers {
    text: String,
    method: Span,
    path: Span,
    authority: Span,
    authorization: Vec<Span>,
    origin: Option<Span>,
    request_method: Option<Span>,
    mcp_method: Vec<Span>,
    mcp_name: Vec<Span>,
    content_length: Option<Span>,
    /// Whether the client sent a header the filter sets from claims.
    has_claim_header: bool,
    /// Whether a body follows the headers.
    has_body: bool,
}

type Span = (u32, u32);

impl Headers {
    fn read(config: &Config, has_body: bool) -> Headers {
        let buffer = host::request_header_pairs();
        let mut h = Headers {
            text: String::with_capacity(buffer.len()),
            has_body,
            ..Headers::default()
        };
        for (name, value) in host::pairs(&buffer) {
            match name {
                b":method" => h.method = h.push(value),
                b":path" => h.path = h.push(value),
                b":authority" => h.authority = h.push(value),
                b"authorization" => {
                    let span = h.push(value);
                    h.authorization.push(span);
                }
                b"origin" => h.origin = Some(h.push(value)),
                b"access-control-request-method" => h.request_method = Some(h.push(value)),
                b"mcp-method" => {
                    let span = h.push(value);
                    h.mcp_method.push(span);
                }
                b"mcp-name" => {
                    let span = h.push(value);
                    h.mcp_name.push(span);
                }
                b"content-length" => h.content_length = Some(h.push(value)),
                other => {
                    h.has_claim_header |= config
                        .claim_headers
                        .iter()
                        .any(|(c, _)| c.as_bytes() == other);
                }
            }
        }
        h
    }

    fn push(&mut self, value: &[u8]) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(&String::from_utf8_lossy(value));
        (start, self.text.len() as u32)
    }

    fn get(&self, (start, end): Span) -> &str {
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    fn method(&self) -> &str {
        self.get(self.method)
    }

    fn path(&self) -> &str {
        self.get(self.path)
    }

    fn request(&self) -> Request<'_> {
        let opt = |span: Option<Span>| span.map(|s| self.get(s));
        Request {
            method: self.method(),
            path: self.path(),
            authority: self.get(self.authority),
            authorization: self.authorization.iter().map(|s| self.get(*s)).collect(),
            origin: opt(self.origin),
            access_control_request_method: opt(self.request_method),
            mcp_method: self.mcp_method.iter().map(|s| self.get(*s)).collect(),
            mcp_name: self.mcp_name.iter().map(|s| self.get(*s)).collect(),
            content_length: opt(self.content_length),
            has_body: self.has_body,
        }
    }
}

/// A request held until its issuer's keys change (first load, or an unknown-`kid` refetch).
struct Waiter {
    context_id: u32,
    issuer: IssuerId,
    deadline_ms: u64,
    /// The issuer's fetch generation when the request started waiting.
    generation: u64,
    headers: Headers,
    /// Index of the resource in `Config::resources`.
    resource: usize,
    /// A body chunk arrived while the request waited (the host delivers bodies to a filter
    /// that holds the headers).
    body_seen: bool,
}

/// An issuer whose keys are fetched, with the shared-data keys its record and key set live
/// under. The names carry the issuer and its source, so every VM (and every listener) that
/// fetches the same keys shares one copy, and different ones never mix.
struct RemoteIssuer {
    id: IssuerId,
    issuer: String,
    cluster: String,
    jwks_uri: Option<HttpUrl>,
    policy: FetchPolicy,
    state_key: String,
    jwks_key: String,
}

/// State shared by the root context and the HTTP contexts of one VM (one worker).
struct Shared {
    /// Host calls made for held requests switch the effective context; it is switched back
    /// to the root so its key fetches are answered to it.
    root_context_id: u32,
    config: Config,
    remotes: Vec<RemoteIssuer>,
    keys: RefCell<KeyRing>,
    metrics: Metrics,
    waiters: RefCell<Vec<Waiter>>,
    /// Issuers an unknown `kid` asked to refetch.
    refetch_wanted: RefCell<Vec<IssuerId>>,
    /// Key fetches this VM has in flight: call token → issuer and document.
    in_flight: RefCell<HashMap<u32, (IssuerId, Target)>>,
    /// Body checks decided for held requests, picked up by their HTTP context.
    body_checks: RefCell<HashMap<u32, BodyCheck>>,
    /// Whole bodies that arrived while their request was held for keys.
    held_bodies: RefCell<HashMap<u32, Vec<u8>>>,
    /// Requests whose body is awaited for a decision.
    awaiting_body: RefCell<Vec<BodyWait>>,
    /// Requests the root context answered: nothing of them may move on.
    answered: RefCell<HashSet<u32>>,
}

/// A request whose body decides, until the body is whole or `body_wait_ms` runs out.
struct BodyWait {
    context_id: u32,
    deadline_ms: u64,
    /// The headers are held too (`hold_headers_for_body`, or a body already arriving).
    headers_held: bool,
    /// A body chunk arrived.
    seen: bool,
    origin: Option<String>,
}

/// What applying a decision left to do.
enum Applied {
    Continue,
    Stopped,
    Wait {
        issuer: IssuerId,
        resource: usize,
        refetch: bool,
    },
    ReadBody(BodyCheck),
}

impl Shared {
    fn remote(&self, id: IssuerId) -> Option<&RemoteIssuer> {
        self.remotes.iter().find(|r| r.id == id)
    }

    /// Applies a decision to the current (effective) HTTP context.
    fn apply(&self, context_id: u32, headers: &Headers, decision: Decision<'_>) -> Applied {
        match decision {
            Decision::PassThrough => {
                if headers.has_claim_header {
                    self.remove_claim_headers();
                }
                Applied::Continue
            }
            Decision::Allow(allow) => {
                self.edit_headers(headers, &allow);
                self.metrics.increment_allowed();
                Applied::Continue
            }
            Decision::ReadBody { check, edits } => {
                // Safe before the body decides: a denied request goes nowhere.
                self.edit_headers(headers, &edits);
                Applied::ReadBody(check)
            }
            Decision::Respond(response) => {
                if let Outcome::Denied(reason) = response.outcome {
                    log::debug!(
                        "mcp-oauth-filter: denied {} {} with {}: {}",
                        headers.method(),
                        crate::paths::split_query(headers.path()).0,
                        response.status,
                        reason.code()
                    );
                }
                self.respond(context_id, response);
                Applied::Stopped
            }
            Decision::WaitForKeys {
                issuer,
                resource,
                refetch,
            } => Applied::Wait {
                issuer,
                resource,
                refetch,
            },
        }
    }

    /// Counts and sends a response the filter makes itself (effective context).
    fn send(&self, response: response::Response<'_>) {
        self.metrics.increment_outcome(response.outcome);
        for tool in &response.denied_tools {
            self.metrics
                .increment(&format!("tool_denied_{}", metric_safe(tool)));
        }
        let list: Vec<(&str, &str)> = response
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_ref()))
            .collect();
        host::send_response(u32::from(response.status), &list, response.body.as_bytes());
    }

    /// Removes client copies of claim headers, then applies an allowed request's edits.
    /// Fails silently once the headers have gone upstream (no hold for the body).
    fn edit_headers(&self, headers: &Headers, allow: &Allow<'_>) {
        if headers.has_claim_header {
            self.remove_claim_headers();
        }
        if allow.strip_authorization {
            host::remove_request_header("authorization");
        }
        for (name, value) in &allow.set_headers {
            host::set_request_header(name, value);
        }
    }

    /// A request held for keys whose body now decides. A body that arrived whole while
    /// the request was held is decided at once. Otherwise the HTTP context reads it as it
    /// comes: with the headers still held, unless the operator lets them go first
    /// (`hold_headers_for_body: false`) and no chunk of the body has been handed to the filter
    /// yet (resuming then would release the buffered chunks unread).
    fn read_held_body(&self, w: &Waiter, check: BodyCheck, now_ms: u64) {
        let held = self.held_bodies.borrow_mut().remove(&w.context_id);
        if let Some(body) = held {
            let decision = decide_body(&self.config, &check, &w.headers.request(), &body);
            if let Applied::Continue = self.apply(w.context_id, &w.headers, decision) {
                host::resume_request();
            }
            return;
        }
        self.body_checks.borrow_mut().insert(w.context_id, check);
        let headers_held = self.config.hold_headers_for_body || w.body_seen;
        self.await_body(w.context_id, &w.headers, headers_held, w.body_seen, now_ms);
        if !headers_held {
            host::resume_request();
        }
    }

    /// Starts the `body_wait_ms` clock for a request whose body decides.
    fn await_body(&self, context_id: u32, headers: &Headers, held: bool, seen: bool, now: u64) {
        self.awaiting_body.borrow_mut().push(BodyWait {
            context_id,
            deadline_ms: now + self.config.body_wait_ms,
            headers_held: held,
            seen,
            origin: headers.origin.map(|span| headers.get(span).to_string()),
        });
    }

    fn remove_claim_headers(&self) {
        for (header, _) in &self.config.claim_headers {
            host::remove_request_header(header);
        }
    }

    /// Answers requests whose body did not arrive whole within `body_wait_ms`: 503 when the
    /// headers were held and no chunk ever came (Envoy does not hand bodies to a filter that
    /// holds the headers without `allow_on_headers_stop_iteration`), else 408. Never released.
    fn expire_body_waits(&self) {
        if self.awaiting_body.borrow().is_empty() {
            return;
        }
        let now = now_ms();
        let mut expired = Vec::new();
        self.awaiting_body.borrow_mut().retain(|wait| {
            let keep = now < wait.deadline_ms;
            if !keep {
                expired.push((
                    wait.context_id,
                    wait.headers_held && !wait.seen,
                    wait.origin.clone(),
                ));
            }
            keep
        });
        if expired.is_empty() {
            return;
        }
        for (id, undelivered, origin) in expired {
            if hostcalls::set_effective_context(id).is_err() {
                continue;
            }
            let response = if undelivered {
                log::warn!(
                    "mcp-oauth-filter: no request body reached the filter within body_wait_ms ({} ms) while the headers were held: set allow_on_headers_stop_iteration: true on the wasm filter, or hold_headers_for_body: false in the plugin configuration where the host cannot (Istio WasmPlugin, Envoy Gateway); answered 503",
                    self.config.body_wait_ms
                );
                response::body_not_delivered(origin.as_deref())
            } else {
                response::body_incomplete(&self.config, origin.as_deref())
            };
            self.respond(id, response);
        }
        let _ = hostcalls::set_effective_context(self.root_context_id);
    }

    /// Sends a response for `context_id` (the effective context) and remembers that it was
    /// answered, so its later callbacks hold everything.
    fn respond(&self, context_id: u32, response: response::Response<'_>) {
        self.answered.borrow_mut().insert(context_id);
        self.send(response);
    }

    /// A body chunk arrived for `context_id`, which is reading its body.
    fn body_arrived(&self, context_id: u32) {
        for wait in self.awaiting_body.borrow_mut().iter_mut() {
            if wait.context_id == context_id {
                wait.seen = true;
            }
        }
    }

    /// The body of `context_id` was decided: its wait ends.
    fn body_decided(&self, context_id: u32) {
        self.awaiting_body
            .borrow_mut()
            .retain(|wait| wait.context_id != context_id);
    }

    /// Holds the current request until its issuer's keys change or its wait runs out.
    fn hold(
        &self,
        context_id: u32,
        headers: Headers,
        issuer: IssuerId,
        resource: usize,
        refetch: bool,
    ) {
        let wait_ms = self.remote(issuer).map_or(0, |r| r.policy.wait_ms);
        let generation = self.keys.borrow().state(issuer).map_or(0, |s| s.generation);
        if refetch {
            let mut wanted = self.refetch_wanted.borrow_mut();
            if !wanted.contains(&issuer) {
                wanted.push(issuer);
            }
        }
        self.waiters.borrow_mut().push(Waiter {
            context_id,
            issuer,
            deadline_ms: now_ms() + wait_ms,
            generation,
            headers,
            resource,
            body_seen: false,
        });
    }

    fn is_waiting(&self, context_id: u32) -> bool {
        self.waiters
            .borrow()
            .iter()
            .any(|w| w.context_id == context_id)
    }

    /// A body chunk (or the trailers) of a request held for keys arrived; whether its
    /// resource reads bodies.
    fn waiter_saw_body(&self, context_id: u32) -> bool {
        let mut waiters = self.waiters.borrow_mut();
        let Some(w) = waiters.iter_mut().find(|w| w.context_id == context_id) else {
            return false;
        };
        w.body_seen = true;
        self.config
            .resources
            .get(w.resource)
            .is_some_and(|r| r.inspects_body())
    }

    fn forget(&self, context_id: u32) {
        self.waiters
            .borrow_mut()
            .retain(|w| w.context_id != context_id);
    }

    /// Decides again for every held request whose issuer's keys changed or whose wait ran
    /// out; a request still without keys at its deadline gets a 503.
    fn wake_waiters(&self) {
        let now_ms = now_ms();
        let waiting = std::mem::take(&mut *self.waiters.borrow_mut());
        let mut still = Vec::new();
        let mut switched = false;
        for mut w in waiting {
            let generation = self
                .keys
                .borrow()
                .state(w.issuer)
                .map_or(0, |s| s.generation);
            if generation == w.generation && now_ms < w.deadline_ms {
                still.push(w);
                continue;
            }
            switched = true;
            if hostcalls::set_effective_context(w.context_id).is_err() {
                continue; // the stream is gone
            }
            let decision = {
                let keys = self.keys.borrow();
                let decision = decide(&self.config, &*keys, &w.headers.request(), now_ms / 1000);
                if matches!(decision, Decision::WaitForKeys { .. }) {
                    forget_cache_counts(&keys);
                } else {
                    self.metrics.count_cache(&keys);
                }
                // Owned outcome: apply needs no borrow of the key ring.
                self.apply(w.context_id, &w.headers, decision)
            };
            match decision {
                Applied::Continue => {
                    host::resume_request();
                }
                Applied::ReadBody(check) => self.read_held_body(&w, check, now_ms),
                Applied::Stopped => {}
                Applied::Wait { refetch, .. } if now_ms < w.deadline_ms => {
                    w.generation = generation;
                    if refetch {
                        self.refetch_wanted.borrow_mut().push(w.issuer);
                    }
                    still.push(w);
                }
                Applied::Wait { .. } => {
                    let response = response::keys_unavailable(w.headers.request().origin);
                    self.apply(w.context_id, &w.headers, Decision::Respond(response));
                }
            }
        }
        // Requests held while we were deciding (none in practice) stay held too.
        self.waiters.borrow_mut().extend(still);
        if switched {
            let _ = hostcalls::set_effective_context(self.root_context_id);
        }
    }

    // ------------------------------------------------------------------ remote keys

    fn read_state(&self, remote: &RemoteIssuer) -> (Option<FetchState>, Option<u32>) {
        match hostcalls::get_shared_data(&remote.state_key) {
            Ok((Some(bytes), cas)) => (serde_json::from_slice(&bytes).ok(), cas),
            Ok((None, cas)) => (None, cas),
            Err(_) => (None, None),
        }
    }

    fn write_state(&self, remote: &RemoteIssuer, state: &FetchState, cas: Option<u32>) -> bool {
        let Ok(bytes) = serde_json::to_vec(state) else {
            return false;
        };
        hostcalls::set_shared_data(&remote.state_key, Some(&bytes), cas).is_ok()
    }

    /// Creates the shared record if no VM has yet (at configure time, before any fetch).
    fn ensure_state(&self, remote: &RemoteIssuer) {
        if let (None, None) = self.read_state(remote) {
            self.write_state(remote, &FetchState::default(), None);
        }
    }

    /// Syncs every fetched issuer; whether any key set changed.
    fn sync_all(&self) -> bool {
        self.remotes
            .iter()
            .fold(false, |changed, r| self.sync(r) | changed)
    }

    /// Brings this worker's copy of an issuer's keys up to the shared version; whether the
    /// installed key set changed.
    fn sync(&self, remote: &RemoteIssuer) -> bool {
        let (Some(state), _) = self.read_state(remote) else {
            return false;
        };
        let installed = self.keys.borrow().installed_version(remote.id);
        if state.version == 0 || state.version == installed {
            self.keys.borrow_mut().observe(remote.id, state);
            return false;
        }
        let jwks = hostcalls::get_shared_data(&remote.jwks_key)
            .ok()
            .and_then(|(bytes, _)| bytes)
            .unwrap_or_default();
        match remote::read_jwks(200, &jwks) {
            Ok((set, _)) => {
                log::info!(
                    "mcp-oauth-filter: keys of {:?} updated: {} key(s), version {}",
                    remote.issuer,
                    set.len(),
                    state.version
                );
                self.keys.borrow_mut().install(remote.id, set, state);
                self.metrics
                    .set("keys_in_use", self.keys.borrow().key_count() as u64);
                true
            }
            Err(e) => {
                log::warn!(
                    "mcp-oauth-filter: shared keys of {:?} unreadable: {e}",
                    remote.issuer
                );
                self.keys.borrow_mut().observe(remote.id, state);
                false
            }
        }
    }

    /// Starts a fetch when one is due (or an unknown `kid` asked for one and the window
    /// allows it), taking the shared lease with compare-and-swap so one worker fetches.
    fn maybe_fetch(&self, remote: &RemoteIssuer, now: u64) {
        let wanted = {
            let mut wanted = self.refetch_wanted.borrow_mut();
            let before = wanted.len();
            wanted.retain(|id| *id != remote.id);
            wanted.len() != before
        };
        let busy = self
            .in_flight
            .borrow()
            .values()
            .any(|(id, _)| *id == remote.id);
        if busy {
            return;
        }
        let (Some(mut state), cas) = self.read_state(remote) else {
            self.ensure_state(remote);
            return;
        };
        let why = match state.due(now) {
            Some(why) => why,
            None if wanted && state.may_refetch(now, &remote.policy) => Why::UnknownKid,
            None => return,
        };
        state.begin(now, why, &remote.policy);
        if !self.write_state(remote, &state, cas) {
            return; // another worker took the lease
        }
        log::debug!(
            "mcp-oauth-filter: fetching keys of {:?} ({why:?})",
            remote.issuer
        );
        let target = state.target(&remote.issuer, remote.jwks_uri.as_ref());
        self.dispatch(remote, target);
    }

    fn dispatch(&self, remote: &RemoteIssuer, target: Target) {
        let Ok(url) = HttpUrl::parse(target.url()) else {
            self.finish(
                remote,
                Err(FetchError::Discovery("key URL is not an http(s) URL")),
            );
            return;
        };
        let mut path = if url.path.is_empty() {
            "/".to_string()
        } else {
            url.path.clone()
        };
        if let Some(q) = &url.query {
            path = format!("{path}?{q}");
        }
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", url.authority.as_str()),
            (":scheme", url.scheme.as_str()),
            ("accept", "application/json"),
            ("user-agent", "mcp-oauth-filter"),
        ];
        let timeout = Duration::from_millis(remote.policy.fetch_timeout_ms);
        match hostcalls::dispatch_http_call(&remote.cluster, headers, None, vec![], timeout) {
            Ok(token) => {
                self.in_flight
                    .borrow_mut()
                    .insert(token, (remote.id, target));
            }
            Err(status) => {
                log::warn!(
                    "mcp-oauth-filter: cannot fetch keys of {:?} through cluster {:?}: {status:?} (is the cluster defined?)",
                    remote.issuer,
                    remote.cluster
                );
                self.finish(remote, Err(FetchError::Status(0)));
            }
        }
    }

    /// A fetch answered (or timed out: no `:status`).
    fn on_response(&self, token: u32, body_size: usize) {
        let Some((id, target)) = self.in_flight.borrow_mut().remove(&token) else {
            return;
        };
        let Some(remote) = self.remote(id) else {
            return;
        };
        let header = |name: &str| {
            hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
                .ok()
                .flatten()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let Some(status) = header(":status").and_then(|s| s.parse::<u16>().ok()) else {
            self.finish(remote, Err(FetchError::Timeout));
            return;
        };
        let limit = body_size.min(remote::MAX_DOCUMENT_BYTES + 1);
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, limit)
            .ok()
            .flatten()
            .unwrap_or_default();
        let body = if body_size > remote::MAX_DOCUMENT_BYTES {
            vec![0; remote::MAX_DOCUMENT_BYTES + 1]
        } else {
            body
        };
        match target {
            Target::Jwks(_) => match remote::read_jwks(status, &body) {
                Ok((set, skipped)) => {
                    for line in skipped {
                        log::warn!("mcp-oauth-filter: keys of {:?}: {line}", remote.issuer);
                    }
                    let max_age = remote::max_age(header("cache-control").as_deref());
                    self.store(remote, &body, max_age, set);
                }
                Err(e) => self.finish(remote, Err(e)),
            },
            discovery => {
                let (Some(mut state), cas) = self.read_state(remote) else {
                    return;
                };
                match state.on_discovery(&discovery, &remote.issuer, status, &body) {
                    Ok(_) => {
                        self.write_state(remote, &state, cas);
                        let next = state.target(&remote.issuer, remote.jwks_uri.as_ref());
                        self.dispatch(remote, next);
                    }
                    Err(e) => {
                        self.write_state(remote, &state, cas);
                        self.finish(remote, Err(e));
                    }
                }
            }
        }
    }

    /// Stores a good key set for every worker, then records the success.
    fn store(
        &self,
        remote: &RemoteIssuer,
        body: &[u8],
        max_age: Option<u64>,
        set: crate::keys::KeySet,
    ) {
        let _ = hostcalls::set_shared_data(&remote.jwks_key, Some(body), None);
        let digest = remote::digest(body);
        if let Some(state) = self.update_state(remote, |s, now| {
            s.succeed(now, max_age, digest, &remote.policy)
        }) {
            log::info!(
                "mcp-oauth-filter: fetched keys of {:?}: {} key(s), version {}, valid {} s",
                remote.issuer,
                set.len(),
                state.version,
                state.expires_at.saturating_sub(state.fetched_at)
            );
            self.keys.borrow_mut().install(remote.id, set, state);
            self.metrics
                .set("keys_in_use", self.keys.borrow().key_count() as u64);
        }
        self.metrics.increment("key_fetches_ok");
        self.wake_waiters();
    }

    /// Records a failed fetch: the keys stay, a retry is scheduled with back-off.
    fn finish(&self, remote: &RemoteIssuer, result: Result<(), FetchError>) {
        let Err(error) = result else {
            return;
        };
        if let Some(state) = self.update_state(remote, |s, now| s.fail(now, &error)) {
            log::warn!(
                "mcp-oauth-filter: key fetch for {:?} failed: {error} [{}]; retry in {} s{}",
                remote.issuer,
                error.code(),
                state.retry_at.saturating_sub(now_ms() / 1000),
                if state.version > 0 {
                    ", keeping the last good keys"
                } else {
                    ""
                }
            );
            self.keys.borrow_mut().observe(remote.id, state);
        }
        self.metrics.increment("key_fetches_failed");
        self.wake_waiters();
    }

    /// Read-modify-write of the shared record, retried on a compare-and-swap conflict.
    fn update_state(
        &self,
        remote: &RemoteIssuer,
        change: impl Fn(&mut FetchState, u64),
    ) -> Option<FetchState> {
        for _ in 0..8 {
            let (state, cas) = self.read_state(remote);
            let mut state = state.unwrap_or_default();
            change(&mut state, now_ms() / 1000);
            if self.write_state(remote, &state, cas) {
                return Some(state);
            }
        }
        None
    }
}

pub struct Root {
    context_id: u32,
    shared: Option<Rc<Shared>>,
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        Root {
            context_id,
            shared: None,
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(shared) = &self.shared {
            shared.on_response(token_id, body_size);
        }
    }
}

fn remote_issuers(config: &Config) -> Vec<RemoteIssuer> {
    config
        .issuers
        .iter()
        .enumerate()
        .filter_map(|(id, issuer)| match &issuer.keys {
            KeySource::Inline(_) => None,
            KeySource::Remote {
                cluster,
                jwks_uri,
                policy,
            } => {
                let source = jwks_uri.as_ref().map_or("discover".to_string(), |u| {
                    format!("{}{}", u.origin(), u.path)
                });
                let base = format!(
                    "mcp-oauth-filter/v1/keys/{}|{}|{}",
                    issuer.issuer, cluster, source
                );
                Some(RemoteIssuer {
                    id,
                    issuer: issuer.issuer.clone(),
                    cluster: cluster.clone(),
                    jwks_uri: jwks_uri.clone(),
                    policy: *policy,
                    state_key: format!("{base}/state"),
                    jwks_key: format!("{base}/jwks"),
                })
            }
        })
        .collect()
}

/// Envoy's `verify_signature` foreign function, which checks signatures in BoringSSL (see
/// `hostsig`). Asked until the host says it has no such function. Answers are counted in
/// `signature_checks_host`, defined at the first one, so a host without the function (or a
/// configuration whose keys never go to it) shows no such counter.
#[derive(Default)]
struct HostSignatures {
    missing: Cell<bool>,
    answered: Cell<Option<u32>>,
}

impl HostVerify for HostSignatures {
    fn call(&self, request: &[u8]) -> Option<Vec<u8>> {
        if self.missing.get() {
            return None;
        }
        match host::call_foreign(hostsig::FUNCTION, request) {
            Ok(answer) => {
                if self.answered.get().is_none() {
                    let name = format!("{METRIC_PREFIX}signature_checks_host");
                    self.answered
                        .set(hostcalls::define_metric(MetricType::Counter, &name).ok());
                }
                if let Some(id) = self.answered.get() {
                    let _ = hostcalls::increment_metric(id, 1);
                }
                Some(answer)
            }
            Err(status) if status == Status::NotFound as u32 => {
                self.missing.set(true);
                log::info!(
                    "mcp-oauth-filter: the host has no {} function: signatures are checked in wasm",
                    hostsig::FUNCTION
                );
                None
            }
            Err(status) => {
                log::debug!("mcp-oauth-filter: host signature check refused (status {status})");
                None
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        follow_host_log_level();
        let text = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::from_json(&text) {
            Ok(config) => config,
            Err(e) => {
                log::error!(
                    "mcp-oauth-filter: invalid configuration: {e} [{}]",
                    e.kind.code()
                );
                return false;
            }
        };
        for warning in &config.warnings {
            log::warn!("mcp-oauth-filter: configuration: {warning}");
        }
        log::info!(
            "mcp-oauth-filter: configured {} resource(s), {} issuer(s)",
            config.resources.len(),
            config.issuers.len()
        );
        let mut keys = KeyRing::new(&config);
        keys.use_host(Box::<HostSignatures>::default());
        let shared = Shared {
            root_context_id: self.context_id,
            keys: RefCell::new(keys),
            remotes: remote_issuers(&config),
            config,
            metrics: Metrics::default(),
            waiters: RefCell::default(),
            refetch_wanted: RefCell::default(),
            in_flight: RefCell::default(),
            awaiting_body: RefCell::default(),
            answered: RefCell::default(),
            body_checks: RefCell::default(),
            held_bodies: RefCell::default(),
        };
        shared.metrics.define_at_zero(
            shared.keys.borrow().cache().is_some(),
            !shared.remotes.is_empty(),
        );
        for remote in &shared.remotes {
            shared.ensure_state(remote);
            shared.sync(remote);
        }
        if !shared.remotes.is_empty() || shared.config.resources.iter().any(|r| r.inspects_body()) {
            self.set_tick_period(TICK);
        } else {
            self.set_tick_period(IDLE_TICK);
        }
        self.shared = Some(Rc::new(shared));
        true
    }

    fn on_tick(&mut self) {
        follow_host_log_level();
        let Some(shared) = &self.shared else {
            return;
        };
        let now = now_ms() / 1000;
        for remote in &shared.remotes {
            shared.sync(remote);
            shared.maybe_fetch(remote, now);
        }
        shared.wake_waiters();
        shared.expire_body_waits();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            context_id,
            shared: self.shared.clone(),
            stopped: false,
            body: None,
            body_size: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Drops the cache's pending hit/miss counts: they belong to a decision that is made again.
fn forget_cache_counts(keys: &KeyRing) {
    if let Some(cache) = keys.cache() {
        cache.take_counts();
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

struct Http {
    context_id: u32,
    /// `None` only if the configuration was refused and the host created a context anyway.
    shared: Option<Rc<Shared>>,
    /// A response was sent: nothing of this request may move on.
    stopped: bool,
    /// The request's body decides (README, MCP-aware authorization): the check and the
    /// headers it was decided on.
    body: Option<(BodyCheck, Headers)>,
    /// The body buffered so far, as the host last reported it.
    body_size: usize,
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

impl Http {
    /// Whether nothing of this request may move on: a response was sent for it.
    fn answered(&self, shared: &Shared) -> bool {
        self.stopped || shared.answered.borrow().contains(&self.context_id)
    }

    /// The whole buffered body, bounded: a body larger than `max_body_bytes` reads as one
    /// byte more than that (the host clamps a read to what it has).
    fn whole_body(&self, shared: &Shared) -> Vec<u8> {
        self.get_http_request_body(0, shared.config.max_body_bytes + 1)
            .unwrap_or_default()
    }

    /// A body chunk, or the trailers (`ended`), of a request held for keys: buffered; a
    /// whole body is kept for the decision; one larger than `max_body_bytes` on a resource
    /// that reads bodies is refused at once.
    fn hold_body(&mut self, shared: &Shared, body_size: usize, ended: bool) -> Action {
        let reads_bodies = shared.waiter_saw_body(self.context_id);
        if reads_bodies && body_size > shared.config.max_body_bytes {
            shared.forget(self.context_id);
            let headers = Headers::read(&shared.config, true);
            let response = response::body_too_large(&shared.config, headers.request().origin);
            let applied = shared.apply(self.context_id, &headers, Decision::Respond(response));
            return self.finish(applied);
        }
        if ended && reads_bodies {
            let body = self.whole_body(shared);
            shared
                .held_bodies
                .borrow_mut()
                .insert(self.context_id, body);
        }
        Action::Pause
    }

    /// Starts reading the body: holds the headers unless the operator lets them go first
    /// (`hold_headers_for_body: false`); either way the body is checked before any of it
    /// is forwarded.
    fn read_body(
        &mut self,
        shared: &Shared,
        check: BodyCheck,
        headers: Headers,
        end_of_stream: bool,
    ) -> Action {
        if end_of_stream {
            let applied = {
                let decision = decide_body(&shared.config, &check, &headers.request(), b"");
                shared.apply(self.context_id, &headers, decision)
            };
            return self.finish(applied);
        }
        let held = shared.config.hold_headers_for_body;
        shared.await_body(self.context_id, &headers, held, false, now_ms());
        self.body = Some((check, headers));
        if held {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    /// A body chunk, or the trailers (`ended`), of a request whose body decides: buffered
    /// until the body is whole (its last chunk, or the trailers), then decided.
    fn body_chunk(&mut self, shared: &Shared, body_size: usize, ended: bool) -> Action {
        if self.body.is_none() {
            // A request held for keys whose body check was decided by the root context.
            let Some(check) = shared.body_checks.borrow_mut().remove(&self.context_id) else {
                return Action::Continue;
            };
            self.body = Some((check, Headers::read(&shared.config, true)));
        }
        shared.body_arrived(self.context_id);
        if body_size > shared.config.max_body_bytes {
            let Some((_, headers)) = self.body.take() else {
                return Action::Pause;
            };
            shared.body_decided(self.context_id);
            let response = response::body_too_large(&shared.config, headers.request().origin);
            let applied = shared.apply(self.context_id, &headers, Decision::Respond(response));
            return self.finish(applied);
        }
        if !ended {
            return Action::Pause; // buffer until the whole body is here
        }
        let body = self.whole_body(shared);
        let Some((check, headers)) = self.body.take() else {
            return Action::Pause;
        };
        shared.body_decided(self.context_id);
        let applied = {
            let decision = if body.len() > shared.config.max_body_bytes {
                Decision::Respond(response::body_too_large(
                    &shared.config,
                    headers.request().origin,
                ))
            } else {
                decide_body(&shared.config, &check, &headers.request(), &body)
            };
            shared.apply(self.context_id, &headers, decision)
        };
        self.finish(applied)
    }

    fn finish(&mut self, applied: Applied) -> Action {
        match applied {
            Applied::Continue => Action::Continue,
            _ => {
                self.stopped = true;
                Action::Pause
            }
        }
    }

    /// The body's next step, its last chunk or (`ended`) the trailers: nothing held is ever
    /// released here except by a decision.
    fn on_body_or_trailers(&mut self, body_size: usize, ended: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Pause;
        };
        // With `allow_on_headers_stop_iteration`, body chunks arrive while the headers are
        // held; continuing here would release the request before it is decided.
        if self.answered(&shared) {
            return Action::Pause;
        }
        if shared.is_waiting(self.context_id) {
            return self.hold_body(&shared, body_size, ended);
        }
        self.body_chunk(&shared, body_size, ended)
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            self.stopped = true;
            host::send_response(
                503,
                &[("content-type", "application/json")],
                br#"{"error":"temporarily_unavailable","error_description":"authorization filter not configured"}"#,
            );
            return Action::Pause;
        };
        let headers = Headers::read(&shared.config, !end_of_stream);
        // Only a token needs the time: skip the host call for everything else.
        let now = if headers.authorization.is_empty() {
            0
        } else {
            now_ms() / 1000
        };
        let applied = {
            let mut keys = shared.keys.borrow();
            let mut decision = decide(&shared.config, &*keys, &headers.request(), now);
            if missed_keys(&decision) {
                // Another worker may have stored newer keys since this one's last tick.
                drop(keys);
                if shared.sync_all() {
                    keys = shared.keys.borrow();
                    forget_cache_counts(&keys); // the request is decided again
                    decision = decide(&shared.config, &*keys, &headers.request(), now);
                } else {
                    keys = shared.keys.borrow();
                }
            }
            if matches!(decision, Decision::WaitForKeys { .. }) {
                forget_cache_counts(&keys); // counted when the held request is decided
            } else {
                shared.metrics.count_cache(&keys);
            }
            shared.apply(self.context_id, &headers, decision)
        };
        match applied {
            Applied::Continue => Action::Continue,
            Applied::Stopped => {
                self.stopped = true;
                Action::Pause
            }
            Applied::Wait {
                issuer,
                resource,
                refetch,
            } => {
                shared.hold(self.context_id, headers, issuer, resource, refetch);
                Action::Pause
            }
            Applied::ReadBody(check) => self.read_body(&shared, check, headers, end_of_stream),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body_size = body_size;
        self.on_body_or_trailers(body_size, end_of_stream)
    }

    /// Trailers end the body (HTTP/2, or HTTP/1.1 chunked where Envoy passes them on). The
    /// SDK's default would continue the stream, releasing whatever is held.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.on_body_or_trailers(self.body_size, true)
    }
}

/// Forgets a finished request wherever it may still be listed. The SDK drops the context in
/// `proxy_on_delete`, which the host calls for every stream; the module does not export
/// `proxy_on_log` (see `tools/trim_exports.py`), so this is the one place for it.
impl Drop for Http {
    fn drop(&mut self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let id = self.context_id;
        shared.forget(id);
        shared.body_decided(id);
        let mut answered = shared.answered.borrow_mut();
        if !answered.is_empty() {
            answered.remove(&id);
        }
        let mut checks = shared.body_checks.borrow_mut();
        if !checks.is_empty() {
            checks.remove(&id);
        }
        let mut bodies = shared.held_bodies.borrow_mut();
        if !bodies.is_empty() {
            bodies.remove(&id);
        }
    }
}
