//! `WWW-Authenticate: Bearer` challenges (RFC 6750 §3, MCP authorization "Protected Resource
//! Metadata Discovery") and the JSON error bodies that go with them (RFC 6750 §3.1; README, "Challenges and decisions").
//!
//! MCP clients start OAuth discovery from these bytes, so parameter order and quoting are
//! fixed here: `resource_metadata` always, `scope` when there is one, `error` and
//! `error_description` only when a credential was presented (RFC 6750 §3.1).

/// The RFC 6750 §3.1 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::InvalidToken => 401,
            ErrorCode::InsufficientScope => 403,
        }
    }
}

/// An RFC 9110 quoted-string: `"` and `\` escaped. Configuration refuses control characters,
/// so nothing here can end a header line.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The JSON body of every denial: `{"error": ..., "error_description": ...}`.
pub fn error_body(error: &str, description: &str) -> String {
    serde_json::json!({ "error": error, "error_description": description }).to_string()
}

/// The challenges of one protected resource, pre-rendered where they do not vary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceChallenge {
    /// `resource_metadata="<url>"`
    rm_param: String,
    /// `scope="<required scopes>"`, when there are any.
    scope_param: Option<String>,
    /// The complete header for a request without credentials.
    missing: String,
    /// The JSON body that goes with it.
    missing_body: String,
}

/// The description sent with a credential-less 401 (body only: the header has no `error`).
pub const MISSING_DESCRIPTION: &str = "bearer token required";

impl ResourceChallenge {
    pub fn new(metadata_url: &str, required_scopes: &[String]) -> ResourceChallenge {
        let rm_param = format!("resource_metadata={}", quote(metadata_url));
        let scope_param = scope_param(required_scopes.iter().map(String::as_str));
        let missing = match &scope_param {
            Some(scope) => format!("Bearer {rm_param}, {scope}"),
            None => format!("Bearer {rm_param}"),
        };
        ResourceChallenge {
            rm_param,
            scope_param,
            missing,
            missing_body: error_body(ErrorCode::InvalidToken.as_str(), MISSING_DESCRIPTION),
        }
    }

    /// The body of the credential-less 401, rendered once.
    pub fn missing_body(&self) -> &str {
        &self.missing_body
    }

    /// No credentials, or another scheme: `Bearer resource_metadata="…", scope="…"`.
    pub fn missing(&self) -> &str {
        &self.missing
    }

    /// The header for a denial with an error code. `needed` is the scope set of a 403 (every
    /// scope the operation needs); 400 and 401 use the resource's required scopes.
    pub fn with_error(&self, code: ErrorCode, description: &str, needed: &[&str]) -> String {
        let error = format!(
            "error=\"{}\", error_description={}",
            code.as_str(),
            quote(description)
        );
        match code {
            ErrorCode::InvalidRequest => format!("Bearer {error}, {}", self.rm_param),
            ErrorCode::InvalidToken => match &self.scope_param {
                Some(scope) => format!("Bearer {error}, {}, {scope}", self.rm_param),
                None => format!("Bearer {error}, {}", self.rm_param),
            },
            ErrorCode::InsufficientScope => {
                let scope = scope_param(needed.iter().copied())
                    .map(|p| format!("{p}, "))
                    .unwrap_or_default();
                format!(
                    "Bearer error=\"insufficient_scope\", {scope}{}, error_description={}",
                    self.rm_param,
                    quote(description)
                )
            }
        }
    }
}

fn scope_param<'a>(scopes: impl Iterator<Item = &'a str>) -> Option<String> {
    let joined = scopes.collect::<Vec<_>>().join(" ");
    (!joined.is_empty()).then(|| format!("scope={}", quote(&joined)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RM: &str = "https://h/.well-known/oauth-protected-resource/mcp";

    fn challenge(scopes: &[&str]) -> ResourceChallenge {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        ResourceChallenge::new(RM, &scopes)
    }

    #[test]
    fn missing_credentials_challenge_has_no_error_and_scope_only_when_required() {
        assert_eq!(
            challenge(&["mcp:read", "mcp:write"]).missing(),
            format!("Bearer resource_metadata=\"{RM}\", scope=\"mcp:read mcp:write\"")
        );
        assert_eq!(
            challenge(&[]).missing(),
            format!("Bearer resource_metadata=\"{RM}\"")
        );
    }

    #[test]
    fn renders_each_error_row_of_the_decision_table_in_order() {
        let c = challenge(&["mcp:read"]);
        assert_eq!(
            c.with_error(ErrorCode::InvalidRequest, "two credentials", &[]),
            format!("Bearer error=\"invalid_request\", error_description=\"two credentials\", resource_metadata=\"{RM}\"")
        );
        assert_eq!(
            c.with_error(ErrorCode::InvalidToken, "token expired", &[]),
            format!("Bearer error=\"invalid_token\", error_description=\"token expired\", resource_metadata=\"{RM}\", scope=\"mcp:read\"")
        );
        assert_eq!(
            c.with_error(ErrorCode::InsufficientScope, "missing scope mcp:write", &["mcp:read", "mcp:write"]),
            format!("Bearer error=\"insufficient_scope\", scope=\"mcp:read mcp:write\", resource_metadata=\"{RM}\", error_description=\"missing scope mcp:write\"")
        );
        assert_eq!(
            challenge(&[]).with_error(ErrorCode::InvalidToken, "x", &[]),
            format!("Bearer error=\"invalid_token\", error_description=\"x\", resource_metadata=\"{RM}\"")
        );
    }

    #[test]
    fn never_renders_an_empty_list_element() {
        let c = challenge(&[]);
        assert_eq!(
            c.with_error(ErrorCode::InsufficientScope, "x", &[]),
            format!("Bearer error=\"insufficient_scope\", resource_metadata=\"{RM}\", error_description=\"x\"")
        );
    }

    #[test]
    fn quotes_and_escapes_values() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote(""), r#""""#);
    }

    #[test]
    fn error_bodies_are_json_objects() {
        let body: serde_json::Value =
            serde_json::from_str(&error_body("invalid_token", "token \"expired\"")).unwrap();
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(body["error_description"], "token \"expired\"");
    }
}
