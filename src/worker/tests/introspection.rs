//! Opaque tokens and JWTs of issuers without keys, introspected (RFC 7662).

use super::*;

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
