//! Responses: tools/list results filtered to the tools the token may call, CORS answers.

use super::*;

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
