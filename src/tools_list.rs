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

use crate::sse::{self, EventStream};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

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
    /// A resumed event stream, which replays answers to requests the filter did not see:
    /// every tool list in an answer is filtered, whatever its id.
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

    /// For a resumed event stream (`GET` with `Last-Event-ID`): answers there are replayed
    /// for requests the filter did not see, so any answer carrying a tool list is filtered.
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
            for message in messages {
                match self.rewrite_message(message) {
                    Some((text, n)) => {
                        changed = true;
                        hidden += n;
                        parts.push(Cow::Owned(text));
                    }
                    None => parts.push(Cow::Borrowed(message.get())),
                }
            }
            if !changed {
                return Some(Rewritten::Unchanged);
            }
            let body = format!("[{}]", parts.join(","));
            return Some(Rewritten::Changed(body.into_bytes(), hidden));
        }
        let message: &RawValue = serde_json::from_str(text).ok()?;
        Some(match self.rewrite_message(message) {
            Some((text, hidden)) => Rewritten::Changed(text.into_bytes(), hidden),
            None => Rewritten::Unchanged,
        })
    }

    /// One message: `None` when it is not a response to one of the calls (or an error
    /// response to one), else the message rewritten and how many tools it lost.
    fn rewrite_message(&mut self, message: &RawValue) -> Option<(String, u64)> {
        let members = Members::of(message)?;
        if members.get("method").is_some() {
            return None; // a request or notification of the server's, not an answer
        }
        let id = members.get("id")?;
        let result = members.get("result");
        if self.any_id {
            // Only answers that carry a tool list are ones to filter here.
            let tools = result.and_then(Members::of).and_then(|r| r.get("tools"));
            tools?;
        } else {
            let id_value: Value = serde_json::from_str(id.get()).ok()?;
            let at = self.position(&id_value)?;
            if let Some((_, answered)) = self.ids.get_mut(at) {
                *answered = true;
            }
        }
        if result.is_none() && members.get("error").is_some() {
            return None; // the server's own error carries no list
        }
        let filtered = result.and_then(|r| self.filter_result(r));
        match filtered {
            Some((result, hidden)) => {
                let text = members.write(|key| (key == "result").then(|| result.clone()), None);
                Some((text, hidden))
            }
            None => Some((error_message(id.get()), 0)),
        }
    }

    /// A `ListToolsResult` without the hidden tools, `cacheScope` private; `None` when it is
    /// not one.
    fn filter_result(&self, result: &RawValue) -> Option<(String, u64)> {
        #[derive(Deserialize)]
        struct Named<'a> {
            #[serde(borrow)]
            name: Cow<'a, str>,
        }
        let members = Members::of(result)?;
        let tools: Vec<&RawValue> = serde_json::from_str(members.get("tools")?.get()).ok()?;
        let mut kept = Vec::with_capacity(tools.len());
        let mut hidden = 0;
        for tool in tools {
            let named: Named<'_> = serde_json::from_str(tool.get()).ok()?;
            if self.hidden.iter().any(|h| *h == named.name) {
                hidden += 1;
            } else {
                kept.push(tool.get());
            }
        }
        let tools = format!("[{}]", kept.join(","));
        let text = members.write(
            |key| match key {
                "tools" => Some(tools.clone()),
                "cacheScope" => Some(PRIVATE.to_string()),
                _ => None,
            },
            Some(("cacheScope", PRIVATE)),
        );
        Some((text, hidden))
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

/// An object's members in the order written, as their original text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The members of `raw`, `None` when it is not an object.
    fn of(raw: &'a RawValue) -> Option<Members<'a>> {
        serde_json::from_str(raw.get()).ok()
    }

    /// A member's value; the last one when the key is repeated, as clients read it.
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The object again, each key once (at its last place), with `replace` giving new text
    /// for some values, and `append` added when its key is not there.
    fn write(
        &self,
        replace: impl Fn(&str) -> Option<String>,
        append: Option<(&str, &str)>,
    ) -> String {
        let mut out = String::from("{");
        let mut first = true;
        let mut push = |out: &mut String, key: &str, value: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&Value::String(key.to_string()).to_string());
            out.push(':');
            out.push_str(value);
        };
        for (i, (key, value)) in self.0.iter().enumerate() {
            if self.0[i + 1..].iter().any(|(k, _)| k == key) {
                continue; // a later copy stands
            }
            match replace(key) {
                Some(text) => push(&mut out, key, &text),
                None => push(&mut out, key, value.get()),
            }
        }
        if let Some((key, value)) = append {
            if self.get(key).is_none() {
                push(&mut out, key, value);
            }
        }
        out.push('}');
        out
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members<'de>, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Ordered)
    }
}

/// What the filter does with the body of a response whose request made `tools/list` calls.
#[derive(Debug)]
pub enum Body {
    /// `application/json`: read whole, then rewritten.
    Json,
    /// `text/event-stream`: each event passed on when complete, the ones that carry a result
    /// rewritten. `skipping`: the rest of an event too large to read is dropped.
    Events { stream: EventStream, skipping: bool },
    /// A body the filter cannot read (compressed): replaced with the error, as an event in
    /// an event stream.
    Unreadable { events: bool },
    /// Another media type: it cannot carry a result a client would read.
    Untouched,
    /// Replaced already: the rest is dropped.
    Dropped,
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
        let content_type = content_type.unwrap_or_default();
        let events = media_type_is(content_type, "text/event-stream");
        let json = media_type_is(content_type, "application/json");
        let encoded = content_encoding
            .is_some_and(|e| !e.trim().is_empty() && !e.trim().eq_ignore_ascii_case("identity"));
        let (body, remove) = match (json || events, encoded) {
            (false, _) => (Body::Untouched, vec![]),
            (true, true) => (
                Body::Unreadable { events },
                vec!["content-length", "content-encoding"],
            ),
            (true, false) if events => (
                Body::Events {
                    stream: EventStream::new(),
                    skipping: false,
                },
                vec!["content-length"],
            ),
            (true, false) => (Body::Json, vec!["content-length"]),
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
            Body::Untouched => Chunk::Pass,
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
                match self.filter.rewrite(&body) {
                    Some(Rewritten::Unchanged) => Chunk::Pass,
                    Some(Rewritten::Changed(body, hidden)) => {
                        self.hidden += hidden;
                        Chunk::Replace(body)
                    }
                    None => Chunk::Replace(self.error_body(false)),
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
        let Body::Events { stream, skipping } = &mut self.body else {
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
            if std::mem::take(skipping) {
                changed = true; // the end of an event too large to read: dropped
                continue;
            }
            match rewrite_event(&mut self.filter, &event) {
                Some((bytes, n)) => {
                    changed = true;
                    hidden += n;
                    out.extend_from_slice(&bytes);
                }
                None => out.extend_from_slice(&event),
            }
        }
        if stream.pending_len() > self.max_bytes {
            // Too large to read: whatever result it carries becomes the error.
            stream.discard_pending();
            *skipping = true;
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

/// An event rewritten when it carries a result of the calls (or data the filter cannot read
/// while a call is unanswered); `None` to pass it on as it is.
fn rewrite_event(filter: &mut ListFilter, event: &[u8]) -> Option<(Vec<u8>, u64)> {
    let lines = sse::lines(event);
    let data = sse::data(&lines)?;
    if data.iter().all(u8::is_ascii_whitespace) {
        return None; // no message (a priming event, a keep-alive)
    }
    match filter.rewrite(&data) {
        Some(Rewritten::Unchanged) => None,
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
