//! The event-stream reader and the tool-list rewrite on arbitrary bytes cut at an arbitrary
//! place: no panic; every byte not part of an event still arriving comes out; the same events
//! (by their data) come out however the stream is cut; and a rewritten stream never carries
//! the hidden tool's name in a result event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::sse::{data, lines, EventStream};
use mcp_oauth_filter::tools_list::{Chunk, ListFilter, ResponseRewrite};
use serde_json::json;

fn events(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut stream = EventStream::new();
    let mut out = Vec::new();
    for chunk in chunks {
        stream.push(chunk);
        while let Some(event) = stream.next_event() {
            out.push(event);
        }
    }
    (out, stream.take_rest())
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, bytes)) = input.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(bytes.len());
    let (whole, rest) = events(&[bytes]);
    let (a, b) = bytes.split_at(cut);
    let (split, split_rest) = events(&[a, b]);
    let mut joined = whole.concat();
    joined.extend_from_slice(&rest);
    assert_eq!(joined, bytes);
    let mut joined = split.concat();
    joined.extend_from_slice(&split_rest);
    assert_eq!(joined, bytes);
    let of = |events: &[Vec<u8>]| -> Vec<Option<Vec<u8>>> {
        events
            .iter()
            .filter(|e| e.as_slice() != b"\n")
            .map(|e| data(&lines(e)))
            .collect()
    };
    assert_eq!(of(&whole), of(&split));

    let filter = ListFilter::new(vec![json!(1)], false, vec!["zz_hidden".into()]);
    let (mut rewrite, _) = ResponseRewrite::new(filter, 1 << 16, Some("text/event-stream"), None);
    let mut client = Vec::new();
    for (i, chunk) in [a, b].iter().enumerate() {
        match rewrite.on_body(chunk.len(), || chunk.to_vec(), i == 1) {
            Chunk::Pass => client.extend_from_slice(chunk),
            Chunk::Replace(out) => client.extend_from_slice(&out),
            Chunk::Buffer => panic!("an event stream is never buffered"),
        }
    }
    // What the client reads: no answer to id 1 lists the hidden tool.
    let (received, tail) = events(&[&client]);
    for event in received.iter().chain([&tail]) {
        let Some(payload) = data(&lines(event)) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload) else {
            continue;
        };
        for m in v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]) {
            if m.get("method").is_none() && m.get("id") == Some(&json!(1)) {
                let tools = m.pointer("/result/tools").and_then(|t| t.as_array());
                for tool in tools.into_iter().flatten() {
                    assert_ne!(tool.get("name"), Some(&json!("zz_hidden")), "{client:?}");
                }
            }
        }
    }
});
