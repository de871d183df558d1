//! What operators see: counters batched to the tick, and the audit trail in filter state.

use super::*;
use std::collections::BTreeMap;

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
