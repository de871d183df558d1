//! The body hold in both `hold_headers_for_body` modes, its deadline, trailers, and pending
//! requests forgotten when their context ends.

use super::*;

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
