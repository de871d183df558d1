//! The small part of RFC 3986 we need for configured URLs: split an absolute `http(s)` URL into
//! scheme, authority and path without rewriting a byte. The `resource` must be echoed verbatim
//! (MCP clients compare it byte for byte), which a normalizing URL library would not do.

/// An absolute `http` or `https` URL split into its parts, each a slice of the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub scheme: String,
    /// `host[:port]` exactly as written.
    pub authority: String,
    /// Host, lower-cased and without a trailing dot (IPv6 stays bracketed).
    pub host: String,
    /// The explicit port, or the scheme's default.
    pub port: u16,
    /// Path as written (may be empty).
    pub path: String,
    pub query: Option<String>,
}

/// Why a URL is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    NotHttp,
    NoHost,
    UserInfo,
    BadPort,
    Fragment,
    BadCharacter,
}

impl UrlError {
    pub fn reason(self) -> &'static str {
        match self {
            UrlError::NotHttp => "must be an absolute http:// or https:// URL",
            UrlError::NoHost => "has no host",
            UrlError::UserInfo => "must not contain user information",
            UrlError::BadPort => "has an invalid port",
            UrlError::Fragment => "must not contain a fragment",
            UrlError::BadCharacter => "contains whitespace, control or non-ASCII characters",
        }
    }
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<HttpUrl, UrlError> {
        if text
            .bytes()
            .any(|b| b <= b' ' || b >= 0x7f || b == b'"' || b == b'\\')
        {
            return Err(UrlError::BadCharacter);
        }
        let (scheme, rest) = text.split_once("://").ok_or(UrlError::NotHttp)?;
        let default_port = match scheme {
            "https" => 443,
            "http" => 80,
            _ => return Err(UrlError::NotHttp),
        };
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = split_host_port(authority, default_port)?;
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (tail, None),
        };
        Ok(HttpUrl {
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            host,
            port,
            path: path.to_string(),
            query,
        })
    }

    /// `scheme://authority`, the origin part used to build metadata URLs.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// Whether a request's `:authority` names this URL's host and port, both normalized as
    /// [`normalize_authority`] does.
    pub fn matches_authority(&self, authority: &str) -> bool {
        normalize_authority(authority, self.default_port())
            .is_some_and(|(host, port)| host == self.host && port == self.port)
    }

    /// The scheme's default port (RFC 9110 §4.2).
    pub fn default_port(&self) -> u16 {
        if self.scheme == "https" {
            443
        } else {
            80
        }
    }
}

/// A request's `:authority` as `(host, port)`: the host lower-cased and without the trailing
/// dot of a fully qualified name (`localhost.` is `localhost`), the port made explicit
/// (`default_port` when absent). `None` when it is not `host[:port]`.
pub fn normalize_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    split_host_port(authority, default_port).ok()
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let close = stripped.find(']').ok_or(UrlError::NoHost)?;
        let after = &stripped[close + 1..];
        let host = &authority[..close + 2];
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or(UrlError::BadPort)?),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    // A fully qualified name's trailing dot names the same host (RFC 1034 §3.1).
    let host = match host.strip_suffix('.') {
        Some(stripped) if !host.starts_with('[') => stripped,
        _ => host,
    };
    if host.is_empty() || host.ends_with('.') {
        return Err(UrlError::NoHost);
    }
    let port = match port {
        None => default_port,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().map_err(|_| UrlError::BadPort)?
        }
        Some(_) => return Err(UrlError::BadPort),
    };
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_an_https_url_without_rewriting_it() {
        let u = HttpUrl::parse("https://MCP.example.com:8443/mcp/v1").unwrap();
        assert_eq!(u.scheme, "https");
        assert_eq!(u.authority, "MCP.example.com:8443");
        assert_eq!(u.host, "mcp.example.com");
        assert_eq!(u.port, 8443);
        assert_eq!(u.path, "/mcp/v1");
        assert_eq!(u.origin(), "https://MCP.example.com:8443");
    }

    #[test]
    fn uses_default_ports_and_accepts_bracketed_ipv6() {
        assert_eq!(HttpUrl::parse("http://h").unwrap().port, 80);
        assert_eq!(HttpUrl::parse("https://h/").unwrap().port, 443);
        let v6 = HttpUrl::parse("http://[::1]:9000/mcp").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 9000));
    }

    #[test]
    fn refuses_urls_a_resource_cannot_be() {
        let cases = [
            ("ftp://h/x", UrlError::NotHttp),
            ("/mcp", UrlError::NotHttp),
            ("https:///mcp", UrlError::NoHost),
            ("https://u:p@h/mcp", UrlError::UserInfo),
            ("https://h:99999/mcp", UrlError::BadPort),
            ("https://h:x/mcp", UrlError::BadPort),
            ("https://h/mcp#frag", UrlError::Fragment),
            ("https://h/m cp", UrlError::BadCharacter),
            ("https://h/m\"cp", UrlError::BadCharacter),
        ];
        for (text, err) in cases {
            assert_eq!(HttpUrl::parse(text), Err(err), "{text}");
        }
    }

    #[test]
    fn matches_request_authority_by_host_and_effective_port() {
        let u = HttpUrl::parse("https://mcp.example.com/mcp").unwrap();
        assert!(u.matches_authority("mcp.example.com"));
        assert!(u.matches_authority("MCP.Example.com:443"));
        assert!(!u.matches_authority("mcp.example.com:8443"));
        assert!(!u.matches_authority("other.example.com"));
        assert!(!u.matches_authority(""));
    }

    #[test]
    fn normalizes_an_authority_before_comparing_it() {
        let u = HttpUrl::parse("https://MCP.example.com./mcp").unwrap();
        assert_eq!(u.host, "mcp.example.com");
        for same in [
            "mcp.example.com",
            "MCP.EXAMPLE.COM",
            "mcp.example.com.",
            "mcp.example.com.:443",
            "Mcp.Example.Com:443",
        ] {
            assert!(u.matches_authority(same), "{same}");
        }
        for other in [
            "mcp.example.com:80",
            "mcp.example.com..",
            ".",
            "mcp.example.co",
            ":443",
        ] {
            assert!(!u.matches_authority(other), "{other}");
        }
        let local = HttpUrl::parse("http://localhost:8000/mcp").unwrap();
        assert!(local.matches_authority("localhost.:8000"));
        assert!(!local.matches_authority("localhost"), "port 80 is not 8000");
        assert_eq!(
            normalize_authority("[::1]:9000", 80),
            Some(("[::1]".to_string(), 9000))
        );
        assert_eq!(normalize_authority("h.", 443), Some(("h".to_string(), 443)));
        assert_eq!(normalize_authority("h:x", 443), None);
    }
}
