//! A token that passed verification, as every later step sees it (scope checks, header edits,
//! the verified-token cache): what its signature vouched for, distilled once (RFC 9068 §2.2
//! claims, RFC 8693 §4.2 scopes), small enough to share between requests.

use crate::alg::Alg;
use crate::config::IssuerId;
use std::borrow::Cow;
use std::fmt::Write;
use std::ops::Deref;
use std::rc::Rc;

/// What a verified signature vouches for, distilled once and shared by every request that
/// presents the same token (`cache`): only what later checks and header edits read, so a
/// cache entry stays small.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed {
    /// The JWS algorithm; `None` for a token an introspection answer vouched for.
    pub alg: Option<Alg>,
    pub issuer: IssuerId,
    /// Fingerprint of the key that verified the signature.
    pub key: u64,
    pub exp: f64,
    pub facts: Facts,
    /// Granted scopes with everything `scope_implies` adds.
    pub scopes: Vec<String>,
    /// The value of each `claims_to_headers` entry, in configuration order.
    pub header_values: Vec<Option<String>>,
    /// Who it names, for the access log.
    pub identity: Rc<Identity>,
}

/// Who a verified token names, as the access log shows it (README, "Audit trail in the access
/// log"): its `sub`, its client (`client_id`, else `azp`: RFC 9068 §2.2, OpenID Connect), and its
/// scopes as it carries them (implied ones not added).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The issuer as configured (its `iss`).
    pub issuer: String,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub scopes: String,
}

impl Identity {
    /// From a token's claims (or an introspection answer's members) and its granted scopes.
    pub fn of(
        issuer: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
        granted: &[String],
    ) -> Identity {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Identity {
            issuer: issuer.to_string(),
            subject: text("sub"),
            client_id: text("client_id").or_else(|| text("azp")),
            scopes: granted.join(" "),
        }
    }
}

/// What a decided request's log line may show: the token's identity (when one was verified)
/// and the tools a `tools/call` named.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Audit {
    pub identity: Option<Rc<Identity>>,
    pub tools: Vec<String>,
}

/// The filter-state names the audit trail sets, each `mcp_oauth.<name>` (Envoy:
/// `%FILTER_STATE(wasm.mcp_oauth.<name>:PLAIN)%`).
pub const AUDIT_FIELDS: [&str; 6] = [
    "mcp_oauth.outcome",
    "mcp_oauth.subject",
    "mcp_oauth.client_id",
    "mcp_oauth.issuer",
    "mcp_oauth.scopes",
    "mcp_oauth.tool",
];

impl Audit {
    /// The filter state of a decided request: its outcome (`allowed`, or the denial's
    /// reason code), then whatever of the identity and tools is known; absent values are not
    /// set. Values from a token or a body are made safe for a log line.
    pub fn fields<'a>(&'a self, outcome: &'a str) -> Vec<(&'static str, Cow<'a, str>)> {
        let [o, sub, client, iss, scopes, tool] = AUDIT_FIELDS;
        let mut out = Vec::with_capacity(AUDIT_FIELDS.len());
        out.push((o, Cow::Borrowed(outcome)));
        if let Some(id) = &self.identity {
            let mut put = |name, value: Option<&'a str>| {
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    out.push((name, log_safe(v)));
                }
            };
            put(sub, id.subject.as_deref());
            put(client, id.client_id.as_deref());
            put(iss, Some(&id.issuer));
            put(scopes, Some(&id.scopes));
        }
        if !self.tools.is_empty() {
            let tools = self.tools.join(" ");
            // Already joined: kept as it is unless something in it needs escaping.
            let safe = if tools.chars().any(escaped) {
                log_safe(&tools).into_owned()
            } else {
                tools
            };
            out.push((tool, Cow::Owned(safe)));
        }
        out
    }

    pub fn of(token: &Signed) -> Audit {
        Audit {
            identity: Some(token.identity.clone()),
            tools: Vec::new(),
        }
    }
}

/// The claims checked on every request, read from the token once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    pub iss: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
}

/// A token that passed every check for a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken(pub Rc<Signed>);

impl Deref for VerifiedToken {
    type Target = Signed;

    fn deref(&self) -> &Signed {
        &self.0
    }
}

/// A value that cannot break an access-log line: control characters (line ends included) and
/// backslashes are written as `\u00XX` escapes, so the line stays one line and the escape stays
/// unambiguous.
pub fn log_safe(value: &str) -> Cow<'_, str> {
    if !value.chars().any(escaped) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if escaped(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// What [`log_safe`] writes as an escape.
fn escaped(c: char) -> bool {
    c.is_control() || c == '\\'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_values_stay_on_one_line() {
        assert_eq!(log_safe("alice@example.com"), "alice@example.com");
        assert_eq!(log_safe("a\nb\r\tc"), "a\\u000ab\\u000d\\u0009c");
        assert_eq!(log_safe("x\u{7f}\u{85}y"), "x\\u007f\\u0085y");
        assert_eq!(log_safe("back\\slash"), "back\\u005cslash");
        assert_eq!(log_safe("café 世界"), "café 世界");
    }

    #[test]
    fn audit_fields_set_only_what_is_known() {
        let identity = Identity {
            issuer: "https://auth.example.com".into(),
            subject: Some("alice\n".into()),
            client_id: None,
            scopes: String::new(),
        };
        let audit = Audit {
            identity: Some(Rc::new(identity)),
            tools: vec!["echo".into(), "add".into()],
        };
        let fields = |audit: &Audit, outcome: &str| -> Vec<(&str, String)> {
            let owned = |(n, v): (&'static str, Cow<str>)| (n, v.into_owned());
            audit.fields(outcome).into_iter().map(owned).collect()
        };
        assert_eq!(
            fields(&audit, "allowed"),
            vec![
                ("mcp_oauth.outcome", "allowed".to_string()),
                ("mcp_oauth.subject", "alice\\u000a".to_string()),
                ("mcp_oauth.issuer", "https://auth.example.com".to_string()),
                ("mcp_oauth.tool", "echo add".to_string()),
            ]
        );
        assert_eq!(
            fields(&Audit::default(), "token_expired"),
            vec![("mcp_oauth.outcome", "token_expired".to_string())]
        );
    }
}
