//! Key sets: the first fetch and the requests that wait for it, refreshes and their
//! back-off, unknown `kid`s, workers sharing one fetch, discovery, fetch leases.

use super::*;

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
