//! OAuth 2.0 Protected Resource Metadata (RFC 9728): where the document lives (§3.1) and what
//! it says (§2). Both are computed once per resource at configuration time.

use crate::url::HttpUrl;
use serde::Serialize;

pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata path for a resource: the well-known prefix inserted between host and path,
/// with a path of just `/` dropped (RFC 9728 §3.1: "any terminating slash following the host
/// component MUST be removed").
pub fn metadata_path(resource: &HttpUrl) -> String {
    match resource.path.as_str() {
        "" | "/" => WELL_KNOWN.to_string(),
        path => format!("{WELL_KNOWN}{path}"),
    }
}

/// The metadata URL clients are sent to: built from the configured resource's scheme, host and
/// port, never from the request's `Host` (RFC 9728 §3.3: the client checks `resource` against the URL it used).
pub fn metadata_url(resource: &HttpUrl) -> String {
    format!("{}{}", resource.origin(), metadata_path(resource))
}

#[derive(Serialize)]
struct Document<'a> {
    resource: &'a str,
    authorization_servers: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    scopes_supported: &'a [String],
    bearer_methods_supported: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_documentation: Option<&'a str>,
}

/// The RFC 9728 §2 document. `authorization_servers` are emitted verbatim: clients compare
/// them with the authorization server's `issuer` byte for byte.
pub fn render_document(
    resource: &str,
    authorization_servers: &[String],
    scopes_supported: &[String],
    resource_name: Option<&str>,
    resource_documentation: Option<&str>,
) -> String {
    let doc = Document {
        resource,
        authorization_servers,
        scopes_supported,
        bearer_methods_supported: ["header"],
        resource_name,
        resource_documentation,
    };
    // Serializing plain strings into a String cannot fail.
    serde_json::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> HttpUrl {
        HttpUrl::parse(text).unwrap()
    }

    #[test]
    fn inserts_well_known_between_host_and_path() {
        let cases = [
            (
                "https://h/mcp",
                "https://h/.well-known/oauth-protected-resource/mcp",
            ),
            (
                "https://h:8443/a/b",
                "https://h:8443/.well-known/oauth-protected-resource/a/b",
            ),
            (
                "https://h/mcp/",
                "https://h/.well-known/oauth-protected-resource/mcp/",
            ),
            (
                "https://h/",
                "https://h/.well-known/oauth-protected-resource",
            ),
            (
                "https://h",
                "https://h/.well-known/oauth-protected-resource",
            ),
            (
                "http://127.0.0.1:8000/mcp",
                "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp",
            ),
        ];
        for (resource, want) in cases {
            assert_eq!(metadata_url(&url(resource)), want, "{resource}");
        }
    }

    #[test]
    fn renders_only_configured_optional_members() {
        let servers = vec!["https://auth.example.com".to_string()];
        let minimal = render_document("https://h/mcp", &servers, &[], None, None);
        assert_eq!(
            minimal,
            r#"{"resource":"https://h/mcp","authorization_servers":["https://auth.example.com"],"bearer_methods_supported":["header"]}"#
        );
        let full = render_document(
            "https://h/mcp",
            &servers,
            &["mcp:read".to_string()],
            Some("Example \"MCP\""),
            Some("https://h/docs"),
        );
        let v: serde_json::Value = serde_json::from_str(&full).unwrap();
        assert_eq!(v["scopes_supported"][0], "mcp:read");
        assert_eq!(v["resource_name"], "Example \"MCP\"");
        assert_eq!(v["resource_documentation"], "https://h/docs");
    }
}
