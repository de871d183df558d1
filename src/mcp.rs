//! What an MCP request asks for (SPEC §9): the JSON-RPC calls in a POST body (a request or a
//! batch) and the `Mcp-Method` / `Mcp-Name` headers that must agree with it.

use serde_json::Value;

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
            let name = params
                .and_then(|p| p.get("name").or_else(|| p.get("uri")))
                .and_then(Value::as_str)
                .map(str::to_string);
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

/// `Mcp-Method` must name every call's method; `Mcp-Name` every call's name.
pub fn check_headers(
    calls: &[Call],
    mcp_method: Option<&str>,
    mcp_name: Option<&str>,
) -> Result<(), BodyError> {
    if let Some(method) = mcp_method {
        if calls.is_empty() || calls.iter().any(|c| c.method != method) {
            return Err(BodyError::HeaderMismatch);
        }
    }
    if let Some(name) = mcp_name {
        if calls.is_empty() || calls.iter().any(|c| c.name.as_deref() != Some(name)) {
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
    }

    #[test]
    fn headers_must_agree_with_every_call() {
        let add = vec![call("tools/call", Some("add"))];
        assert_eq!(check_headers(&add, Some("tools/call"), Some("add")), Ok(()));
        assert_eq!(check_headers(&add, None, None), Ok(()));
        assert_eq!(
            check_headers(&add, Some("tools/list"), None),
            Err(BodyError::HeaderMismatch)
        );
        assert_eq!(
            check_headers(&add, Some("tools/call"), Some("rm")),
            Err(BodyError::HeaderMismatch)
        );
        let mixed = vec![call("tools/call", Some("add")), call("ping", None)];
        assert_eq!(
            check_headers(&mixed, Some("tools/call"), None),
            Err(BodyError::HeaderMismatch)
        );
        assert_eq!(
            check_headers(&[], Some("ping"), None),
            Err(BodyError::HeaderMismatch)
        );
    }
}
