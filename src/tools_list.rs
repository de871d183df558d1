//! Tool lists filtered to what the caller may call (README, "Tool lists filtered per caller";
//! MCP 2026-07-28 `tools/list` and its caching rules): the results of a request's `tools/list`
//! calls, in the upstream's `application/json` body or in the event of its event stream that
//! carries them, lose the tools the token may not call and are marked `cacheScope: "private"`
//! (a list filtered per caller must not be shared across authorization contexts).
//!
//! Everything else is passed on as the upstream wrote it: the kept tools' objects and every
//! other member are copied as their original bytes (`RawValue`), so nothing of their meaning
//! (number spelling, key order, unknown members) can change. A result that cannot be read is
//! replaced with a JSON-RPC error for its id: a list is never passed on unfiltered.

mod read;

use crate::sse::{self, EventStream};
use read::{Key, Member, Message, ResultMember};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

/// JSON-RPC "internal error": the server's answer could not be delivered as it must be.
pub const ERROR_CODE: i64 = -32603;

/// What a request's response must have done to it: the request's `tools/list` calls, and
/// the tools its token may not call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    /// The `id` of each `tools/list` call, with whether its result has come.
    ids: Vec<(Value, bool)>,
    /// The request was a batch: an error standing for a whole unreadable body is one too.
    batch: bool,
    /// Tools whose `tool_scopes` the token does not satisfy.
    hidden: Vec<String>,
    /// A `GET` stream, whose answers are to requests the filter did not see: every tool list
    /// in an answer is filtered, whatever its id.
    any_id: bool,
}

/// The `tools/list` calls of a JSON-RPC body that has already been checked (`mcp::calls`):
/// their ids (a notification has none and gets no result), and whether the body is a batch.
pub fn list_calls(body: &[u8]) -> (Vec<Value>, bool) {
    #[derive(Deserialize)]
    struct Message {
        method: Option<String>,
        id: Option<Value>,
    }
    let (messages, batch) = match serde_json::from_slice::<Vec<Message>>(body) {
        Ok(batch) => (batch, true),
        Err(_) => match serde_json::from_slice::<Message>(body) {
            Ok(one) => (vec![one], false),
            Err(_) => (Vec::new(), false),
        },
    };
    let ids = messages
        .into_iter()
        .filter(|m| m.method.as_deref() == Some("tools/list"))
        .filter_map(|m| m.id)
        .collect();
    (ids, batch)
}

impl ListFilter {
    pub fn new(ids: Vec<Value>, batch: bool, hidden: Vec<String>) -> ListFilter {
        ListFilter {
            ids: ids.into_iter().map(|id| (id, false)).collect(),
            batch,
            hidden,
            any_id: false,
        }
    }

    /// For a `GET` stream: its answers are to requests the filter did not see (replayed on a
    /// resumed stream, or the HTTP+SSE transport's), so any answer carrying a tool list is
    /// filtered.
    pub fn replayed(hidden: Vec<String>) -> ListFilter {
        ListFilter {
            any_id: true,
            ..ListFilter::new(Vec::new(), false, hidden)
        }
    }

    /// The tools the results lose.
    pub fn hidden(&self) -> &[String] {
        &self.hidden
    }

    /// Whether `id` (of a response) answers one of the calls. Compared loosely: clients
    /// match ids by value (the TypeScript SDK by `Number(id)`, pydantic takes `1.0` for `1`),
    /// so anything a client could take for one of the ids is treated as it.
    fn position(&self, id: &Value) -> Option<usize> {
        let theirs = loose_id(id)?;
        self.ids
            .iter()
            .position(|(ours, _)| loose_id(ours).as_ref() == Some(&theirs))
    }

    /// Rewrites a JSON-RPC payload (one message or a batch): the results of the calls are
    /// filtered, a result that cannot be read is replaced with an error. `None` when the
    /// payload is not JSON at all.
    pub fn rewrite(&mut self, payload: &[u8]) -> Option<Rewritten> {
        let text = std::str::from_utf8(payload).ok()?;
        if text.trim_start().starts_with('[') {
            let messages: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            let mut hidden = 0;
            let mut changed = false;
            let mut parts = Vec::with_capacity(messages.len());
            for raw in messages {
                let message: Message<'_> = serde_json::from_str(raw.get()).ok()?;
                match self.rewrite_message(&message) {
                    Some((text, n)) => {
                        changed = true;
                        hidden += n;
                        parts.push(Cow::Owned(text));
                    }
                    None => parts.push(Cow::Borrowed(raw.get())),
                }
            }
            if !changed {
                return Some(Rewritten::Unchanged);
            }
            let body = format!("[{}]", parts.join(","));
            return Some(Rewritten::Changed(body.into_bytes(), hidden));
        }
        let message: Message<'_> = serde_json::from_str(text).ok()?;
        Some(match self.rewrite_message(&message) {
            Some((text, hidden)) => Rewritten::Changed(text.into_bytes(), hidden),
            None => Rewritten::Unchanged,
        })
    }

    /// One message: `None` when it is not a response to one of the calls (or an error
    /// response to one), else the message rewritten and how many tools it lost.
    fn rewrite_message(&mut self, message: &Message<'_>) -> Option<(String, u64)> {
        let members = message.0.as_ref()?;
        if message.get("method").is_some() {
            return None; // a request or notification of the server's, not an answer
        }
        let Some(Member::Raw(id)) = message.get("id") else {
            return None;
        };
        let result = match message.get("result") {
            Some(Member::Result(result)) => Some(result.as_deref()),
            _ => None,
        };
        if self.any_id {
            // Only answers that carry a tool list are ones to filter here.
            let tools = result.flatten()?.iter().any(|(k, _)| k == "tools");
            if !tools {
                return None;
            }
        } else {
            let id_value: Value = serde_json::from_str(id.get()).ok()?;
            let at = self.position(&id_value)?;
            if let Some((_, answered)) = self.ids.get_mut(at) {
                *answered = true;
            }
        }
        if result.is_none() && message.get("error").is_some() {
            return None; // the server's own error carries no list
        }
        let Some((result, hidden)) = result.flatten().and_then(|r| self.filter_result(r)) else {
            return Some((error_message(id.get()), 0));
        };
        let mut text = String::with_capacity(result.len() + 64);
        let mut out = Object::begin(&mut text);
        for (i, (key, member)) in members.iter().enumerate() {
            if read::shadowed(members, i) {
                continue; // a later copy stands
            }
            match member {
                Member::Raw(raw) => out.member(key, raw.get()),
                Member::Result(_) => out.member(key, &result),
            }
        }
        out.end();
        Some((text, hidden))
    }

    /// A `ListToolsResult` without the hidden tools, `cacheScope` private; `None` when it is
    /// not one (no `tools` array of objects, a tool without a string `name`).
    fn filter_result(&self, members: &[(Key<'_>, ResultMember<'_>)]) -> Option<(String, u64)> {
        let tools = members.iter().rev().find_map(|(k, m)| match m {
            ResultMember::Tools(tools) if k == "tools" => Some(tools.as_ref()),
            _ => None,
        })??;
        let mut kept = String::with_capacity(members.len() * 64 + 1024);
        kept.push('[');
        let mut hidden = 0;
        for tool in tools {
            let name = tool.iter().rev().find(|(k, _)| k == "name")?.1;
            let name: Cow<'_, str> = serde_json::from_str(name.get()).ok()?;
            if self.hidden.iter().any(|h| *h == name) {
                hidden += 1;
                continue;
            }
            if kept.len() > 1 {
                kept.push(',');
            }
            let mut object = Object::begin(&mut kept);
            for (i, (key, raw)) in tool.iter().enumerate() {
                if !read::shadowed(tool, i) {
                    object.member(key, raw.get());
                }
            }
            object.end();
        }
        kept.push(']');
        let mut text = String::with_capacity(kept.len() + 64);
        let mut out = Object::begin(&mut text);
        let mut private = false;
        for (i, (key, member)) in members.iter().enumerate() {
            if read::shadowed(members, i) {
                continue;
            }
            match (key.as_ref(), member) {
                ("tools", _) => out.member(key, &kept),
                ("cacheScope", _) => {
                    out.member(key, PRIVATE);
                    private = true;
                }
                (_, ResultMember::Raw(raw)) => out.member(key, raw.get()),
                (_, ResultMember::Tools(_)) => return None, // only "tools" is read as tools
            }
        }
        if !private {
            out.member("cacheScope", PRIVATE);
        }
        out.end();
        Some((text, hidden))
    }

    /// An error for every call (answered or not): what replaces an answer too large to pass.
    fn error_for_all(&mut self) -> Vec<u8> {
        for (_, answered) in &mut self.ids {
            *answered = false;
        }
        self.error_payload().unwrap_or_default()
    }

    /// What stands for a body that cannot be read: an error for every call not answered yet
    /// (an array of them for a batch); `None` when every call was answered.
    pub fn error_payload(&mut self) -> Option<Vec<u8>> {
        let errors: Vec<String> = self
            .ids
            .iter_mut()
            .filter(|(_, answered)| !*answered)
            .map(|(id, answered)| {
                *answered = true;
                error_message(&id.to_string())
            })
            .collect();
        match errors.as_slice() {
            [] => None,
            [one] if !self.batch => Some(one.clone().into_bytes()),
            _ => Some(format!("[{}]", errors.join(",")).into_bytes()),
        }
    }
}

const PRIVATE: &str = "\"private\"";

/// A payload after [`ListFilter::rewrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewritten {
    Unchanged,
    /// The new payload, and how many tools it lost.
    Changed(Vec<u8>, u64),
}

/// The JSON-RPC error that replaces a result the filter could not read, for the id written
/// as `id` (JSON text): nothing of the list is in it.
fn error_message(id: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{ERROR_CODE},"message":"the tools/list result could not be filtered for this caller"}}}}"#
    )
}

/// An id as clients compare it: a number by its value, a string holding a number as that
/// number (JavaScript's `Number("1")`, `Number("")` is 0), any other string as itself.
#[derive(Debug, PartialEq)]
enum LooseId<'a> {
    Number(f64),
    Text(&'a str),
}

fn loose_id(id: &Value) -> Option<LooseId<'_>> {
    match id {
        Value::Number(n) => n.as_f64().map(LooseId::Number),
        Value::String(s) => match s.trim() {
            "" => Some(LooseId::Number(0.0)),
            t => Some(match serde_json::from_str::<f64>(t) {
                Ok(f) => LooseId::Number(f),
                Err(_) => LooseId::Text(s),
            }),
        },
        _ => None,
    }
}

/// A JSON object written member by member into `out`, values as given text.
struct Object<'s> {
    out: &'s mut String,
    empty: bool,
}

impl Object<'_> {
    fn begin(out: &mut String) -> Object<'_> {
        out.push('{');
        Object { out, empty: true }
    }

    fn member(&mut self, key: &str, value: &str) {
        if !std::mem::take(&mut self.empty) {
            self.out.push(',');
        }
        if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.out.push('"');
            self.out.push_str(key);
            self.out.push('"');
        } else {
            self.out
                .push_str(&Value::String(key.to_string()).to_string());
        }
        self.out.push(':');
        self.out.push_str(value);
    }

    fn end(self) {
        self.out.push('}');
    }
}

/// What the filter does with the body of a response whose request made `tools/list` calls.
#[derive(Debug)]
pub enum Body {
    /// Read whole, then rewritten: `application/json`, and every other media type but an
    /// event stream (clients read `application/json-rpc` and the like as JSON too: whatever
    /// is not JSON becomes the error).
    Json,
    /// `text/event-stream`: each event passed on when complete, the ones that carry a result
    /// rewritten. `oversize`: what becomes of an event too large to hold; `dropped`: one that
    /// could have been an answer was, so calls still unanswered at the end get the error.
    Events {
        stream: EventStream,
        oversize: Oversize,
        dropped: bool,
    },
    /// A body the filter cannot read (compressed): replaced with the error, as an event in
    /// an event stream.
    Unreadable { events: bool },
    /// Replaced already: the rest is dropped.
    Dropped,
}

/// An event that grew past `max_body_bytes` before its end came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// None is arriving.
    No,
    /// A request or notification of the server's (its message names a `method`): it carries
    /// no answer, so it streams on as it arrives.
    Passing,
    /// Anything else: dropped to its end.
    Dropping,
}

/// The response of a request whose `tools/list` results are filtered.
#[derive(Debug)]
pub struct ResponseRewrite {
    pub filter: ListFilter,
    pub body: Body,
    /// The largest body (or event) read.
    max_bytes: usize,
    /// Tools removed since the last [`ResponseRewrite::take_hidden`].
    hidden: u64,
}

/// What to do with a chunk of the body.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Pass it on as it is.
    Pass,
    /// Keep buffering: the whole body is needed.
    Buffer,
    /// Pass these bytes on instead of the body buffered so far.
    Replace(Vec<u8>),
}

/// Whether a media type (a `content-type` value) is `type/subtype`, parameters aside.
fn media_type_is(content_type: &str, want: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(want))
}

impl ResponseRewrite {
    /// The response headers came: what its body is, and the headers to remove (the length
    /// changes; a body the filter replaces is not encoded any more).
    pub fn new(
        filter: ListFilter,
        max_bytes: usize,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> (ResponseRewrite, Vec<&'static str>) {
        let events = content_type.is_some_and(|t| media_type_is(t, "text/event-stream"));
        let encoded = content_encoding
            .is_some_and(|e| !e.trim().is_empty() && !e.trim().eq_ignore_ascii_case("identity"));
        let (body, remove) = match (events, encoded) {
            (_, true) => (
                Body::Unreadable { events },
                vec!["content-length", "content-encoding"],
            ),
            (true, false) => (
                Body::Events {
                    stream: EventStream::new(),
                    oversize: Oversize::No,
                    dropped: false,
                },
                vec!["content-length"],
            ),
            (false, false) => (Body::Json, vec!["content-length"]),
        };
        let rewrite = ResponseRewrite {
            filter,
            body,
            max_bytes,
            hidden: 0,
        };
        (rewrite, remove)
    }

    /// Whether the body is read whole before any of it goes on.
    pub fn buffers_whole(&self) -> bool {
        matches!(self.body, Body::Json)
    }

    /// Tools removed since the last call (for the counter).
    pub fn take_hidden(&mut self) -> u64 {
        std::mem::take(&mut self.hidden)
    }

    /// A chunk of the body: `buffered` is how much the host holds (the whole body so far
    /// while buffering, else this chunk), `read` gives it (called only when needed), `end`
    /// whether the body ends here.
    pub fn on_body(&mut self, buffered: usize, read: impl FnOnce() -> Vec<u8>, end: bool) -> Chunk {
        match &mut self.body {
            Body::Dropped => Chunk::Replace(Vec::new()),
            Body::Unreadable { events } => {
                let events = *events;
                self.body = Body::Dropped;
                Chunk::Replace(self.error_body(events))
            }
            Body::Json if buffered > self.max_bytes => {
                self.body = Body::Dropped;
                Chunk::Replace(self.error_body(false))
            }
            Body::Json if !end => Chunk::Buffer,
            Body::Json => {
                let body = read();
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Chunk::Pass; // no answer at all (a 202, a bodiless error)
                }
                match self.filter.rewrite(&body) {
                    Some(Rewritten::Unchanged) => Chunk::Pass,
                    Some(Rewritten::Changed(body, hidden)) => {
                        self.hidden += hidden;
                        Chunk::Replace(body)
                    }
                    // Not JSON: it stands for the calls' answers; with none to answer (a
                    // resumed stream's GET), it carries no list a client could read.
                    None => match self.filter.error_payload() {
                        Some(payload) => Chunk::Replace(payload),
                        None => Chunk::Pass,
                    },
                }
            }
            Body::Events { .. } => {
                let chunk = read();
                self.on_events(&chunk, end)
            }
        }
    }

    /// The replacement of a body that could not be read (empty when every call was
    /// answered already).
    fn error_body(&mut self, events: bool) -> Vec<u8> {
        match self.filter.error_payload() {
            Some(payload) if events => sse::with_data(&[], &payload),
            Some(payload) => payload,
            None => Vec::new(),
        }
    }

    fn on_events(&mut self, chunk: &[u8], end: bool) -> Chunk {
        let Body::Events {
            stream,
            oversize,
            dropped,
        } = &mut self.body
        else {
            return Chunk::Pass;
        };
        stream.push(chunk);
        let mut out = Vec::with_capacity(chunk.len());
        let mut changed = false;
        let mut hidden = 0;
        loop {
            let event = match stream.next_event() {
                Some(event) => event,
                None if end && stream.pending_len() > 0 => stream.take_rest(),
                None => break,
            };
            match std::mem::replace(oversize, Oversize::No) {
                Oversize::Passing => out.extend_from_slice(&event), // its end
                Oversize::Dropping => changed = true,
                Oversize::No => match rewrite_event(&mut self.filter, &event, self.max_bytes) {
                    Some((bytes, n)) => {
                        changed = true;
                        hidden += n;
                        out.extend_from_slice(&bytes);
                    }
                    None => out.extend_from_slice(&event),
                },
            }
        }
        if *oversize == Oversize::No && stream.pending_len() > self.max_bytes {
            // Too large to hold until its end: a server's request or notification streams
            // on; anything else is dropped, and should it have been a result, the calls left
            // unanswered get the error when the stream ends.
            let lines = sse::lines(stream.pending());
            let names_a_method = sse::data(&lines).is_some_and(|d| names_a_method(&d));
            *oversize = if names_a_method {
                Oversize::Passing
            } else {
                *dropped = true;
                Oversize::Dropping
            };
        }
        match oversize {
            Oversize::Passing => out.extend_from_slice(stream.pending()),
            Oversize::Dropping => changed = true,
            Oversize::No => {}
        }
        if *oversize != Oversize::No {
            stream.discard_pending();
        }
        if end && *dropped {
            if let Some(payload) = self.filter.error_payload() {
                out.extend_from_slice(&sse::with_data(&[], &payload));
            }
        }
        self.hidden += hidden;
        // Bytes of an event still arriving are held back; the rest goes on now.
        if !changed && out == chunk {
            Chunk::Pass
        } else {
            Chunk::Replace(out)
        }
    }
}

/// Whether the start of a JSON-RPC message (`data`, possibly cut short) has a top-level
/// `method` member: then it is a request or notification, never an answer (JSON-RPC 2.0 §4,
/// §5), whatever follows.
fn names_a_method(data: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut key_start = None;
    let mut expect_key = false;
    for (i, &b) in data.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    if let Some(start) = key_start.take() {
                        if &data[start..i] == b"method" {
                            return true;
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                if depth == 1 && expect_key {
                    key_start = Some(i + 1);
                    expect_key = false;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1 && b == b'{';
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
    }
    false
}

/// An event rewritten when it carries a result of the calls (or data the filter cannot read
/// while a call is unanswered); `None` to pass it on as it is. A result in an event larger
/// than `max_bytes` becomes the error.
fn rewrite_event(
    filter: &mut ListFilter,
    event: &[u8],
    max_bytes: usize,
) -> Option<(Vec<u8>, u64)> {
    let lines = sse::lines(event);
    let data = sse::data(&lines)?;
    if data.iter().all(u8::is_ascii_whitespace) {
        return None; // no message (a priming event, a keep-alive)
    }
    match filter.rewrite(&data) {
        Some(Rewritten::Unchanged) => None,
        Some(Rewritten::Changed(..)) if event.len() > max_bytes => {
            Some((sse::with_data(&lines, &filter.error_for_all()), 0))
        }
        Some(Rewritten::Changed(payload, hidden)) => {
            Some((sse::with_data(&lines, &payload), hidden))
        }
        None => {
            let payload = filter.error_payload()?;
            Some((sse::with_data(&lines, &payload), 0))
        }
    }
}

#[cfg(test)]
mod tests;
