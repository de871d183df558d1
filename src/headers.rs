//! The request headers the filter reads, from the one buffer the host hands over
//! (proxy-wasm's header-map encoding), kept for as long as the request may be decided again
//! (held for keys, or for its body).
//!
//! All values of a repeated `Authorization`, `Mcp-Method` or `Mcp-Name` are kept: asking the
//! host for one header returns only its first value, and an upstream may read another
//! (README, MCP-aware authorization). The values live one after another in one string (one
//! allocation per request), each field a range of it. Header values may hold any byte; lossy
//! decoding keeps the ASCII structure.

use crate::config::Config;
use crate::decide::Request;

/// A field: a range of `RequestHead::text`.
type Span = (u32, u32);

/// The headers of one request, as the filter needs them.
#[derive(Debug, Default, Clone)]
pub struct RequestHead {
    text: String,
    method: Span,
    path: Span,
    authority: Span,
    authorization: Vec<Span>,
    origin: Option<Span>,
    request_method: Option<Span>,
    mcp_method: Vec<Span>,
    mcp_name: Vec<Span>,
    content_length: Option<Span>,
    /// Whether the client sent a header the filter sets from claims.
    pub has_claim_header: bool,
    /// Whether a body follows the headers.
    pub has_body: bool,
}

impl RequestHead {
    /// Reads the fields the filter uses from a serialized header map (`pairs`), noting whether
    /// any configured claim header was sent.
    pub fn parse(pairs: &[u8], config: &Config, has_body: bool) -> RequestHead {
        let mut h = RequestHead {
            text: String::with_capacity(pairs.len()),
            has_body,
            ..RequestHead::default()
        };
        for (name, value) in header_pairs(pairs) {
            match name {
                b":method" => h.method = h.push(value),
                b":path" => h.path = h.push(value),
                b":authority" => h.authority = h.push(value),
                b"authorization" => {
                    let span = h.push(value);
                    h.authorization.push(span);
                }
                b"origin" => h.origin = Some(h.push(value)),
                b"access-control-request-method" => h.request_method = Some(h.push(value)),
                b"mcp-method" => {
                    let span = h.push(value);
                    h.mcp_method.push(span);
                }
                b"mcp-name" => {
                    let span = h.push(value);
                    h.mcp_name.push(span);
                }
                b"content-length" => h.content_length = Some(h.push(value)),
                other => {
                    h.has_claim_header |= config
                        .claim_headers
                        .iter()
                        .any(|(c, _)| c.as_bytes() == other);
                }
            }
        }
        h
    }

    fn push(&mut self, value: &[u8]) -> Span {
        let start = self.text.len() as u32;
        // Header values are ASCII almost always: the checked conversion has a fast path for
        // that, where the lossy one walks the value byte by byte.
        match std::str::from_utf8(value) {
            Ok(text) => self.text.push_str(text),
            Err(_) => self.text.push_str(&String::from_utf8_lossy(value)),
        }
        (start, self.text.len() as u32)
    }

    fn get(&self, (start, end): Span) -> &str {
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    pub fn method(&self) -> &str {
        self.get(self.method)
    }

    pub fn path(&self) -> &str {
        self.get(self.path)
    }

    pub fn origin(&self) -> Option<&str> {
        self.origin.map(|s| self.get(s))
    }

    /// Whether the request carries a credential (only then does a decision need the clock).
    pub fn has_authorization(&self) -> bool {
        !self.authorization.is_empty()
    }

    /// The view [`crate::decide::decide`] takes.
    pub fn request(&self) -> Request<'_> {
        let opt = |span: Option<Span>| span.map(|s| self.get(s));
        Request {
            method: self.method(),
            path: self.path(),
            authority: self.get(self.authority),
            authorization: self.authorization.iter().map(|s| self.get(*s)).collect(),
            origin: opt(self.origin),
            access_control_request_method: opt(self.request_method),
            mcp_method: self.mcp_method.iter().map(|s| self.get(*s)).collect(),
            mcp_name: self.mcp_name.iter().map(|s| self.get(*s)).collect(),
            content_length: opt(self.content_length),
            has_body: self.has_body,
        }
    }
}

/// Iterates over `(name, value)` in a serialized header map without copying: a count, then
/// each name's and value's length, then each name and value NUL-terminated (little-endian
/// u32s). A malformed buffer ends the iteration.
pub fn header_pairs(buf: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let u32_at = |at: usize| -> Option<usize> {
        let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(bytes) as usize)
    };
    let count = u32_at(0).unwrap_or(0);
    let mut data = 4usize.saturating_add(count.saturating_mul(8));
    (0..count).map_while(move |i| {
        let name_len = u32_at(4 + i * 8)?;
        let value_len = u32_at(8 + i * 8)?;
        let name = buf.get(data..data.checked_add(name_len)?)?;
        let value_start = data + name_len + 1;
        let value = buf.get(value_start..value_start.checked_add(value_len)?)?;
        data = value_start + value_len + 1;
        Some((name, value))
    })
}

/// The same encoding, written: what the host takes for a local response's headers.
pub fn serialize_pairs(headers: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 10)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (n, v) in headers {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::base;

    #[test]
    fn reads_every_value_of_repeated_headers_and_notes_claim_headers() {
        let c = base();
        let pairs = serialize_pairs(&[
            (":method", "POST"),
            (":path", "/mcp?x=1"),
            (":authority", "mcp.example.com"),
            ("authorization", "Bearer a"),
            ("authorization", "Bearer b"),
            ("mcp-name", "admin_tool"),
            ("mcp-name", "echo"),
            ("mcp-method", "tools/call"),
            ("x-mcp-subject", "forged"),
            ("origin", "https://app.example"),
        ]);
        let head = RequestHead::parse(&pairs, &c, true);
        let req = head.request();
        assert_eq!(
            (req.method, req.path, req.authority),
            ("POST", "/mcp?x=1", "mcp.example.com")
        );
        assert_eq!(req.authorization, ["Bearer a", "Bearer b"]);
        assert_eq!(req.mcp_name, ["admin_tool", "echo"]);
        assert_eq!(req.mcp_method, ["tools/call"]);
        assert_eq!(req.origin, Some("https://app.example"));
        assert!(head.has_claim_header && head.has_body && head.has_authorization());
    }

    #[test]
    fn a_value_that_is_not_utf8_is_read_lossily_and_the_rest_exactly() {
        let mut pairs = serialize_pairs(&[(":path", "/mcp"), ("origin", "XY"), ("mcp-name", "é")]);
        let at = pairs.windows(2).position(|w| w == b"XY").unwrap();
        pairs[at] = 0xff;
        let head = RequestHead::parse(&pairs, &base(), false);
        let req = head.request();
        assert_eq!(req.origin, Some("\u{fffd}Y"));
        assert_eq!(
            (req.path, req.mcp_name.as_slice()),
            ("/mcp", ["é"].as_slice())
        );
    }

    #[test]
    fn a_malformed_buffer_ends_the_pairs_without_panicking() {
        let good = serialize_pairs(&[(":path", "/mcp"), ("a", "b")]);
        for cut in 0..good.len() {
            let _ = header_pairs(&good[..cut]).count();
        }
        let mut huge = good.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(header_pairs(&huge).count() <= 2);
        assert_eq!(header_pairs(&good).count(), 2);
        assert_eq!(header_pairs(b"").count(), 0);
    }
}
