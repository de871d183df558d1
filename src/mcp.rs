//! What an MCP request asks for (README, "MCP-aware authorization"): the JSON-RPC calls in a POST body (a request or a
//! batch) and the `Mcp-Method` / `Mcp-Name` headers that must agree with it.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde_json::Value;
use std::borrow::Cow;

/// The wrapper MCP 2026-07-28 puts around an `Mcp-*` header value that is not plain ASCII:
/// `=?base64?{standard base64 of the UTF-8}?=`.
const WRAPPED: (&str, &str) = ("=?base64?", "?=");

/// Standard base64; padding optional (some encoders drop it), stray bits refused.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(false),
);

/// The text an `Mcp-Method` / `Mcp-Name` header carries: the value as sent, or the UTF-8 text
/// inside the base64 wrapper. `None` for a wrapper that is not base64 of UTF-8.
pub fn header_text(value: &str) -> Option<Cow<'_, str>> {
    let Some(encoded) = value
        .strip_prefix(WRAPPED.0)
        .and_then(|v| v.strip_suffix(WRAPPED.1))
    else {
        return Some(Cow::Borrowed(value));
    };
    let bytes = B64.decode(encoded).ok()?;
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

/// One JSON-RPC request or notification in a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    /// `params.name` (tools/call, prompts/get) or `params.uri` (resources/read...).
    pub name: Option<String>,
}

impl Call {
    /// The tool a `tools/call` invokes.
    pub fn tool(&self) -> Option<&str> {
        (self.method == "tools/call")
            .then_some(self.name.as_deref())
            .flatten()
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    NotJson,
    NotJsonRpc,
    EmptyBatch,
    /// `Mcp-Method` or `Mcp-Name` names something other than the body.
    HeaderMismatch,
}

impl BodyError {
    pub fn description(self) -> &'static str {
        match self {
            BodyError::NotJson => "request body is not JSON",
            BodyError::NotJsonRpc => "request body is not a JSON-RPC request or batch",
            BodyError::EmptyBatch => "empty JSON-RPC batch",
            BodyError::HeaderMismatch => "Mcp-Method or Mcp-Name header does not match the body",
        }
    }
}

fn call_of(message: &Value) -> Result<Option<Call>, BodyError> {
    let Value::Object(obj) = message else {
        return Err(BodyError::NotJsonRpc);
    };
    match obj.get("method") {
        Some(Value::String(method)) => {
            let params = obj.get("params");
            let named = params.and_then(|p| p.get("name").or_else(|| p.get("uri")));
            let name = named.and_then(Value::as_str).map(str::to_string);
            // A tool call must name its tool as a string: one that does not could still mean
            // a tool to an upstream, and would skip that tool's scopes here.
            if method == "tools/call" && name.is_none() {
                return Err(BodyError::NotJsonRpc);
            }
            Ok(Some(Call {
                method: method.clone(),
                name,
            }))
        }
        Some(_) => Err(BodyError::NotJsonRpc),
        // A response to a server request (sampling, elicitation): asks for nothing.
        None if obj.contains_key("result") || obj.contains_key("error") => Ok(None),
        None => Err(BodyError::NotJsonRpc),
    }
}

/// The calls in a POST body: one message or a batch.
pub fn calls(body: &[u8]) -> Result<Vec<Call>, BodyError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| BodyError::NotJson)?;
    let messages = match &value {
        Value::Array(items) if items.is_empty() => return Err(BodyError::EmptyBatch),
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::with_capacity(messages.len());
    for message in messages {
        if let Some(call) = call_of(message)? {
            out.push(call);
        }
    }
    Ok(out)
}

/// Every `Mcp-Method` value must name every call's method, and every `Mcp-Name` value every
/// call's name: a repeated header is checked value by value, so no value the upstream may
/// read instead can disagree with the body.
pub fn check_headers(
    calls: &[Call],
    mcp_methods: &[&str],
    mcp_names: &[&str],
) -> Result<(), BodyError> {
    for method in mcp_methods {
        let method = header_text(method).ok_or(BodyError::HeaderMismatch)?;
        if calls.is_empty() || calls.iter().any(|c| c.method != method) {
            return Err(BodyError::HeaderMismatch);
        }
    }
    for name in mcp_names {
        let name = header_text(name).ok_or(BodyError::HeaderMismatch)?;
        if calls.is_empty() || calls.iter().any(|c| c.name.as_deref() != Some(&name)) {
            return Err(BodyError::HeaderMismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, name: Option<&str>) -> Call {
        Call {
            method: method.into(),
            name: name.map(Into::into),
        }
    }

    #[test]
    fn reads_single_requests_batches_and_skips_responses() {
        let one = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{}}}"#;
        assert_eq!(calls(one).unwrap(), vec![call("tools/call", Some("add"))]);
        assert_eq!(calls(one).unwrap()[0].tool(), Some("add"));
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},
                         {"jsonrpc":"2.0","method":"notifications/initialized"},
                         {"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a"}},
                         {"jsonrpc":"2.0","id":9,"result":{}}]"#;
        assert_eq!(
            calls(batch).unwrap(),
            vec![
                call("ping", None),
                call("notifications/initialized", None),
                call("resources/read", Some("file:///a"))
            ]
        );
        assert_eq!(calls(batch).unwrap()[2].tool(), None);
    }

    #[test]
    fn refuses_what_is_not_json_rpc() {
        assert_eq!(calls(b"not json"), Err(BodyError::NotJson));
        assert_eq!(calls(b""), Err(BodyError::NotJson));
        assert_eq!(calls(b"[]"), Err(BodyError::EmptyBatch));
        assert_eq!(calls(b"42"), Err(BodyError::NotJsonRpc));
        assert_eq!(calls(br#"{"method":7}"#), Err(BodyError::NotJsonRpc));
        assert_eq!(calls(br#"[{"id":1}]"#), Err(BodyError::NotJsonRpc));
        assert_eq!(calls(br#"[1]"#), Err(BodyError::NotJsonRpc));
        // A tool call that does not name its tool as a string.
        for params in [
            r#"{"name":["rm"]}"#,
            r#"{"name":7}"#,
            r#"{"arguments":{}}"#,
            "null",
        ] {
            let body =
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}"#);
            assert_eq!(
                calls(body.as_bytes()),
                Err(BodyError::NotJsonRpc),
                "{params}"
            );
        }
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#;
        assert_eq!(calls(body), Err(BodyError::NotJsonRpc));
    }

    #[test]
    fn reads_base64_wrapped_header_values() {
        assert_eq!(header_text("add").as_deref(), Some("add"));
        assert_eq!(header_text("=?base64?Y2Fmw6k=?=").as_deref(), Some("café"));
        assert_eq!(header_text("=?base64?Y2Fmw6k?=").as_deref(), Some("café"));
        assert_eq!(
            header_text("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(
            header_text("=?base64?IHBhZGRlZA==?=").as_deref(),
            Some(" padded")
        );
        assert_eq!(header_text("=?base64?%%%?="), None);
        assert_eq!(header_text("=?base64?//4=?="), None, "not UTF-8");
        // Only the exact wrapper is decoded.
        assert_eq!(header_text("=?base64?abc").as_deref(), Some("=?base64?abc"));
        let cafe = vec![call("tools/call", Some("café"))];
        assert_eq!(
            check_headers(&cafe, &["tools/call"], &["=?base64?Y2Fmw6k=?="]),
            Ok(())
        );
        assert_eq!(
            check_headers(&cafe, &["tools/call"], &["=?base64?Y2FmZQ==?="]),
            Err(BodyError::HeaderMismatch)
        );
        assert_eq!(
            check_headers(&cafe, &["tools/call"], &["=?base64?!!?="]),
            Err(BodyError::HeaderMismatch)
        );
    }

    #[test]
    fn headers_must_agree_with_every_call() {
        let add = vec![call("tools/call", Some("add"))];
        assert_eq!(check_headers(&add, &["tools/call"], &["add"]), Ok(()));
        assert_eq!(check_headers(&add, &[], &[]), Ok(()));
        assert_eq!(
            check_headers(&add, &["tools/list"], &[]),
            Err(BodyError::HeaderMismatch)
        );
        assert_eq!(
            check_headers(&add, &["tools/call"], &["rm"]),
            Err(BodyError::HeaderMismatch)
        );
        let mixed = vec![call("tools/call", Some("add")), call("ping", None)];
        assert_eq!(
            check_headers(&mixed, &["tools/call"], &[]),
            Err(BodyError::HeaderMismatch)
        );
        assert_eq!(
            check_headers(&[], &["ping"], &[]),
            Err(BodyError::HeaderMismatch)
        );
        // A repeated header: every value must agree, not just the last or the first.
        let echo = vec![call("tools/call", Some("echo"))];
        assert_eq!(check_headers(&echo, &[], &["echo", "echo"]), Ok(()));
        for names in [["admin_tool", "echo"], ["echo", "admin_tool"]] {
            assert_eq!(
                check_headers(&echo, &[], &names),
                Err(BodyError::HeaderMismatch),
                "{names:?}"
            );
        }
        assert_eq!(
            check_headers(&echo, &["tools/call", "tools/list"], &[]),
            Err(BodyError::HeaderMismatch)
        );
    }
}
