//! The worker against a fake host, natively and with a fake clock: key fetches and the
//! requests that wait for them, the body hold in both modes, trailers, counters, and the
//! property that nothing held is released except by its decision.

use super::fake::{Action, Dispatched, FakeHost, T0_MS};
use super::*;
use crate::config::tests::base_json;
use crate::headers::serialize_pairs;
use crate::keys::tests::fixture;
use crate::verify::tests::{good_claims, token};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const CTX: u32 = 10;

/// `/mcp` only, its issuer's keys fetched from `https://auth.example.com/jwks` through the
/// cluster `auth`.
fn remote_json() -> Value {
    let mut v = base_json();
    v["resources"].as_array_mut().unwrap().truncate(1);
    v["issuers"] = json!([{"issuer": "https://auth.example.com", "cluster": "auth",
        "jwks_uri": "https://auth.example.com/jwks"}]);
    v
}

/// `/mcp` with per-tool scopes (inline keys): `delete_all` needs `mcp:admin`.
fn tools_json(hold: bool) -> Value {
    let mut v = base_json();
    v["resources"][0]["tool_scopes"] = json!({"delete_all": ["mcp:admin"]});
    v["hold_headers_for_body"] = json!(hold);
    v["body_wait_ms"] = json!(1000);
    v
}

fn worker(config: &Value, host: FakeHost) -> Worker<FakeHost> {
    Worker::configure(host, config.to_string().as_bytes()).unwrap()
}

/// A token for /mcp signed by `key` under `kid`, valid for an hour, with `scope`.
fn bearer(key: &str, kid: &str, scope: &str) -> String {
    let mut claims = good_claims();
    claims["exp"] = json!(T0_MS / 1000 + 3600 * 24);
    claims["scope"] = json!(scope);
    let t = token(key, "RS256", json!({"alg": "RS256", "kid": kid}), claims);
    format!("Bearer {t}")
}

fn headers(method: &str, authorization: Option<&str>) -> Vec<u8> {
    let mut pairs = vec![
        (":method", method),
        (":path", "/mcp"),
        (":authority", "mcp.example.com"),
    ];
    if let Some(a) = authorization {
        pairs.push(("authorization", a));
    }
    serialize_pairs(&pairs)
}

fn jwks(names: &[&str]) -> Vec<u8> {
    let keys: Vec<Value> = names
        .iter()
        .map(|n| fixture(&format!("{n}.jwk.json")))
        .collect();
    json!({ "keys": keys }).to_string().into_bytes()
}

fn answer(w: &mut Worker<FakeHost>, call: &Dispatched, status: u16, body: &[u8]) {
    let response = CallResponse {
        headers: vec![(":status".into(), status.to_string())],
        body: body.to_vec(),
        body_size: body.len(),
    };
    w.on_http_call_response(None, call.token, &response);
}

/// The statuses the worker answered, by context, in order.
fn answered(actions: &[Action]) -> Vec<(u32, u16)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Respond {
                context, status, ..
            } => Some((*context, *status)),
            _ => None,
        })
        .collect()
}

fn resumed(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Resume(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// Ticks until the worker dispatched a call, and returns it.
fn tick_until_call(w: &mut Worker<FakeHost>) -> Dispatched {
    for _ in 0..5 {
        w.on_tick();
        if let Some(call) = w.host().take_calls().pop() {
            return call;
        }
        w.host().advance_ms(TICK_MS);
    }
    panic!("no call dispatched")
}

/// A worker whose issuer's keys (`names`) are loaded.
fn loaded(names: &[&str]) -> Worker<FakeHost> {
    let mut w = worker(&remote_json(), FakeHost::new());
    let call = tick_until_call(&mut w);
    answer(&mut w, &call, 200, &jwks(names));
    w
}

#[test]
fn holds_a_request_until_the_first_key_set_arrives_then_decides_it() {
    let mut w = worker(&remote_json(), FakeHost::new());
    let good = bearer("rsa-a", "rsa-a", "mcp:read");
    assert_eq!(
        w.on_request_headers(CTX, &headers("GET", Some(&good)), true),
        Flow::Pause
    );
    let forged = bearer("rsa-b", "rsa-a", "mcp:read");
    assert_eq!(
        w.on_request_headers(CTX + 1, &headers("GET", Some(&forged)), true),
        Flow::Pause
    );
    let call = tick_until_call(&mut w);
    assert_eq!(
        (
            call.cluster.as_str(),
            call.url.as_str(),
            call.method.as_str()
        ),
        ("auth", "https://auth.example.com/jwks", "GET")
    );
    assert!(w
        .host()
        .take_actions()
        .iter()
        .all(|a| !matches!(a, Action::Resume(_) | Action::Respond { .. })));
    answer(&mut w, &call, 200, &jwks(&["rsa-a"]));
    let actions = w.host().take_actions();
    assert_eq!(resumed(&actions), [CTX]);
    assert_eq!(answered(&actions), [(CTX + 1, 401)]);
    assert!(actions.contains(&Action::RemoveHeader(CTX, "authorization".into())));
    w.on_tick();
    assert_eq!(w.host().counter("mcp_oauth_requests_allowed"), 1);
    assert_eq!(
        w.host().counter("mcp_oauth_requests_denied_bad_signature"),
        1
    );
    assert_eq!(w.host().counter("mcp_oauth_key_fetches_ok"), 1);
}

#[test]
fn answers_503_when_the_first_key_set_does_not_arrive_within_the_wait() {
    let mut w = worker(&remote_json(), FakeHost::new());
    let good = bearer("rsa-a", "rsa-a", "mcp:read");
    w.on_request_headers(CTX, &headers("GET", Some(&good)), true);
    let _never_answered = tick_until_call(&mut w);
    w.host().advance_ms(4_900);
    w.on_tick();
    assert!(
        answered(&w.host().take_actions()).is_empty(),
        "still within jwks_wait_ms"
    );
    w.host().advance_ms(200);
    w.on_tick();
    let actions = w.host().take_actions();
    assert_eq!(answered(&actions), [(CTX, 503)]);
    assert!(resumed(&actions).is_empty());
    let Some(Action::Respond { headers, .. }) =
        actions.iter().find(|a| matches!(a, Action::Respond { .. }))
    else {
        unreachable!()
    };
    assert!(headers.contains(&("retry-after".into(), "5".into())));
    assert_eq!(
        w.host()
            .counter("mcp_oauth_requests_denied_keys_unavailable"),
        1
    );
}

#[test]
fn keeps_stale_keys_when_a_refresh_fails_and_retries_with_back_off() {
    let mut w = loaded(&["rsa-a"]);
    w.host().take_actions();
    // Three quarters into the default 15 minutes, the refresh is due.
    w.host().advance_ms(676_000);
    let refresh = tick_until_call(&mut w);
    answer(&mut w, &refresh, 500, b"");
    w.on_tick();
    assert_eq!(w.host().counter("mcp_oauth_key_fetches_failed"), 1);
    let good = bearer("rsa-a", "rsa-a", "mcp:read");
    assert_eq!(
        w.on_request_headers(CTX, &headers("GET", Some(&good)), true),
        Flow::Continue,
        "the last good keys stay in use"
    );
    // Back-off: 1 s after the first failure, then 2 s.
    w.on_tick();
    assert!(w.host().take_calls().is_empty(), "not before retry_at");
    w.host().advance_ms(1_000);
    let retry = tick_until_call(&mut w);
    answer(&mut w, &retry, 503, b"");
    w.host().advance_ms(1_000);
    w.on_tick();
    assert!(
        w.host().take_calls().is_empty(),
        "the second retry waits 2 s"
    );
    w.host().advance_ms(1_000);
    let again = tick_until_call(&mut w);
    answer(&mut w, &again, 200, &jwks(&["rsa-a", "rsa-b"]));
    let rotated = bearer("rsa-b", "rsa-b", "mcp:read");
    assert_eq!(
        w.on_request_headers(CTX + 1, &headers("GET", Some(&rotated)), true),
        Flow::Continue
    );
}

#[test]
fn refetches_once_for_an_unknown_kid_then_refuses_new_ones_within_the_window() {
    let mut w = loaded(&["rsa-a"]);
    let rotated = bearer("rsa-b", "rsa-b", "mcp:read");
    assert_eq!(
        w.on_request_headers(CTX, &headers("GET", Some(&rotated)), true),
        Flow::Pause
    );
    let refetch = tick_until_call(&mut w);
    assert_eq!(refetch.url, "https://auth.example.com/jwks");
    answer(&mut w, &refetch, 200, &jwks(&["rsa-a", "rsa-b"]));
    assert_eq!(resumed(&w.host().take_actions()), [CTX]);
    // Within the 30 s window another unknown kid is refused at once, without a fetch.
    w.host().advance_ms(10_000);
    let unknown = bearer("rsa-b", "rsa-z", "mcp:read");
    assert_eq!(
        w.on_request_headers(CTX + 1, &headers("GET", Some(&unknown)), true),
        Flow::Pause
    );
    assert_eq!(answered(&w.host().take_actions()), [(CTX + 1, 401)]);
    w.on_tick();
    assert!(w.host().take_calls().is_empty());
    // After the window, one more refetch.
    w.host().advance_ms(21_000);
    w.on_request_headers(CTX + 2, &headers("GET", Some(&unknown)), true);
    let again = tick_until_call(&mut w);
    answer(&mut w, &again, 200, &jwks(&["rsa-a", "rsa-b"]));
    assert_eq!(answered(&w.host().take_actions()), [(CTX + 2, 401)]);
}

#[test]
fn two_workers_racing_for_the_first_fetch_make_one_call() {
    let first = FakeHost::new();
    let second = first.worker_beside();
    let mut a = worker(&remote_json(), first);
    let mut b = worker(&remote_json(), second);
    let good = bearer("rsa-a", "rsa-a", "mcp:read");
    b.on_request_headers(CTX, &headers("GET", Some(&good)), true);
    a.on_tick();
    b.on_tick();
    let (calls_a, calls_b) = (a.host().take_calls(), b.host().take_calls());
    assert_eq!(calls_a.len() + calls_b.len(), 1, "{calls_a:?} {calls_b:?}");
    let call = calls_a.first().or(calls_b.first()).unwrap().clone();
    let (fetcher, other) = if calls_a.is_empty() {
        (&mut b, &mut a)
    } else {
        (&mut a, &mut b)
    };
    answer(fetcher, &call, 200, &jwks(&["rsa-a"]));
    other.host().advance_ms(TICK_MS);
    other.on_tick();
    fetcher.on_tick();
    // The other worker took the stored key set without fetching it.
    assert!(a.host().take_calls().is_empty() && b.host().take_calls().is_empty());
    assert_eq!(resumed(&b.host().take_actions()), [CTX]);
    assert_eq!(
        a.on_request_headers(CTX + 1, &headers("GET", Some(&good)), true),
        Flow::Continue
    );
}

#[test]
fn discovers_keys_in_the_order_the_mcp_specification_gives() {
    let mut v = remote_json();
    v["resources"][0]["authorization_servers"] = json!(["https://as.example.com/tenant"]);
    v["issuers"] = json!([{"issuer": "https://as.example.com/tenant", "cluster": "auth"}]);
    let mut w = worker(&v, FakeHost::new());
    let mut urls = Vec::new();
    let mut call = tick_until_call(&mut w);
    for _ in 0..2 {
        urls.push(call.url.clone());
        answer(&mut w, &call, 404, b"");
        call = w
            .host()
            .take_calls()
            .pop()
            .expect("the next discovery document");
    }
    urls.push(call.url.clone());
    let doc = json!({"issuer": "https://as.example.com/tenant", "jwks_uri": "https://keys.example.com/k"});
    answer(&mut w, &call, 200, doc.to_string().as_bytes());
    let keys = w.host().take_calls().pop().expect("the key set");
    assert_eq!(
        urls,
        [
            "https://as.example.com/.well-known/oauth-authorization-server/tenant",
            "https://as.example.com/.well-known/openid-configuration/tenant",
            "https://as.example.com/tenant/.well-known/openid-configuration",
        ]
    );
    assert_eq!(keys.url, "https://keys.example.com/k");
    answer(&mut w, &keys, 200, &jwks(&["rsa-a"]));
    w.on_tick();
    assert_eq!(w.host().counter("mcp_oauth_key_fetches_ok"), 1);
}

fn tool_call(name: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}})
        .to_string()
        .into_bytes()
}

/// Sends `body` in two chunks (and, with `trailers`, ends it with trailers).
fn send_body(w: &mut Worker<FakeHost>, ctx: u32, body: &[u8], trailers: bool) -> Vec<Flow> {
    let (a, b) = body.split_at(body.len() / 2);
    let size = w.host().buffer_body(ctx, a);
    let mut flows = vec![w.on_request_body(ctx, size, false)];
    let size = w.host().buffer_body(ctx, b);
    flows.push(w.on_request_body(ctx, size, !trailers));
    if trailers {
        flows.push(w.on_request_trailers(ctx));
    }
    flows
}

#[test]
fn holds_headers_for_the_body_and_decides_on_the_whole_body() {
    for trailers in [false, true] {
        let mut w = worker(&tools_json(true), FakeHost::new());
        let read = bearer("rsa-a", "rsa-a", "mcp:read");
        assert_eq!(
            w.on_request_headers(CTX, &headers("POST", Some(&read)), false),
            Flow::Pause
        );
        let flows = send_body(&mut w, CTX, &tool_call("echo"), trailers);
        assert_eq!(flows.last(), Some(&Flow::Continue), "{flows:?}");
        assert!(flows[..flows.len() - 1].iter().all(|f| *f == Flow::Pause));
        assert_eq!(
            w.on_request_headers(CTX + 1, &headers("pOST", Some(&read)), false),
            Flow::Pause
        );
        let flows = send_body(&mut w, CTX + 1, &tool_call("delete_all"), trailers);
        assert!(flows.iter().all(|f| *f == Flow::Pause), "{flows:?}");
        let actions = w.host().take_actions();
        assert_eq!(answered(&actions), [(CTX + 1, 403)]);
        assert!(resumed(&actions).is_empty());
        // Whatever else the host sends for the answered request stays where it is.
        assert_eq!(w.on_request_body(CTX + 1, 10, true), Flow::Pause);
        assert_eq!(w.on_request_trailers(CTX + 1), Flow::Pause);
    }
}

#[test]
fn lets_headers_go_first_but_never_the_body_of_a_denied_call() {
    for trailers in [false, true] {
        let mut w = worker(&tools_json(false), FakeHost::new());
        let read = bearer("rsa-a", "rsa-a", "mcp:read");
        assert_eq!(
            w.on_request_headers(CTX, &headers("POST", Some(&read)), false),
            Flow::Continue
        );
        let flows = send_body(&mut w, CTX, &tool_call("delete_all"), trailers);
        assert!(flows.iter().all(|f| *f == Flow::Pause), "{flows:?}");
        assert_eq!(answered(&w.host().take_actions()), [(CTX, 403)]);
        assert_eq!(
            w.on_request_headers(CTX + 1, &headers("POST", Some(&read)), false),
            Flow::Continue
        );
        let flows = send_body(&mut w, CTX + 1, &tool_call("echo"), trailers);
        assert_eq!(flows.last(), Some(&Flow::Continue));
    }
}

#[test]
fn answers_503_when_held_headers_get_no_body_and_408_for_an_incomplete_one() {
    let mut w = worker(&tools_json(true), FakeHost::new());
    let read = bearer("rsa-a", "rsa-a", "mcp:read");
    w.on_request_headers(CTX, &headers("POST", Some(&read)), false);
    w.on_request_headers(CTX + 1, &headers("POST", Some(&read)), false);
    let size = w.host().buffer_body(CTX + 1, b"{\"jsonrpc\"");
    assert_eq!(w.on_request_body(CTX + 1, size, false), Flow::Pause);
    w.host().advance_ms(999);
    w.on_tick();
    assert!(answered(&w.host().take_actions()).is_empty());
    w.host().advance_ms(1);
    w.on_tick();
    let actions = w.host().take_actions();
    assert_eq!(answered(&actions), [(CTX, 503), (CTX + 1, 408)]);
    assert!(resumed(&actions).is_empty());
    assert_eq!(
        w.host()
            .counter("mcp_oauth_requests_denied_body_not_delivered"),
        1
    );
    assert_eq!(
        w.host()
            .counter("mcp_oauth_requests_denied_body_incomplete"),
        1
    );
    // The rest of the body, when it comes after all, moves nothing.
    assert_eq!(w.on_request_body(CTX, 10, true), Flow::Pause);
}

#[test]
fn trailers_end_a_body_that_arrived_while_keys_were_loading() {
    let mut v = tools_json(true);
    v["issuers"][0] = json!({"issuer": "https://auth.example.com", "cluster": "auth",
        "jwks_uri": "https://auth.example.com/jwks"});
    let mut w = worker(&v, FakeHost::new());
    let read = bearer("rsa-a", "rsa-a", "mcp:read");
    for (ctx, tool) in [(CTX, "delete_all"), (CTX + 1, "echo")] {
        assert_eq!(
            w.on_request_headers(ctx, &headers("POST", Some(&read)), false),
            Flow::Pause
        );
        let flows = send_body(&mut w, ctx, &tool_call(tool), true);
        assert!(flows.iter().all(|f| *f == Flow::Pause), "{flows:?}");
    }
    let call = tick_until_call(&mut w);
    answer(&mut w, &call, 200, &jwks(&["rsa-a"]));
    let actions = w.host().take_actions();
    assert_eq!(answered(&actions), [(CTX, 403)]);
    assert_eq!(resumed(&actions), [CTX + 1]);
}

#[test]
fn forgets_every_pending_request_when_its_context_ends() {
    let mut v = tools_json(true);
    v["issuers"][0] = json!({"issuer": "https://auth.example.com", "cluster": "auth",
        "jwks_uri": "https://auth.example.com/jwks"});
    let mut w = worker(&v, FakeHost::new());
    let read = bearer("rsa-a", "rsa-a", "mcp:read");
    w.on_request_headers(1, &headers("POST", Some(&read)), false); // waits for keys
    w.on_request_headers(2, &headers("POST", None), false); // answered 401
    assert_eq!(w.pending_len(), 2);
    let call = tick_until_call(&mut w);
    answer(&mut w, &call, 200, &jwks(&["rsa-a"]));
    w.on_request_headers(3, &headers("POST", Some(&read)), false); // waits for its body
    assert_eq!(w.pending_len(), 3);
    w.host().take_actions();
    for ctx in [1, 2, 3] {
        w.on_done(ctx);
    }
    assert_eq!(w.pending_len(), 0);
    w.host().advance_ms(60_000);
    w.on_tick();
    assert!(
        answered(&w.host().take_actions()).is_empty(),
        "nothing answered for a dropped request"
    );
}

#[test]
fn counts_in_memory_and_hands_the_counts_to_the_host_on_the_tick() {
    let mut w = worker(&remote_json(), FakeHost::new());
    for name in [
        "mcp_oauth_requests_allowed",
        "mcp_oauth_metadata_served",
        "mcp_oauth_requests_denied_missing_token",
        "mcp_oauth_token_cache_hits",
        "mcp_oauth_token_cache_misses",
        "mcp_oauth_key_fetches_ok",
        "mcp_oauth_key_fetches_failed",
    ] {
        assert!(w.host().has_counter(name), "{name} defined at 0");
    }
    assert!(!w
        .host()
        .has_counter("mcp_oauth_requests_denied_token_expired"));
    let call = tick_until_call(&mut w);
    answer(&mut w, &call, 200, &jwks(&["rsa-a"]));
    let good = bearer("rsa-a", "rsa-a", "mcp:read");
    for ctx in 0..3 {
        w.on_request_headers(ctx, &headers("GET", Some(&good)), true);
    }
    w.on_request_headers(9, &headers("GET", None), true);
    assert_eq!(
        w.host().counter("mcp_oauth_requests_allowed"),
        0,
        "not before the tick"
    );
    w.on_tick();
    assert_eq!(w.host().counter("mcp_oauth_requests_allowed"), 3);
    assert_eq!(w.host().counter("mcp_oauth_token_cache_misses"), 1);
    assert_eq!(w.host().counter("mcp_oauth_token_cache_hits"), 2);
    assert_eq!(
        w.host().counter("mcp_oauth_requests_denied_missing_token"),
        1
    );
    assert_eq!(w.host().gauge("mcp_oauth_keys_in_use"), Some(1));
}

#[test]
fn a_refused_call_counts_as_a_failed_fetch_and_is_retried() {
    let mut w = worker(&remote_json(), FakeHost::new().refusing_calls());
    w.on_tick();
    w.on_tick();
    assert_eq!(w.host().counter("mcp_oauth_key_fetches_failed"), 1);
}

#[test]
fn a_call_the_host_never_answers_does_not_block_the_next_fetch() {
    let mut w = worker(&remote_json(), FakeHost::new());
    let _lost = tick_until_call(&mut w);
    // The lease (11 s for a 5 s timeout) and the call's own bound (2 x 5 s + 1 s) run out.
    w.host().advance_ms(11_000);
    w.on_tick();
    let again = w.host().take_calls();
    assert_eq!(again.len(), 1, "{again:?}");
    answer(&mut w, &again[0], 200, &jwks(&["rsa-a"]));
    let good = bearer("rsa-a", "rsa-a", "mcp:read");
    assert_eq!(
        w.on_request_headers(CTX, &headers("GET", Some(&good)), true),
        Flow::Continue
    );
}

// ------------------------------------------------------------------------------------------
// Introspection (RFC 7662)

const OPAQUE: &str = "Bearer 2YotnFZFEjr1zCsicMWpAA";

/// `/mcp` whose only issuer introspects at `https://auth.example.com/introspect` (no keys),
/// with `fields` added to its `introspection`.
fn introspecting_json(fields: Value) -> Value {
    let mut v = remote_json();
    let mut intro = json!({"endpoint": "https://auth.example.com/introspect",
        "client_id": "mcp-gateway", "client_secret_env": "MCP_SECRET"});
    for (k, val) in fields.as_object().unwrap() {
        intro[k] = val.clone();
    }
    v["issuers"] = json!([{"issuer": "https://auth.example.com", "cluster": "auth",
        "introspection": intro}]);
    v
}

fn introspecting(fields: Value) -> Worker<FakeHost> {
    worker(
        &introspecting_json(fields),
        FakeHost::new().with_env("MCP_SECRET", "s3cret"),
    )
}

fn active_answer(extra: Value) -> Vec<u8> {
    let mut a = json!({"active": true, "aud": "https://mcp.example.com/mcp",
        "iss": "https://auth.example.com", "exp": T0_MS / 1000 + 3600,
        "scope": "mcp:read", "sub": "user-7", "client_id": "app"});
    for (k, v) in extra.as_object().unwrap() {
        a[k] = v.clone();
    }
    a.to_string().into_bytes()
}

#[test]
fn introspects_an_opaque_token_once_and_serves_later_requests_from_the_caches() {
    let mut w = introspecting(json!({}));
    assert_eq!(
        w.on_request_headers(1, &headers("POST", Some(OPAQUE)), true),
        Flow::Pause
    );
    assert_eq!(
        w.on_request_headers(2, &headers("GET", Some(OPAQUE)), true),
        Flow::Pause
    );
    let calls = w.host().take_calls();
    assert_eq!(
        calls.len(),
        1,
        "one call for concurrent requests with one token: {calls:?}"
    );
    assert_eq!(
        (
            calls[0].cluster.as_str(),
            calls[0].method.as_str(),
            calls[0].url.as_str(),
            calls[0].timeout_ms
        ),
        ("auth", "POST", "https://auth.example.com/introspect", 2000)
    );
    answer(&mut w, &calls[0], 200, &active_answer(json!({})));
    let actions = w.host().take_actions();
    assert_eq!(resumed(&actions), [1, 2]);
    assert!(actions.contains(&Action::RemoveHeader(1, "authorization".into())));
    assert!(actions.contains(&Action::SetHeader(
        1,
        "x-mcp-subject".into(),
        "user-7".into()
    )));
    assert_eq!(
        w.on_request_headers(3, &headers("GET", Some(OPAQUE)), true),
        Flow::Continue
    );
    let mut other = worker(
        &introspecting_json(json!({})),
        w.host().worker_beside().with_env("MCP_SECRET", "s3cret"),
    );
    assert_eq!(
        other.on_request_headers(4, &headers("GET", Some(OPAQUE)), true),
        Flow::Continue
    );
    assert!(w.host().take_calls().is_empty() && other.host().take_calls().is_empty());
    w.on_tick();
    other.on_tick();
    assert_eq!(w.host().counter("mcp_oauth_introspections_active"), 1);
    assert_eq!(w.host().counter("mcp_oauth_introspection_cache_misses"), 2);
    // Requests 2 (woken after 1 took the answer) and 3 came from this worker's verified-token
    // cache, request 4 from the shared one: all three are introspection cache hits.
    assert_eq!(w.host().counter("mcp_oauth_introspection_cache_hits"), 2);
    assert_eq!(w.host().counter("mcp_oauth_token_cache_hits"), 2);
    assert_eq!(
        other.host().counter("mcp_oauth_introspection_cache_hits"),
        1
    );
    assert_eq!(w.host().counter("mcp_oauth_requests_allowed"), 3);
}

#[test]
fn a_worker_keeps_an_introspected_token_no_longer_than_the_shared_cache() {
    let mut w = introspecting(json!({"cache_seconds": 30}));
    w.on_request_headers(1, &headers("GET", Some(OPAQUE)), true);
    let call = w.host().take_calls().pop().unwrap();
    answer(&mut w, &call, 200, &active_answer(json!({})));
    w.host().take_actions();
    w.host().advance_ms(29_000);
    assert_eq!(
        w.on_request_headers(2, &headers("GET", Some(OPAQUE)), true),
        Flow::Continue
    );
    assert!(w.host().take_calls().is_empty());
    // Past `cache_seconds` the token is asked about again (a revoked token stops passing).
    w.host().advance_ms(1_000);
    assert_eq!(
        w.on_request_headers(3, &headers("GET", Some(OPAQUE)), true),
        Flow::Pause
    );
    let call = w.host().take_calls().pop().unwrap();
    answer(&mut w, &call, 200, br#"{"active":false}"#);
    assert_eq!(answered(&w.host().take_actions()), [(3, 401)]);
    // A token kept for one resource is checked again for another: its audience decides.
    let mut two = introspecting_json(json!({}));
    two["resources"].as_array_mut().unwrap().push(json!({
        "resource": "https://mcp.example.com/other",
        "authorization_servers": ["https://auth.example.com"]}));
    let mut w = worker(&two, FakeHost::new().with_env("MCP_SECRET", "s3cret"));
    w.on_request_headers(1, &headers("GET", Some(OPAQUE)), true);
    let call = w.host().take_calls().pop().unwrap();
    answer(&mut w, &call, 200, &active_answer(json!({})));
    w.host().take_actions();
    let other = [
        (":method", "GET"),
        (":path", "/other"),
        (":authority", "mcp.example.com"),
        ("authorization", OPAQUE),
    ];
    assert_eq!(
        w.on_request_headers(2, &serialize_pairs(&other), true),
        Flow::Pause
    );
    assert_eq!(answered(&w.host().take_actions()), [(2, 401)]);
}

#[test]
fn refuses_an_inactive_token_and_remembers_it_briefly() {
    let mut w = introspecting(json!({}));
    w.on_request_headers(1, &headers("GET", Some(OPAQUE)), true);
    let call = w.host().take_calls().pop().unwrap();
    answer(&mut w, &call, 200, br#"{"active":false}"#);
    assert_eq!(answered(&w.host().take_actions()), [(1, 401)]);
    assert_eq!(
        w.on_request_headers(2, &headers("GET", Some(OPAQUE)), true),
        Flow::Pause
    );
    assert_eq!(answered(&w.host().take_actions()), [(2, 401)]);
    assert!(
        w.host().take_calls().is_empty(),
        "inactive answers are reused"
    );
    w.host().advance_ms(10_000);
    w.on_request_headers(3, &headers("GET", Some(OPAQUE)), true);
    assert_eq!(
        w.host().take_calls().len(),
        1,
        "negative_cache_seconds passed"
    );
    w.on_tick();
    assert_eq!(
        w.host().counter("mcp_oauth_requests_denied_token_inactive"),
        2
    );
}

#[test]
fn answers_503_when_introspection_fails_and_keeps_no_verdict() {
    let mut w = introspecting(json!({}));
    for (ctx, status, body) in [
        (1, 500, &b"{}"[..]),
        (2, 200, &b"<html>"[..]),
        (3, 200, &br#"{"active":"yes"}"#[..]),
    ] {
        w.on_request_headers(ctx, &headers("GET", Some(OPAQUE)), true);
        let call = w
            .host()
            .take_calls()
            .pop()
            .expect("each failure leaves nothing cached");
        answer(&mut w, &call, status, body);
        let actions = w.host().take_actions();
        assert_eq!(answered(&actions), [(ctx, 503)]);
        assert!(resumed(&actions).is_empty());
    }
    // No answer at all (a timeout, the endpoint down).
    w.on_request_headers(4, &headers("GET", Some(OPAQUE)), true);
    let call = w.host().take_calls().pop().unwrap();
    w.on_http_call_response(None, call.token, &CallResponse::default());
    assert_eq!(answered(&w.host().take_actions()), [(4, 503)]);
    w.on_tick();
    assert_eq!(w.host().counter("mcp_oauth_introspections_failed"), 4);
    assert_eq!(
        w.host()
            .counter("mcp_oauth_requests_denied_introspection_unavailable"),
        4
    );
}

#[test]
fn bounds_the_calls_outstanding_on_a_worker() {
    let mut w = introspecting(json!({"max_in_flight": 2}));
    for ctx in 1..=3 {
        let token = format!("Bearer opaque-{ctx}");
        w.on_request_headers(ctx, &headers("GET", Some(&token)), true);
    }
    assert_eq!(w.host().take_calls().len(), 2);
    let actions = w.host().take_actions();
    assert_eq!(answered(&actions), [(3, 503)]);
    w.on_tick();
    assert_eq!(
        w.host()
            .counter("mcp_oauth_requests_denied_introspection_busy"),
        1
    );
}

#[test]
fn takes_the_client_secret_from_the_environment_or_refuses_the_configuration() {
    let refused = Worker::configure(
        FakeHost::new(),
        introspecting_json(json!({})).to_string().as_bytes(),
    );
    let e = refused.err().unwrap();
    assert_eq!(
        (e.path.as_str(), e.kind.code()),
        ("issuers[0].introspection.client_secret_env", "missing_env")
    );
    assert!(!e.to_string().contains("s3cret"));
    let empty = Worker::configure(
        FakeHost::new().with_env("MCP_SECRET", ""),
        introspecting_json(json!({})).to_string().as_bytes(),
    );
    assert!(empty.is_err(), "an empty secret is no secret");
}

#[test]
fn discovers_the_introspection_endpoint_from_the_issuer_metadata() {
    let mut v = introspecting_json(json!({}));
    v["issuers"][0]["introspection"]
        .as_object_mut()
        .unwrap()
        .remove("endpoint");
    let mut w = worker(&v, FakeHost::new().with_env("MCP_SECRET", "s3cret"));
    assert_eq!(
        w.on_request_headers(1, &headers("GET", Some(OPAQUE)), true),
        Flow::Pause
    );
    let discovery = tick_until_call(&mut w);
    assert_eq!(
        discovery.url,
        "https://auth.example.com/.well-known/oauth-authorization-server"
    );
    let doc = json!({"issuer": "https://auth.example.com",
        "introspection_endpoint": "https://as-internal.example.com/oauth/introspect"});
    answer(&mut w, &discovery, 200, doc.to_string().as_bytes());
    let call = w
        .host()
        .take_calls()
        .pop()
        .expect("the held request is introspected");
    assert_eq!(call.url, "https://as-internal.example.com/oauth/introspect");
    answer(&mut w, &call, 200, &active_answer(json!({})));
    assert_eq!(resumed(&w.host().take_actions()), [1]);
}

#[test]
fn introspects_the_jwts_of_an_issuer_without_keys() {
    let mut w = introspecting(json!({}));
    let jwt = bearer("rsa-b", "whatever", "mcp:read");
    assert_eq!(
        w.on_request_headers(1, &headers("GET", Some(&jwt)), true),
        Flow::Pause
    );
    let call = w
        .host()
        .take_calls()
        .pop()
        .expect("the JWT is introspected");
    answer(&mut w, &call, 200, &active_answer(json!({})));
    assert_eq!(resumed(&w.host().take_actions()), [1]);
    // Again: from the worker's verified-token cache, no call, no shared-data read needed.
    assert_eq!(
        w.on_request_headers(2, &headers("GET", Some(&jwt)), true),
        Flow::Continue
    );
    assert!(w.host().take_calls().is_empty());
    w.on_tick();
    assert_eq!(w.host().counter("mcp_oauth_token_cache_hits"), 1);
    assert_eq!(w.host().counter("mcp_oauth_introspection_cache_hits"), 1);
}

#[test]
fn an_active_answer_for_another_resource_or_without_scope_is_refused() {
    let mut w = introspecting(json!({}));
    w.on_request_headers(1, &headers("GET", Some(OPAQUE)), true);
    let call = w.host().take_calls().pop().unwrap();
    answer(
        &mut w,
        &call,
        200,
        &active_answer(json!({"aud": "https://other.example.com/tools"})),
    );
    let actions = w.host().take_actions();
    let Some(Action::Respond { status, body, .. }) =
        actions.iter().find(|a| matches!(a, Action::Respond { .. }))
    else {
        panic!("{actions:?}")
    };
    assert_eq!(*status, 401);
    assert!(body.contains("audience"), "{body}");
    let mut w = introspecting(json!({}));
    w.on_request_headers(2, &headers("GET", Some(OPAQUE)), true);
    let call = w.host().take_calls().pop().unwrap();
    answer(
        &mut w,
        &call,
        200,
        &active_answer(json!({"scope": "other"})),
    );
    assert_eq!(
        answered(&w.host().take_actions()),
        [(2, 403)],
        "the step-up challenge, as for a JWT"
    );
}

#[test]
fn asks_the_introspecting_issuers_in_order_until_one_says_active() {
    let mut v = introspecting_json(json!({}));
    v["resources"][0]["authorization_servers"] =
        json!(["https://auth.example.com", "https://second.example.com"]);
    v["issuers"].as_array_mut().unwrap().push(json!({"issuer": "https://second.example.com", "cluster": "second",
        "introspection": {"endpoint": "https://second.example.com/introspect", "client_id": "gw", "client_secret": "x"}}));
    let mut w = worker(&v, FakeHost::new().with_env("MCP_SECRET", "s3cret"));
    w.on_request_headers(1, &headers("GET", Some(OPAQUE)), true);
    let first = w.host().take_calls().pop().unwrap();
    assert_eq!(first.cluster, "auth");
    answer(&mut w, &first, 200, br#"{"active":false}"#);
    let second = w.host().take_calls().pop().expect("then the second issuer");
    assert_eq!(second.cluster, "second");
    answer(
        &mut w,
        &second,
        200,
        &active_answer(json!({"iss": "https://second.example.com"})),
    );
    assert_eq!(resumed(&w.host().take_actions()), [1]);
}

#[test]
fn an_answer_not_kept_still_decides_the_requests_that_waited_for_it() {
    let mut w = introspecting(json!({"cache_seconds": 0}));
    w.on_request_headers(1, &headers("GET", Some(OPAQUE)), true);
    w.on_request_headers(2, &headers("GET", Some(OPAQUE)), true);
    let call = w.host().take_calls().pop().unwrap();
    answer(&mut w, &call, 200, &active_answer(json!({})));
    assert_eq!(resumed(&w.host().take_actions()), [1, 2]);
    assert!(w.host().take_calls().is_empty());
    w.on_request_headers(3, &headers("GET", Some(OPAQUE)), true);
    assert_eq!(
        w.host().take_calls().len(),
        1,
        "cache_seconds 0: asked again"
    );
}

#[test]
fn a_request_waiting_for_another_request_s_call_asks_again_when_that_request_ends() {
    let mut w = introspecting(json!({}));
    w.on_request_headers(1, &headers("GET", Some(OPAQUE)), true);
    w.on_request_headers(2, &headers("GET", Some(OPAQUE)), true);
    assert_eq!(
        w.host().take_calls().len(),
        1,
        "request 2 waits for request 1's call"
    );
    // Request 1's client goes away: its call's answer would come to its context, now gone.
    w.on_done(1);
    w.on_tick();
    let again = w.host().take_calls();
    assert_eq!(again.len(), 1, "request 2 asks itself: {again:?}");
    answer(&mut w, &again[0], 200, &active_answer(json!({})));
    assert_eq!(resumed(&w.host().take_actions()), [2]);
}

#[test]
fn a_held_introspection_with_a_body_decides_on_the_body_too() {
    let mut v = introspecting_json(json!({}));
    v["resources"][0]["tool_scopes"] = json!({"delete_all": ["mcp:admin"]});
    let mut w = worker(&v, FakeHost::new().with_env("MCP_SECRET", "s3cret"));
    assert_eq!(
        w.on_request_headers(1, &headers("POST", Some(OPAQUE)), false),
        Flow::Pause
    );
    let flows = send_body(&mut w, 1, &tool_call("delete_all"), true);
    assert!(flows.iter().all(|f| *f == Flow::Pause));
    let call = w.host().take_calls().pop().unwrap();
    answer(&mut w, &call, 200, &active_answer(json!({})));
    assert_eq!(answered(&w.host().take_actions()), [(1, 403)]);
}

// ------------------------------------------------------------------------------------------
// Property: nothing held is released except by its decision

/// What one request carries.
#[derive(Debug, Clone, Copy)]
enum Credential {
    Good,
    /// The issuer's `kid`, another key's signature.
    Forged,
    /// A `kid` the issuer never publishes.
    UnknownKid,
    Missing,
}

#[derive(Debug, Clone, Copy)]
enum Body {
    Allowed,
    Forbidden,
    NotJson,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// The next piece of the request (headers, a chunk, the end or the trailers).
    Advance(usize),
    Tick,
    Clock(u64),
    /// Every call in flight is answered with the issuer's keys (rsa-a).
    KeysArrive,
    Done(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..4usize).prop_map(Step::Advance),
        2 => Just(Step::Tick),
        1 => (0..3_000u64).prop_map(Step::Clock),
        1 => Just(Step::KeysArrive),
        1 => (0..4usize).prop_map(Step::Done),
    ]
}

fn request() -> impl Strategy<Value = (Credential, Body, bool)> {
    (
        prop_oneof![
            Just(Credential::Good),
            Just(Credential::Forged),
            Just(Credential::UnknownKid),
            Just(Credential::Missing)
        ],
        prop_oneof![
            Just(Body::Allowed),
            Just(Body::Forbidden),
            Just(Body::NotJson)
        ],
        any::<bool>(),
    )
}

/// What the host has let through of one request.
#[derive(Debug, Default)]
struct Seen {
    /// Pieces sent so far: 0 none, 1 headers, 2 first chunk, 3 second chunk, 4 ended.
    sent: usize,
    done: bool,
    headers_released: bool,
    /// Chunks the filter paused (the host holds them until the request is resumed).
    paused_chunks: usize,
    body_released: bool,
    answered: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_pending_request_is_released_except_by_its_decision(
        hold in any::<bool>(),
        remote in any::<bool>(),
        requests in prop::collection::vec(request(), 4),
        steps in prop::collection::vec(step(), 0..60),
    ) {
        let mut v = tools_json(hold);
        if remote {
            v["issuers"][0] = json!({"issuer": "https://auth.example.com", "cluster": "auth",
                "jwks_uri": "https://auth.example.com/jwks", "jwks_wait_ms": 2000});
        }
        let mut w = worker(&v, FakeHost::new());
        let mut seen: Vec<Seen> = (0..4).map(|_| Seen::default()).collect();
        let mut calls: Vec<Dispatched> = Vec::new();
        let tokens: Vec<Option<String>> = requests.iter().map(|(c, _, _)| match c {
            Credential::Good => Some(bearer("rsa-a", "rsa-a", "mcp:read")),
            Credential::Forged => Some(bearer("rsa-b", "rsa-a", "mcp:read")),
            Credential::UnknownKid => Some(bearer("rsa-b", "rsa-z", "mcp:read")),
            Credential::Missing => None,
        }).collect();
        // Everything the steps do, then enough time and keys for every request to end.
        let tail = [Step::KeysArrive, Step::Tick, Step::Clock(20_000), Step::Tick, Step::KeysArrive, Step::Tick];
        let all: Vec<Step> = steps.iter().copied().chain((0..4).flat_map(|i| [Step::Advance(i); 4])).chain(tail).collect();
        for step in all {
            match step {
                Step::Advance(i) => {
                    let ctx = i as u32 + 1;
                    let s = &mut seen[i];
                    if s.done || s.sent >= 4 {
                        continue;
                    }
                    let (_, body, trailers) = requests[i];
                    let bytes = match body {
                        Body::Allowed => tool_call("echo"),
                        Body::Forbidden => tool_call("delete_all"),
                        Body::NotJson => b"not json at all".to_vec(),
                    };
                    let (first, second) = bytes.split_at(bytes.len() / 2);
                    let flow = match s.sent {
                        0 => {
                            let flow = w.on_request_headers(ctx, &headers("POST", tokens[i].as_deref()), false);
                            s.headers_released |= flow == Flow::Continue;
                            flow
                        }
                        1 | 2 => {
                            let chunk = if s.sent == 1 { first } else { second };
                            let size = w.host().buffer_body(ctx, chunk);
                            let last = s.sent == 2 && !trailers;
                            w.on_request_body(ctx, size, last)
                        }
                        _ if trailers => w.on_request_trailers(ctx),
                        _ => {
                            s.sent += 1; // already ended with its last chunk
                            continue;
                        }
                    };
                    if s.sent > 0 {
                        match flow {
                            // Continuing the body continues the held headers too.
                            Flow::Continue => {
                                s.body_released = true;
                                s.headers_released = true;
                            }
                            Flow::Pause => s.paused_chunks += 1,
                        }
                    }
                    s.sent += 1;
                }
                Step::Tick => w.on_tick(),
                Step::Clock(ms) => w.host().advance_ms(ms),
                Step::KeysArrive => {
                    calls.extend(w.host().take_calls());
                    for call in std::mem::take(&mut calls) {
                        answer(&mut w, &call, 200, &jwks(&["rsa-a"]));
                    }
                }
                Step::Done(i) => {
                    w.on_done(i as u32 + 1);
                    seen[i].done = true;
                }
            }
            calls.extend(w.host().take_calls());
            for action in w.host().take_actions() {
                match action {
                    Action::Resume(ctx) => {
                        let s = &mut seen[ctx as usize - 1];
                        prop_assert!(!s.done && !s.answered, "resumed after its end: {s:?}");
                        s.headers_released = true;
                        s.body_released |= s.paused_chunks > 0;
                    }
                    Action::Respond { context, .. } => {
                        let s = &mut seen[context as usize - 1];
                        prop_assert!(!s.done && !s.answered && !s.body_released, "answered twice or after release: {s:?}");
                        s.answered = true;
                    }
                    _ => {}
                }
            }
        }
        for (i, (credential, body, _)) in requests.iter().enumerate() {
            let s = &seen[i];
            let allowed = matches!((credential, body), (Credential::Good, Body::Allowed));
            if !allowed {
                prop_assert!(!s.body_released, "request {i} {credential:?} {body:?}: body released");
                if hold || !matches!(credential, Credential::Good) {
                    prop_assert!(!s.headers_released, "request {i} {credential:?} {body:?}: headers released");
                }
            } else if !s.done && !s.answered {
                // Not refused for its keys or its body taking too long: then let go, whole.
                prop_assert!(s.headers_released && s.body_released, "request {i} allowed but still held: {s:?}");
            }
            prop_assert!(s.done || s.answered || s.body_released, "request {i} never ended: {s:?}");
        }
        for i in 0..4 {
            w.on_done(i + 1);
        }
        prop_assert_eq!(w.pending_len(), 0);
    }
}

/// `remote_json` whose resource answers its authorization server's metadata at its origin.
fn legacy_json() -> Value {
    let mut v = remote_json();
    v["resources"][0]["origin_authorization_server_metadata"] = json!(true);
    v
}

const AS_METADATA: &str = "/.well-known/oauth-authorization-server";
/// The authorization server's document, spaced and ordered as it chose: served byte for byte.
const AS_DOCUMENT: &str = "{\"issuer\":\"https://auth.example.com\",  \"authorization_endpoint\":\"https://auth.example.com/auth\",\n \"token_endpoint\":\"https://auth.example.com/token\", \"x-vendor\":[1,2]}";

fn get_at(path: &str, method: &str) -> Vec<u8> {
    serialize_pairs(&[
        (":method", method),
        (":path", path),
        (":authority", "mcp.example.com"),
        ("origin", "http://localhost:6274"),
    ])
}

/// Ticks until the worker asked for `url`, answering nothing else.
fn call_to(w: &mut Worker<FakeHost>, url: &str) -> Dispatched {
    for _ in 0..5 {
        w.on_tick();
        if let Some(call) = w.host().take_calls().into_iter().find(|c| c.url == url) {
            return call;
        }
        w.host().advance_ms(TICK_MS);
    }
    panic!("no call to {url}")
}

fn answer_with(
    w: &mut Worker<FakeHost>,
    call: &Dispatched,
    status: u16,
    body: &[u8],
    headers: &[(&str, &str)],
) {
    let mut all = vec![(":status".to_string(), status.to_string())];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let response = CallResponse {
        headers: all,
        body: body.to_vec(),
        body_size: body.len(),
    };
    w.on_http_call_response(None, call.token, &response);
}

fn response_of(actions: &[Action]) -> (u16, Vec<(String, String)>, String) {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Respond {
                status,
                headers,
                body,
                ..
            } => Some((*status, headers.clone(), body.clone())),
            _ => None,
        })
        .expect("an answer")
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn serves_the_authorization_server_metadata_at_the_origin_byte_for_byte() {
    let mut w = worker(&legacy_json(), FakeHost::new());
    // Before the first fetch: 503 with retry-after, never the upstream.
    assert_eq!(
        w.on_request_headers(1, &get_at(AS_METADATA, "GET"), true),
        Flow::Pause
    );
    let (status, headers, _) = response_of(&w.host().take_actions());
    assert_eq!(status, 503);
    assert_eq!(header_of(&headers, "retry-after"), Some("5"));
    let call = call_to(
        &mut w,
        "https://auth.example.com/.well-known/oauth-authorization-server",
    );
    assert_eq!(call.cluster, "auth");
    answer_with(
        &mut w,
        &call,
        200,
        AS_DOCUMENT.as_bytes(),
        &[("cache-control", "max-age=600")],
    );
    for (ctx, path, method) in [
        (2, AS_METADATA, "GET"),
        (3, "/.well-known/openid-configuration", "GET"),
        (4, "/.well-known/oauth-authorization-server?x=1", "HEAD"),
    ] {
        assert_eq!(
            w.on_request_headers(ctx, &get_at(path, method), true),
            Flow::Pause
        );
        let (status, headers, body) = response_of(&w.host().take_actions());
        assert_eq!(
            (status, body.as_str()),
            (200, AS_DOCUMENT),
            "{method} {path}"
        );
        assert_eq!(
            header_of(&headers, "content-type"),
            Some("application/json")
        );
        assert_eq!(
            header_of(&headers, "cache-control"),
            Some("public, max-age=600")
        );
        assert_eq!(
            header_of(&headers, "access-control-allow-origin"),
            Some("*")
        );
    }
    assert_eq!(
        w.on_request_headers(5, &get_at(AS_METADATA, "POST"), true),
        Flow::Pause
    );
    assert_eq!(answered(&w.host().take_actions()), [(5, 405)]);
    // Another worker of the proxy serves the same document without fetching it.
    let mut other = worker(&legacy_json(), w.host().worker_beside());
    other.on_tick();
    assert!(other
        .host()
        .take_calls()
        .iter()
        .all(|c| !c.url.contains("oauth-authorization-server")));
    other.on_request_headers(6, &get_at(AS_METADATA, "GET"), true);
    assert_eq!(response_of(&other.host().take_actions()).2, AS_DOCUMENT);
    w.on_tick();
    assert_eq!(w.host().counter("mcp_oauth_as_metadata_served"), 3);
    assert_eq!(w.host().counter("mcp_oauth_as_metadata_unavailable"), 1);
    assert_eq!(w.host().counter("mcp_oauth_as_metadata_fetches_ok"), 1);
}

#[test]
fn discovers_the_document_in_order_and_keeps_it_when_a_refresh_fails() {
    let mut w = worker(&legacy_json(), FakeHost::new());
    let first = call_to(
        &mut w,
        "https://auth.example.com/.well-known/oauth-authorization-server",
    );
    answer_with(&mut w, &first, 404, b"", &[]);
    let second = w.host().take_calls();
    assert_eq!(
        second.iter().map(|c| c.url.as_str()).collect::<Vec<_>>(),
        ["https://auth.example.com/.well-known/openid-configuration"]
    );
    answer_with(&mut w, &second[0], 200, AS_DOCUMENT.as_bytes(), &[]);
    // Three quarters into the default 15 minutes the refresh asks the document that worked.
    w.host().advance_ms(676_000);
    let refresh = call_to(
        &mut w,
        "https://auth.example.com/.well-known/openid-configuration",
    );
    answer_with(&mut w, &refresh, 500, b"", &[]);
    w.on_request_headers(1, &get_at(AS_METADATA, "GET"), true);
    let (status, headers, body) = response_of(&w.host().take_actions());
    assert_eq!(
        (status, body.as_str()),
        (200, AS_DOCUMENT),
        "the stale document stays"
    );
    assert_eq!(
        header_of(&headers, "cache-control"),
        Some("public, max-age=224")
    );
    // A document naming another issuer is never stored.
    w.host().advance_ms(1_000);
    let retry = call_to(
        &mut w,
        "https://auth.example.com/.well-known/oauth-authorization-server",
    );
    answer_with(
        &mut w,
        &retry,
        200,
        br#"{"issuer":"https://evil.example.com"}"#,
        &[],
    );
    let last = w.host().take_calls();
    assert_eq!(last.len(), 1, "the next document of the order is asked for");
    answer_with(&mut w, &last[0], 500, b"", &[]);
    w.on_request_headers(2, &get_at(AS_METADATA, "GET"), true);
    assert_eq!(response_of(&w.host().take_actions()).2, AS_DOCUMENT);
    w.on_tick();
    assert!(w.host().counter("mcp_oauth_as_metadata_fetches_failed") >= 2);
}

#[test]
fn an_origin_without_the_flag_passes_the_authorization_server_paths_through() {
    let mut w = worker(&remote_json(), FakeHost::new());
    assert_eq!(
        w.on_request_headers(1, &get_at(AS_METADATA, "GET"), true),
        Flow::Continue
    );
    w.on_tick();
    assert!(w
        .host()
        .take_calls()
        .iter()
        .all(|c| !c.url.contains("/.well-known/")));
}

// ------------------------------------------------------------------------------------------
// tools/list results filtered in the response

const LISTED: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"delete_all","inputSchema":{"type":"object"}}],"nextCursor":"2"}}"#;

fn tools_list() -> Vec<u8> {
    br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec()
}

/// A `tools/list` POST with `scope`, allowed on its body.
fn allowed_list_request(w: &mut Worker<FakeHost>, ctx: u32, scope: &str) {
    let token = bearer("rsa-a", "rsa-a", scope);
    assert_eq!(
        w.on_request_headers(ctx, &headers("POST", Some(&token)), false),
        Flow::Pause
    );
    let flows = send_body(w, ctx, &tools_list(), false);
    assert_eq!(flows.last(), Some(&Flow::Continue));
}

/// The upstream's response goes through the worker in `chunks`: what the client receives,
/// the flow of each chunk, and what was done to the headers.
fn respond_with(
    w: &mut Worker<FakeHost>,
    ctx: u32,
    content_type: &str,
    chunks: &[&[u8]],
) -> (Vec<u8>, Vec<Flow>) {
    w.host().response_headers(
        ctx,
        &[
            (":status", "200"),
            ("content-type", content_type),
            ("content-length", "999"),
        ],
    );
    assert_eq!(w.on_response_headers(ctx, false), Flow::Continue);
    let mut client = Vec::new();
    let mut flows = Vec::new();
    let mut held = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        held.extend_from_slice(chunk);
        let size = w.host().hold_response_body(ctx, &held);
        let flow = w.on_response_body(ctx, size, i + 1 == chunks.len());
        if flow == Flow::Continue {
            client.extend(w.host().held_response_body(ctx));
            held.clear();
        }
        flows.push(flow);
    }
    (client, flows)
}

#[test]
fn filters_a_json_tools_list_result_to_the_tools_the_token_may_call() {
    let mut w = worker(&tools_json(true), FakeHost::new());
    allowed_list_request(&mut w, CTX, "mcp:read");
    let actions = w.host().take_actions();
    assert!(actions.contains(&Action::RemoveHeader(CTX, "accept-encoding".into())));
    let (a, b) = LISTED.as_bytes().split_at(50);
    let (client, flows) = respond_with(&mut w, CTX, "application/json", &[a, b]);
    assert_eq!(
        flows,
        [Flow::Pause, Flow::Continue],
        "buffered, then rewritten whole"
    );
    let v: Value = serde_json::from_slice(&client).unwrap();
    assert_eq!(
        v["result"]["tools"],
        json!([{"name": "echo", "inputSchema": {"type": "object"}}])
    );
    assert_eq!(v["result"]["cacheScope"], "private");
    assert_eq!(v["result"]["nextCursor"], "2");
    assert!(w
        .host()
        .take_actions()
        .contains(&Action::RemoveResponseHeader(CTX, "content-length".into())));
    w.on_tick();
    assert_eq!(w.host().counter("mcp_oauth_tools_hidden"), 1);
    w.on_done(CTX);
    assert_eq!(w.pending_len(), 0);

    // An admin keeps every tool; the list is still marked private.
    allowed_list_request(&mut w, CTX + 1, "mcp:read mcp:admin");
    let (client, _) = respond_with(&mut w, CTX + 1, "application/json", &[LISTED.as_bytes()]);
    let v: Value = serde_json::from_slice(&client).unwrap();
    assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 2);
    assert_eq!(v["result"]["cacheScope"], "private");
    w.on_tick();
    assert_eq!(w.host().counter("mcp_oauth_tools_hidden"), 1);
}

#[test]
fn passes_the_other_events_of_a_stream_at_once_and_rewrites_the_result_event() {
    let mut w = worker(&tools_json(false), FakeHost::new());
    let token = bearer("rsa-a", "rsa-a", "mcp:read");
    assert_eq!(
        w.on_request_headers(CTX, &headers("POST", Some(&token)), false),
        Flow::Continue,
        "headers go first"
    );
    send_body(&mut w, CTX, &tools_list(), false);
    assert!(
        !w.host()
            .take_actions()
            .contains(&Action::RemoveHeader(CTX, "accept-encoding".into())),
        "headers already gone"
    );
    let note = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n";
    let result = format!("event: message\ndata: {LISTED}\n\n");
    let (r1, r2) = result.as_bytes().split_at(60);
    let (client, flows) = respond_with(&mut w, CTX, "text/event-stream", &[note, r1, r2]);
    assert_eq!(flows, [Flow::Continue; 3], "a stream is never held whole");
    assert!(client.starts_with(note));
    let event = &client[note.len()..];
    let data = crate::sse::data(&crate::sse::lines(event)).unwrap();
    let v: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(v["result"]["tools"][0]["name"], "echo");
    assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
}

#[test]
fn leaves_responses_alone_when_the_request_lists_no_tools_or_filtering_is_off() {
    let mut w = worker(&tools_json(true), FakeHost::new());
    let token = bearer("rsa-a", "rsa-a", "mcp:read");
    w.on_request_headers(CTX, &headers("POST", Some(&token)), false);
    send_body(&mut w, CTX, &tool_call("echo"), false);
    let (client, flows) = respond_with(&mut w, CTX, "application/json", &[LISTED.as_bytes()]);
    assert_eq!(
        (client, flows),
        (LISTED.as_bytes().to_vec(), vec![Flow::Continue])
    );

    let mut off = tools_json(true);
    off["resources"][0]["filter_tools_list"] = json!(false);
    let mut w = worker(&off, FakeHost::new());
    allowed_list_request(&mut w, CTX, "mcp:read");
    let (client, _) = respond_with(&mut w, CTX, "application/json", &[LISTED.as_bytes()]);
    assert_eq!(client, LISTED.as_bytes());
    assert!(!w.host().has_counter("mcp_oauth_tools_hidden"));
}

#[test]
fn a_list_that_cannot_be_read_becomes_a_json_rpc_error() {
    let mut w = worker(&tools_json(true), FakeHost::new());
    allowed_list_request(&mut w, CTX, "mcp:read");
    w.host().response_headers(
        CTX,
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
    );
    w.on_response_headers(CTX, false);
    let size = w.host().hold_response_body(CTX, b"\x1f\x8b\x08compressed");
    assert_eq!(w.on_response_body(CTX, size, false), Flow::Continue);
    let v: Value = serde_json::from_slice(&w.host().held_response_body(CTX)).unwrap();
    assert_eq!(v["id"], 1);
    assert_eq!(v["error"]["code"], -32603);
    let size = w.host().hold_response_body(CTX, b"more");
    assert_eq!(w.on_response_body(CTX, size, true), Flow::Continue);
    assert_eq!(w.host().held_response_body(CTX), b"");
    let actions = w.host().take_actions();
    assert!(actions.contains(&Action::RemoveResponseHeader(
        CTX,
        "content-encoding".into()
    )));
}

#[test]
fn a_get_event_stream_has_every_tool_list_on_it_filtered() {
    let mut w = worker(&tools_json(true), FakeHost::new());
    let token = bearer("rsa-a", "rsa-a", "mcp:read");
    let mut pairs = vec![
        (":method", "GET"),
        (":path", "/mcp"),
        (":authority", "mcp.example.com"),
        ("authorization", token.as_str()),
        ("accept", "text/event-stream"),
    ];
    // A GET stream's answers (resumed streams, the HTTP+SSE transport) are to requests the
    // filter did not see: every tool list on it is filtered.
    assert_eq!(
        w.on_request_headers(CTX, &serialize_pairs(&pairs), true),
        Flow::Continue
    );
    assert_eq!(w.pending_len(), 1);
    w.on_done(CTX);
    pairs.push(("last-event-id", "stream-1:4"));
    assert_eq!(
        w.on_request_headers(CTX + 1, &serialize_pairs(&pairs), true),
        Flow::Continue
    );
    let replayed = format!(
        "id: stream-1:5\ndata: {}\n\n",
        LISTED.replace("\"id\":1", "\"id\":42")
    );
    let (client, _) = respond_with(&mut w, CTX + 1, "text/event-stream", &[replayed.as_bytes()]);
    let data = crate::sse::data(&crate::sse::lines(&client)).unwrap();
    let v: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
    assert_eq!(v["id"], 42);
}

#[test]
fn answers_name_an_allowed_origin_and_vary_by_it() {
    let mut v = base_json();
    v["allowed_origins"] = json!(["https://app.example"]);
    let mut w = worker(&v, FakeHost::new());
    let pairs = serialize_pairs(&[
        (":method", "POST"),
        (":path", "/mcp"),
        (":authority", "mcp.example.com"),
        ("origin", "https://app.example"),
    ]);
    assert_eq!(w.on_request_headers(CTX, &pairs, true), Flow::Pause);
    let (status, headers, _) = response_of(&w.host().take_actions());
    assert_eq!(status, 401);
    assert_eq!(
        header_of(&headers, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(header_of(&headers, "vary"), Some("Origin"));
    let evil = serialize_pairs(&[
        (":method", "POST"),
        (":path", "/mcp"),
        (":authority", "mcp.example.com"),
        ("origin", "https://evil.example"),
    ]);
    assert_eq!(w.on_request_headers(CTX + 1, &evil, true), Flow::Pause);
    let (status, headers, _) = response_of(&w.host().take_actions());
    assert_eq!(status, 403);
    assert_eq!(header_of(&headers, "access-control-allow-origin"), None);
    w.on_tick();
    assert_eq!(
        w.host()
            .counter("mcp_oauth_requests_denied_origin_not_allowed"),
        1
    );
}

/// The filter state the worker set for `ctx`, by name.
fn filter_state(actions: &[Action], ctx: u32) -> BTreeMap<String, String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::FilterState(c, name, value) if *c == ctx => Some((name.clone(), value.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn leaves_an_audit_trail_in_filter_state_for_the_access_log() {
    let mut w = worker(&tools_json(true), FakeHost::new());
    let mut claims = good_claims();
    claims["exp"] = json!(T0_MS / 1000 + 3600);
    claims["scope"] = json!("mcp:read");
    claims["azp"] = json!("vscode\r\nforged: yes");
    let token = format!(
        "Bearer {}",
        token(
            "rsa-a",
            "RS256",
            json!({"alg": "RS256", "kid": "rsa-a"}),
            claims
        )
    );
    w.on_request_headers(CTX, &headers("POST", Some(&token)), false);
    send_body(&mut w, CTX, &tool_call("echo"), false);
    let state = filter_state(&w.host().take_actions(), CTX);
    let want: BTreeMap<String, String> = [
        ("mcp_oauth.outcome", "allowed"),
        ("mcp_oauth.subject", "user-1"),
        ("mcp_oauth.client_id", "vscode\\u000d\\u000aforged: yes"),
        ("mcp_oauth.issuer", "https://auth.example.com"),
        ("mcp_oauth.scopes", "mcp:read"),
        ("mcp_oauth.tool", "echo"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(state, want);

    // Refused for scopes: the token was verified, so who it names is logged too.
    w.on_request_headers(CTX + 1, &headers("POST", Some(&token)), false);
    send_body(&mut w, CTX + 1, &tool_call("delete_all"), false);
    let state = filter_state(&w.host().take_actions(), CTX + 1);
    assert_eq!(state["mcp_oauth.outcome"], "insufficient_scope");
    assert_eq!(state["mcp_oauth.subject"], "user-1");
    assert_eq!(state["mcp_oauth.tool"], "delete_all");

    // A token that failed verification names nobody.
    let forged = bearer("rsa-b", "rsa-a", "mcp:read");
    w.on_request_headers(CTX + 2, &headers("GET", Some(&forged)), true);
    let state = filter_state(&w.host().take_actions(), CTX + 2);
    assert_eq!(
        state.into_iter().collect::<Vec<_>>(),
        [("mcp_oauth.outcome".to_string(), "bad_signature".to_string())]
    );
}

#[test]
fn sets_no_filter_state_when_the_audit_trail_is_off() {
    let mut v = base_json();
    v["audit_filter_state"] = json!(false);
    let mut w = worker(&v, FakeHost::new());
    let token = bearer("rsa-a", "rsa-a", "mcp:read");
    assert_eq!(
        w.on_request_headers(CTX, &headers("GET", Some(&token)), true),
        Flow::Continue
    );
    w.on_request_headers(CTX + 1, &headers("GET", None), true);
    let actions = w.host().take_actions();
    assert!(filter_state(&actions, CTX).is_empty() && filter_state(&actions, CTX + 1).is_empty());
}

#[test]
fn an_instance_going_away_gives_up_its_fetch_lease_for_the_next_one() {
    let old_host = FakeHost::new();
    let new_host = old_host.worker_beside();
    let mut old = worker(&remote_json(), old_host);
    let call = tick_until_call(&mut old);
    assert!(call.url.ends_with("/jwks"));
    // A reconfiguration: Envoy tears the old instance down, its call cancelled.
    old.on_shutdown();
    let mut new = worker(&remote_json(), new_host);
    new.on_tick();
    let calls = new.host().take_calls();
    assert_eq!(
        calls.len(),
        1,
        "the new instance fetches at once, not after the lease"
    );
    answer(&mut new, &calls[0], 200, &jwks(&["rsa-a"]));
    let good = bearer("rsa-a", "rsa-a", "mcp:read");
    assert_eq!(
        new.on_request_headers(CTX, &headers("GET", Some(&good)), true),
        Flow::Continue
    );

    // A lease another worker took since is left alone.
    let a_host = FakeHost::new();
    let b_host = a_host.worker_beside();
    let mut a = worker(&remote_json(), a_host);
    tick_until_call(&mut a);
    let mut b = worker(&remote_json(), b_host);
    b.host().advance_ms(12_000); // a's lease ran out; b takes the next one
    b.on_tick();
    assert_eq!(b.host().take_calls().len(), 1);
    a.on_shutdown();
    let c_host = b.host().worker_beside();
    let mut c = worker(&remote_json(), c_host);
    c.on_tick();
    assert!(c.host().take_calls().is_empty(), "b's lease still stands");
}

#[test]
fn trailers_end_a_buffered_tool_list_which_is_rewritten_then() {
    let mut w = worker(&tools_json(true), FakeHost::new());
    allowed_list_request(&mut w, CTX, "mcp:read");
    w.host().response_headers(
        CTX,
        &[(":status", "200"), ("content-type", "application/json")],
    );
    w.on_response_headers(CTX, false);
    let size = w.host().hold_response_body(CTX, LISTED.as_bytes());
    assert_eq!(w.on_response_body(CTX, size, false), Flow::Pause);
    assert_eq!(w.on_response_trailers(CTX), Flow::Continue);
    let v: Value = serde_json::from_slice(&w.host().held_response_body(CTX)).unwrap();
    assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
}
