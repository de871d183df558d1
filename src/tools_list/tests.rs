use super::*;
use serde_json::json;

fn filter(ids: &[Value], batch: bool, hidden: &[&str]) -> ListFilter {
    ListFilter::new(
        ids.to_vec(),
        batch,
        hidden.iter().map(|h| h.to_string()).collect(),
    )
}

fn changed(r: Option<Rewritten>) -> (Value, u64) {
    match r {
        Some(Rewritten::Changed(body, n)) => (serde_json::from_slice(&body).unwrap(), n),
        other => panic!("expected a rewrite, got {other:?}"),
    }
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[
    {"name":"echo","inputSchema":{"type":"object","properties":{"n":{"type":"number","maximum":1e3}}}},
    {"name":"delete_all","description":"wipes everything","inputSchema":{"type":"object"}},
    {"name":"write_file","annotations":{"destructiveHint":true},"inputSchema":{"type":"object"},"x-extra":[1.50,2]}
  ],"nextCursor":"c2","ttlMs":60000,"_meta":{"k":"v"}}}"#;

#[test]
fn removes_hidden_tools_and_keeps_every_other_byte_of_the_kept_ones() {
    let mut f = filter(&[json!(1)], false, &["delete_all"]);
    let Some(Rewritten::Changed(body, hidden)) = f.rewrite(LIST.as_bytes()) else {
        panic!("not rewritten");
    };
    assert_eq!(hidden, 1);
    let text = String::from_utf8(body).unwrap();
    // The kept tools are their original text, number spelling included.
    assert!(text.contains(
        r#"{"name":"echo","inputSchema":{"type":"object","properties":{"n":{"type":"number","maximum":1e3}}}}"#
    ));
    assert!(text.contains(r#""x-extra":[1.50,2]"#));
    assert!(!text.contains("delete_all") && !text.contains("wipes"));
    let v: Value = serde_json::from_str(&text).unwrap();
    let want: Value = serde_json::from_str(LIST).unwrap();
    assert_eq!(v["result"]["nextCursor"], "c2");
    assert_eq!(v["result"]["ttlMs"], 60000);
    assert_eq!(v["result"]["_meta"], json!({"k": "v"}));
    assert_eq!(v["result"]["cacheScope"], "private");
    assert_eq!(v["result"]["tools"][0], want["result"]["tools"][0]);
    assert_eq!(v["result"]["tools"][1], want["result"]["tools"][2]);
    assert_eq!(v["id"], 1);
    assert_eq!(v["jsonrpc"], "2.0");
}

#[test]
fn marks_every_filtered_list_private_even_when_nothing_is_hidden() {
    let mut f = filter(&[json!("a")], false, &[]);
    let body =
        br#"{"jsonrpc":"2.0","id":"a","result":{"tools":[{"name":"echo"}],"cacheScope":"public"}}"#;
    let (v, hidden) = changed(f.rewrite(body));
    assert_eq!(hidden, 0);
    assert_eq!(
        v["result"],
        json!({"tools": [{"name": "echo"}], "cacheScope": "private"})
    );
}

#[test]
fn leaves_other_responses_requests_and_errors_alone() {
    for body in [
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"delete_all"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"no"}}"#,
        r#"{"method":"POST","path":"/mcp","body":"..."}"#,
        r#""a string""#,
    ] {
        let mut f = filter(&[json!(1)], false, &["delete_all"]);
        assert_eq!(
            f.rewrite(body.as_bytes()),
            Some(Rewritten::Unchanged),
            "{body}"
        );
    }
}

#[test]
fn matches_ids_the_way_clients_do() {
    for id in ["1", "1.0", "\"1\"", "\" 1\""] {
        let mut f = filter(&[json!(1)], false, &["delete_all"]);
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{{"name":"delete_all"}}]}}}}"#
        );
        let (v, hidden) = changed(f.rewrite(body.as_bytes()));
        assert_eq!(
            (v["result"]["tools"].clone(), hidden),
            (json!([]), 1),
            "{id}"
        );
    }
    let mut f = filter(&[json!("abc")], false, &["delete_all"]);
    let other = br#"{"jsonrpc":"2.0","id":"abd","result":{"tools":[{"name":"delete_all"}]}}"#;
    assert_eq!(f.rewrite(other), Some(Rewritten::Unchanged));
}

#[test]
fn a_result_that_is_not_a_tool_list_becomes_an_error_for_its_id() {
    for result in [
        r#""tools""#,
        r#"{"tools":{"name":"delete_all"}}"#,
        r#"{"tools":[{"title":"no name"}]}"#,
        r#"{"tools":[{"name":7}]}"#,
        r#"{"nextCursor":"x"}"#,
    ] {
        let mut f = filter(&[json!(7)], false, &["delete_all"]);
        let body = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#);
        let (v, _) = changed(f.rewrite(body.as_bytes()));
        assert_eq!(v["id"], 7, "{result}");
        assert_eq!(v["error"]["code"], ERROR_CODE);
        assert!(v.get("result").is_none());
    }
    let mut f = filter(&[json!(7)], false, &[]);
    let (v, _) = changed(f.rewrite(br#"{"jsonrpc":"2.0","id":7}"#));
    assert_eq!(v["error"]["code"], ERROR_CODE);
}

#[test]
fn a_body_that_is_not_json_is_not_rewritten_and_the_error_stands_for_it() {
    let mut f = filter(&[json!(3)], false, &[]);
    for body in [&b"{\"tools\": ["[..], b"\xff\xfe", b"", b"<html>"] {
        assert_eq!(f.rewrite(body), None);
    }
    let error: Value = serde_json::from_slice(&f.error_payload().unwrap()).unwrap();
    assert_eq!(error["id"], 3);
    assert_eq!(error["error"]["code"], ERROR_CODE);
    assert_eq!(f.error_payload(), None, "once per call");
    // A batch's error is a batch.
    let mut f = filter(&[json!(1), json!("b")], true, &[]);
    let errors: Value = serde_json::from_slice(&f.error_payload().unwrap()).unwrap();
    assert_eq!(errors[0]["id"], 1);
    assert_eq!(errors[1]["id"], "b");
}

#[test]
fn rewrites_the_list_results_of_a_batch_and_keeps_the_other_answers() {
    let mut f = filter(&[json!(1), json!(3)], true, &["delete_all"]);
    let body =
        br#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"delete_all"}]}},
        {"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"delete_all"}]}},
        {"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"delete_all"}],"nextCursor":"n"}}]"#;
    let (v, hidden) = changed(f.rewrite(body));
    assert_eq!(hidden, 2);
    assert_eq!(v[0]["result"]["tools"], json!([{"name": "echo"}]));
    assert_eq!(
        v[1],
        json!({"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"delete_all"}]}})
    );
    assert_eq!(
        v[2]["result"],
        json!({"tools": [], "nextCursor": "n", "cacheScope": "private"})
    );
    assert_eq!(f.error_payload(), None, "both answered");
}

#[test]
fn a_repeated_key_is_read_as_clients_read_it_the_last_one() {
    let mut f = filter(&[json!(1)], false, &["delete_all"]);
    let body = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"}],"tools":[{"name":"delete_all"},{"name":"x"}]}}"#;
    let Some(Rewritten::Changed(out, 1)) = f.rewrite(body) else {
        panic!()
    };
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("\"tools\"").count(), 1);
    assert!(!text.contains("delete_all"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["result"]["tools"], json!([{"name": "x"}]));
}

#[test]
fn reads_the_tools_list_calls_of_a_request() {
    assert_eq!(
        list_calls(br#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#),
        (vec![json!(4)], false)
    );
    assert_eq!(
        list_calls(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}},{"jsonrpc":"2.0","method":"tools/list"},{"jsonrpc":"2.0","id":"z","method":"tools/list","params":{"cursor":"c"}}]"#
        ),
        (vec![json!(1), json!("z")], true)
    );
    assert_eq!(
        list_calls(br#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#),
        (vec![], false)
    );
}

fn rewrite_for(content_type: &str, encoding: Option<&str>) -> (ResponseRewrite, Vec<&'static str>) {
    ResponseRewrite::new(
        filter(&[json!(1)], false, &["delete_all"]),
        4096,
        Some(content_type),
        encoding,
    )
}

fn replaced(c: Chunk) -> Vec<u8> {
    match c {
        Chunk::Replace(b) => b,
        other => panic!("expected a replacement, got {other:?}"),
    }
}

const ONE: &str =
    r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"delete_all"}]}}"#;

#[test]
fn buffers_a_json_body_then_rewrites_it_whole() {
    let (mut r, remove) = rewrite_for("application/json; charset=utf-8", None);
    assert_eq!(remove, vec!["content-length"]);
    let (a, b) = ONE.split_at(30);
    assert_eq!(r.on_body(a.len(), || unreachable!(), false), Chunk::Buffer);
    let out = replaced(r.on_body(ONE.len(), || format!("{a}{b}").into_bytes(), true));
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["result"]["tools"], json!([{"name": "echo"}]));
    assert_eq!(r.take_hidden(), 1);
    assert_eq!(r.take_hidden(), 0);
}

#[test]
fn a_json_body_too_large_or_unreadable_becomes_the_error() {
    let (mut r, _) = rewrite_for("application/json", None);
    let out = replaced(r.on_body(5000, || unreachable!(), false));
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (json!(1), json!(ERROR_CODE))
    );
    assert_eq!(replaced(r.on_body(100, || unreachable!(), true)), b"");
    let (mut r, _) = rewrite_for("application/json", None);
    let out = replaced(r.on_body(9, || b"not json!".to_vec(), true));
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["error"]["code"], ERROR_CODE);
    assert!(v.get("result").is_none());
}

#[test]
fn a_compressed_body_becomes_the_error_and_loses_its_encoding() {
    let (mut r, remove) = rewrite_for("application/json", Some("gzip"));
    assert_eq!(remove, vec!["content-length", "content-encoding"]);
    let out = replaced(r.on_body(10, || unreachable!(), false));
    assert_eq!(
        serde_json::from_slice::<Value>(&out).unwrap()["error"]["code"],
        ERROR_CODE
    );
    assert_eq!(replaced(r.on_body(10, || unreachable!(), true)), b"");
    let (mut r, _) = rewrite_for("text/event-stream", Some("br"));
    let out = replaced(r.on_body(10, || unreachable!(), true));
    let data = sse::data(&sse::lines(&out)).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&data).unwrap()["id"], 1);
    let (_, remove) = rewrite_for("application/json", Some("identity"));
    assert_eq!(remove, vec!["content-length"]);
}

#[test]
fn every_other_media_type_is_read_as_json_and_what_is_not_json_becomes_the_error() {
    // Clients read application/json-rpc and the like as JSON: so does the filter.
    let (mut r, remove) = rewrite_for("application/json-rpc", None);
    assert_eq!(remove, vec!["content-length"]);
    let v: Value =
        serde_json::from_slice(&replaced(r.on_body(ONE.len(), || ONE.into(), true))).unwrap();
    assert_eq!(v["result"]["tools"], json!([{"name": "echo"}]));
    let (mut r, _) = rewrite_for("text/html", None);
    let out = replaced(r.on_body(6, || b"<html>".to_vec(), true));
    assert_eq!(
        serde_json::from_slice::<Value>(&out).unwrap()["error"]["code"],
        ERROR_CODE
    );
    // No body at all (a 202) stays so.
    let (mut r, _) = rewrite_for("text/plain", None);
    assert_eq!(r.on_body(0, Vec::new, true), Chunk::Pass);
    // A GET stream's other answers (no calls to answer): what is not JSON passes.
    let (mut r, _) =
        ResponseRewrite::new(ListFilter::replayed(vec![]), 4096, Some("text/plain"), None);
    assert_eq!(r.on_body(9, || b"Not found".to_vec(), true), Chunk::Pass);
}

/// Feeds an event stream in `chunks`; what the client receives, chunk by chunk.
fn stream(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, u64) {
    let (mut r, _) = ResponseRewrite::new(
        filter(&[json!(1)], false, &["delete_all"]),
        max,
        Some("text/event-stream"),
        None,
    );
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let end = i + 1 == chunks.len();
        out.push(match r.on_body(chunk.len(), || chunk.to_vec(), end) {
            Chunk::Pass => chunk.to_vec(),
            Chunk::Replace(b) => b,
            Chunk::Buffer => panic!("an event stream is never buffered whole"),
        });
    }
    (out, r.take_hidden())
}

const NOTE: &[u8] = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"delete_all soon\"}}\r\n\r\n";

#[test]
fn passes_other_events_as_they_complete_and_rewrites_the_result_event() {
    let result = format!("id: 9\r\nevent: message\r\ndata: {ONE}\r\n\r\n");
    let (a, b) = result.as_bytes().split_at(40);
    let (out, hidden) = stream(&[NOTE, a, b], 4096);
    assert_eq!(
        out[0], NOTE,
        "the notification goes on at once, byte for byte"
    );
    assert_eq!(out[1], b"", "half an event is held back");
    let lines = sse::lines(&out[2]);
    assert_eq!(lines[0], sse::Line::Other(b"id: 9"));
    assert_eq!(lines[1], sse::Line::Other(b"event: message"));
    let v: Value = serde_json::from_slice(&sse::data(&lines).unwrap()).unwrap();
    assert_eq!(v["result"]["tools"], json!([{"name": "echo"}]));
    assert_eq!(v["result"]["cacheScope"], "private");
    assert_eq!(hidden, 1);
}

#[test]
fn reads_a_result_split_over_data_lines_and_lf_line_ends() {
    let event = b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\n: a comment\ndata: \"result\":{\"tools\":[{\"name\":\"delete_all\"},\ndata: {\"name\":\"echo\"}]}}\n\n";
    let chunks: Vec<&[u8]> = event.chunks(7).collect();
    let (out, hidden) = stream(&chunks, 4096);
    let all = out.concat();
    let v: Value = serde_json::from_slice(&sse::data(&sse::lines(&all)).unwrap()).unwrap();
    assert_eq!(v["result"]["tools"], json!([{"name": "echo"}]));
    assert_eq!(hidden, 1);
    // The data goes where its first line was; the comment stays after it.
    assert!(
        all.ends_with(b"\n: a comment\n\n"),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
}

#[test]
fn an_unreadable_event_becomes_the_error_event() {
    let (out, _) = stream(
        &[b"id: 4\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[\n\n"],
        4096,
    );
    let lines = sse::lines(&out[0]);
    assert_eq!(lines[0], sse::Line::Other(b"id: 4"));
    let v: Value = serde_json::from_slice(&sse::data(&lines).unwrap()).unwrap();
    assert_eq!(v["error"]["code"], ERROR_CODE);
    // Priming events and keep-alives pass.
    let (out, _) = stream(&[b"id: 0\ndata:\n\n", b": ping\n\n"], 4096);
    assert_eq!(
        out,
        vec![b"id: 0\ndata:\n\n".to_vec(), b": ping\n\n".to_vec()]
    );
}

#[test]
fn an_event_too_large_to_hold_is_dropped_and_the_error_comes_if_no_result_does() {
    let big = format!(
        "data: {{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"tools\":[{}{{\"name\":\"delete_all\"}}]}}}}\n\n",
        "{\"name\":\"echo\"},".repeat(20)
    );
    let (a, rest) = big.as_bytes().split_at(150);
    let (b, c) = rest.split_at(100);
    let (out, _) = stream(&[NOTE, a, b, c, NOTE], 200);
    assert_eq!(out[0], NOTE);
    assert!(
        out[1..4].concat().is_empty(),
        "dropped, nothing of it passes"
    );
    let last = String::from_utf8(out[4].clone()).unwrap();
    assert!(
        last.starts_with(std::str::from_utf8(NOTE).unwrap()),
        "the stream goes on"
    );
    let error = &out[4][NOTE.len()..];
    let v: Value = serde_json::from_slice(&sse::data(&sse::lines(error)).unwrap()).unwrap();
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (json!(1), json!(ERROR_CODE))
    );

    // A large notification before the result streams on as it arrives (it names a method:
    // no answer), and the result still comes filtered.
    let note = format!(
        "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"data\":\"{}\"}}}}\n\n",
        "x".repeat(400)
    );
    let (n1, n2) = note.as_bytes().split_at(250);
    let result = format!("data: {ONE}\n\n");
    let (out, hidden) = stream(&[n1, n2, result.as_bytes()], 200);
    assert_eq!(hidden, 1);
    assert_eq!(out[0], n1, "past the limit: what came goes on at once");
    assert_eq!(out[1], n2);
    let v: Value = serde_json::from_slice(&sse::data(&sse::lines(&out[2])).unwrap()).unwrap();
    assert_eq!(v["result"]["tools"], json!([{"name": "echo"}]));
}

#[test]
fn a_result_event_larger_than_the_limit_becomes_the_error_even_when_whole() {
    let result = format!("id: 3\ndata: {ONE}\n\n");
    let (out, hidden) = stream(&[result.as_bytes()], 40);
    assert_eq!(hidden, 0);
    let lines = sse::lines(&out[0]);
    assert_eq!(lines[0], sse::Line::Other(b"id: 3"));
    let v: Value = serde_json::from_slice(&sse::data(&lines).unwrap()).unwrap();
    assert_eq!(v["error"]["code"], ERROR_CODE);
    // A large event that is no answer passes whole.
    let (out, _) = stream(&[NOTE], 40);
    assert_eq!(out[0], NOTE);
}

#[test]
fn an_event_without_its_blank_line_at_the_end_is_still_read() {
    let tail = format!("data: {ONE}");
    let (out, hidden) = stream(&[NOTE, tail.as_bytes()], 4096);
    assert_eq!(hidden, 1);
    assert!(!String::from_utf8_lossy(&out[1]).contains("delete_all"));
}

#[test]
fn a_resumed_stream_filters_every_replayed_tool_list_whatever_its_id() {
    let mut f = ListFilter::replayed(vec!["delete_all".into()]);
    let (v, hidden) = changed(f.rewrite(
        br#"{"jsonrpc":"2.0","id":"old-7","result":{"tools":[{"name":"delete_all"},{"name":"echo"}]}}"#,
    ));
    assert_eq!(
        (v["result"]["tools"].clone(), hidden),
        (json!([{"name": "echo"}]), 1)
    );
    assert_eq!(v["result"]["cacheScope"], "private");
    for other in [
        r#"{"jsonrpc":"2.0","id":8,"result":{"content":[]}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
        r#"{"jsonrpc":"2.0","id":9,"error":{"code":1,"message":"x"}}"#,
    ] {
        assert_eq!(
            f.rewrite(other.as_bytes()),
            Some(Rewritten::Unchanged),
            "{other}"
        );
    }
    assert_eq!(f.error_payload(), None);
}

/// What the rewrite of a real-sized list costs natively (`cargo test --release --lib
/// times_the_rewrite -- --ignored --nocapture`): 50 tools of about 360 bytes, 10 hidden.
#[test]
#[ignore]
fn times_the_rewrite() {
    let tools: Vec<Value> = (0..50)
        .map(|i| {
            json!({"name": format!("tool_{i}"), "description": "Do one thing to a repository, with every detail a model needs to know.",
                   "inputSchema": {"type": "object", "properties": {"owner": {"type": "string"}, "repo": {"type": "string"},
                   "number": {"type": "integer", "description": "Number or id"}, "state": {"type": "string", "enum": ["open", "closed"]}},
                   "required": ["owner", "repo", "number"]}})
        })
        .collect();
    let body = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}).to_string();
    let hidden: Vec<String> = (0..10).map(|i| format!("tool_{}", i * 5)).collect();
    let hidden: Vec<&str> = hidden.iter().map(String::as_str).collect();
    let n = 2000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        let mut f = filter(&[json!(1)], false, &hidden);
        assert!(matches!(
            f.rewrite(body.as_bytes()),
            Some(Rewritten::Changed(_, 10))
        ));
    }
    let rewrite = start.elapsed() / n;
    let start = std::time::Instant::now();
    for _ in 0..n {
        let _: serde::de::IgnoredAny = serde_json::from_str(&body).unwrap();
    }
    let scan = start.elapsed() / n;
    eprintln!(
        "{} bytes: {rewrite:?} per rewrite, {scan:?} to scan it once",
        body.len()
    );
}

#[test]
fn tells_a_message_that_names_a_method_from_its_first_bytes() {
    for yes in [
        &br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"#[..],
        br#"{"params":{"method":"x","a":[1,{"b":"}"}]},"method""#,
        br#" { "jsonrpc" : "2.0" ,
 "method""#,
    ] {
        assert!(names_a_method(yes), "{}", String::from_utf8_lossy(yes));
    }
    for no in [
        &br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"method","method":"#[..],
        br#"{"id":"method","result""#,
        br#"[{"jsonrpc":"2.0","method":"x"}"#,
        br#"{"jsonrpc":"2.0","meth\u006fd":"x""#,
        br#"{"x":""method""#,
    ] {
        assert!(!names_a_method(no), "{}", String::from_utf8_lossy(no));
    }
}
