//! The authorization server's metadata answered at the resource's origin (RFC 8414), for
//! clients that look for it there.

use super::*;

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
