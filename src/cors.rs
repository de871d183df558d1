//! CORS for browser-based MCP clients (Fetch §3.2; MCP clients such as the Inspector run in a
//! browser). Preflights on our paths are answered here, never challenged: a preflight carries
//! no credentials by definition (Fetch §4.8), so a 401 would break every browser client.

/// Allowed methods: what MCP's streamable HTTP transport uses.
pub const ALLOW_METHODS: &str = "GET, POST, DELETE, HEAD, OPTIONS";
/// Request headers MCP clients send.
pub const ALLOW_HEADERS: &str = "authorization, content-type, mcp-protocol-version, mcp-session-id, mcp-method, mcp-name, last-event-id, accept";
pub const EXPOSE_HEADERS: &str = "www-authenticate";
pub const MAX_AGE: &str = "86400";

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &str, origin: Option<&str>, request_method: Option<&str>) -> bool {
    method == "OPTIONS" && origin.is_some() && request_method.is_some()
}

/// Headers of a 204 preflight answer.
pub fn preflight_headers() -> [(&'static str, &'static str); 4] {
    [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", ALLOW_METHODS),
        ("access-control-allow-headers", ALLOW_HEADERS),
        ("access-control-max-age", MAX_AGE),
    ]
}

/// Headers every filter-made response carries for a request with an `Origin`, so a browser
/// client can read the status and the `WWW-Authenticate` challenge. Tokens travel in a header,
/// not a cookie, so `*` is safe and needs no `Vary: Origin`.
pub fn response_headers() -> [(&'static str, &'static str); 2] {
    [
        ("access-control-allow-origin", "*"),
        ("access-control-expose-headers", EXPOSE_HEADERS),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_only_real_preflights() {
        assert!(is_preflight("OPTIONS", Some("https://app"), Some("POST")));
        assert!(!is_preflight("OPTIONS", None, Some("POST")));
        assert!(!is_preflight("OPTIONS", Some("https://app"), None));
        assert!(!is_preflight("POST", Some("https://app"), Some("POST")));
    }

    #[test]
    fn allows_every_header_an_mcp_client_sends() {
        for h in [
            "authorization",
            "content-type",
            "mcp-protocol-version",
            "mcp-session-id",
            "mcp-method",
            "mcp-name",
            "last-event-id",
        ] {
            assert!(ALLOW_HEADERS.split(", ").any(|a| a == h), "{h}");
        }
    }
}
