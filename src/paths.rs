//! Request paths (README, "Which requests are checked"): the query string is ignored, a resource protects its path and
//! everything below it, and a path that is not plainly normalized can never reach a protected
//! prefix unauthenticated. Upstreams differ in how they read `%6D`, `//` or `/x/../`, so we
//! match on the normalized form *and* on the raw form (fail closed), and refuse outright the
//! spellings whose meaning upstreams disagree on (encoded `/` or `\`, a bare `\`, broken escapes,
//! double encoding such as `%252F`).

use std::borrow::Cow;

/// Splits `:path` into the path and the query string (without `?`); a fragment is dropped.
pub fn split_query(raw: &str) -> (&str, Option<&str>) {
    let raw = raw.split('#').next().unwrap_or(raw);
    match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    }
}

/// How far a request path is from its normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalized<'a> {
    /// Already normal: the path as sent.
    Plain(&'a str),
    /// Unambiguously normalizable (unreserved escapes, `.`/`..` segments, repeated slashes).
    Rewritten(String),
    /// Readable in more than one way (`%2F`, `%5C`, `\`, a broken escape, an escaped escape).
    /// The string is the most aggressive reading, used only to ask "could this reach a
    /// protected path?".
    Ambiguous(String),
}

impl Normalized<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            Normalized::Plain(p) => p,
            Normalized::Rewritten(p) | Normalized::Ambiguous(p) => p,
        }
    }
}

fn is_plain(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains(['%', '\\', ';'])
        && !path.contains("//")
        && !path.split('/').any(|seg| seg == "." || seg == "..")
}

/// Normalizes a path (no query) per RFC 3986 §6.2.2: unreserved percent-escapes decoded,
/// dot segments removed (§5.2.4), and repeated slashes merged.
pub fn normalize(path: &str) -> Normalized<'_> {
    if is_plain(path) {
        return Normalized::Plain(path);
    }
    let (mut decoded, mut ambiguous) = decode_escapes(path);
    // An escaped escape (`%252F`) means something else to an upstream that decodes twice:
    // read it as that upstream would. Each round removes a level; three cover any real use.
    for _ in 0..3 {
        if !ambiguous || !decoded.contains('%') {
            break;
        }
        let (again, still) = decode_escapes(&decoded);
        if again == decoded {
            break;
        }
        (decoded, ambiguous) = (again, ambiguous || still);
    }
    let merged = merge_slashes(&decoded);
    let resolved = remove_dot_segments(&merged);
    if ambiguous {
        Normalized::Ambiguous(resolved)
    } else {
        Normalized::Rewritten(resolved)
    }
}

/// Decodes escapes of unreserved characters; `%2F`/`%5C` and `\` become `/` (ambiguous), other
/// escapes stay as they are with upper-case hex. Returns the text and whether it was ambiguous.
fn decode_escapes(path: &str) -> (String, bool) {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    let mut ambiguous = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits exactly: `from_str_radix` alone would take "+2" as a number.
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
                match hex {
                    Some(b) if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                        out.push(b as char)
                    }
                    Some(b'/') | Some(b'\\') => {
                        ambiguous = true;
                        out.push('/');
                    }
                    // `%25` before two hex digits: an escape escaped, decoded once here.
                    Some(b'%')
                        if bytes
                            .get(i + 3..i + 5)
                            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                    {
                        ambiguous = true;
                        out.push('%');
                    }
                    Some(b) => out.push_str(&format!("%{b:02X}")),
                    None => {
                        ambiguous = true;
                        out.push('%');
                        i += 1;
                        continue;
                    }
                }
                i += 3;
            }
            b'\\' => {
                ambiguous = true;
                out.push('/');
                i += 1;
            }
            _ => {
                // Copy the run up to the next special byte in one go (keeps UTF-8 intact).
                let end = bytes[i..]
                    .iter()
                    .position(|b| *b == b'%' || *b == b'\\')
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    (out, ambiguous)
}

/// How upstreams that normalize differently might read a path that is not plain: escapes
/// decoded (`%2F`, `%5C` and `\` taken as `/`) with dot segments kept, with and without
/// repeated slashes merged; dot segments removed without merging slashes (RFC 3986 §5.2.4 alone:
/// `/a//../b` is `/a/b`); and path parameters dropped from each segment, as servlet containers
/// do (`/mcp;x` is `/mcp`). A protected prefix reached by any reading is protected.
pub fn partial_readings(path: &str) -> [String; 4] {
    let (decoded, _) = decode_escapes(path);
    let merged = merge_slashes(&decoded).into_owned();
    let dots_only = remove_dot_segments(&decoded);
    let without_parameters = remove_dot_segments(&merge_slashes(&drop_parameters(&decoded)));
    [decoded, merged, dots_only, without_parameters]
}

/// Each segment without its `;parameters`.
fn drop_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("/")
}

fn merge_slashes(path: &str) -> Cow<'_, str> {
    if !path.contains("//") {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

/// Whether `path` is `prefix` or below it, ASCII letters compared case-insensitively (Express,
/// ASP.NET and other upstreams route `/MCP` to their `/mcp` handler). `prefix` has no trailing
/// slash; an empty prefix (a resource at the host root) covers every path.
pub fn is_under(path: &str, prefix: &str) -> bool {
    let (path, prefix) = (path.as_bytes(), prefix.as_bytes());
    match path.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => {
            path.get(prefix.len()).is_none_or(|next| *next == b'/')
        }
        _ => false,
    }
}

/// `path` with the three non-ASCII letters whose case mapping is an ASCII letter replaced by
/// that letter (`ſ` U+017F and `ı` U+0131 upper-case to `S` and `I`, the Kelvin sign U+212A
/// lower-cases to `k`), so a case-insensitive upstream's `/mcſ`-style spellings of a protected
/// ASCII path are recognized too. Resource paths are ASCII, so nothing else can match them.
pub fn fold_case_lookalikes(path: &str) -> Cow<'_, str> {
    if path.is_ascii() {
        return Cow::Borrowed(path);
    }
    Cow::Owned(
        path.chars()
            .map(|c| match c {
                '\u{17F}' => 's',
                '\u{131}' => 'i',
                '\u{212A}' => 'k',
                other => other,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_query_and_fragment() {
        assert_eq!(split_query("/mcp?x=1"), ("/mcp", Some("x=1")));
        assert_eq!(split_query("/mcp#f?x"), ("/mcp", None));
        assert_eq!(split_query("/mcp"), ("/mcp", None));
    }

    #[test]
    fn classifies_paths_by_how_they_normalize() {
        use Normalized::*;
        let table: &[(&str, Normalized)] = &[
            ("/mcp", Plain("/mcp")),
            ("/mcp/x/", Plain("/mcp/x/")),
            ("/%6Dcp", Rewritten("/mcp".into())),
            ("/%6dcp", Rewritten("/mcp".into())),
            ("//mcp", Rewritten("/mcp".into())),
            ("/./mcp", Rewritten("/mcp".into())),
            ("/x/../mcp", Rewritten("/mcp".into())),
            ("/../mcp", Rewritten("/mcp".into())),
            ("/mcp/.", Rewritten("/mcp/".into())),
            ("/mcp/x/..", Rewritten("/mcp/".into())),
            ("/%2E%2E/mcp", Rewritten("/mcp".into())),
            ("/a%20b", Rewritten("/a%20b".into())),
            ("/mcp%2Fx", Ambiguous("/mcp/x".into())),
            ("/mcp%2fx", Ambiguous("/mcp/x".into())),
            ("/mcp%5Cx", Ambiguous("/mcp/x".into())),
            ("/mcp\\x", Ambiguous("/mcp/x".into())),
            ("/x%2F..%2Fmcp", Ambiguous("/mcp".into())),
            ("/mcp%", Ambiguous("/mcp%".into())),
            ("/mcp%zz", Ambiguous("/mcp%zz".into())),
            ("/mcp%+2x", Ambiguous("/mcp%+2x".into())),
            ("mcp", Rewritten("/mcp".into())),
            ("/mcp;x", Rewritten("/mcp;x".into())),
            ("/mcp%252F", Ambiguous("/mcp/".into())),
            ("/mcp%25252Fx", Ambiguous("/mcp/x".into())),
            ("/a%2525", Ambiguous("/a%25".into())),
            ("/a%25zz", Rewritten("/a%25zz".into())),
            ("/mcp%2500", Ambiguous("/mcp%00".into())),
        ];
        for (input, want) in table {
            assert_eq!(&normalize(input), want, "{input}");
        }
    }

    #[test]
    fn reads_paths_as_a_partly_normalizing_upstream_would() {
        // (path, [escapes decoded, + slashes merged, dots removed only, parameters dropped])
        let table = [
            ("/%6Dcp/../x", ["/mcp/../x", "/mcp/../x", "/x", "/x"]),
            ("/mcp\\..\\x", ["/mcp/../x", "/mcp/../x", "/x", "/x"]),
            (
                "/%6Dcp//..//x",
                ["/mcp//..//x", "/mcp/../x", "/mcp//x", "/x"],
            ),
            ("//%6Dcp", ["//mcp", "/mcp", "//mcp", "/mcp"]),
            ("/a//../b", ["/a//../b", "/a/../b", "/a/b", "/b"]),
            (
                "/mcp;jsessionid=1/x;v=2",
                [
                    "/mcp;jsessionid=1/x;v=2",
                    "/mcp;jsessionid=1/x;v=2",
                    "/mcp;jsessionid=1/x;v=2",
                    "/mcp/x",
                ],
            ),
        ];
        for (path, want) in table {
            assert_eq!(partial_readings(path), want, "{path}");
        }
    }

    #[test]
    fn protects_a_prefix_and_everything_below_it_only() {
        assert!(is_under("/mcp", "/mcp"));
        assert!(is_under("/mcp/", "/mcp"));
        assert!(is_under("/mcp/x", "/mcp"));
        assert!(!is_under("/mcpx", "/mcp"));
        assert!(!is_under("/", "/mcp"));
        assert!(is_under("/MCP", "/mcp"));
        assert!(is_under("/Mcp/", "/mcp"));
        assert!(is_under("/mcp/X", "/MCP"));
        assert!(!is_under("/MCPX", "/mcp"));
        assert!(!is_under("/m\u{e9}", "/mcp"));
        assert_eq!(fold_case_lookalikes("/mcp"), "/mcp");
        assert!(is_under(&fold_case_lookalikes("/tool\u{17F}"), "/tools"));
        assert!(is_under(
            &fold_case_lookalikes("/\u{131}d/\u{212A}"),
            "/id/k"
        ));
        assert!(is_under("/anything", ""));
        assert!(is_under("/", ""));
    }

    #[test]
    fn keeps_multibyte_characters_intact() {
        assert_eq!(normalize("//é/%41").as_str(), "/é/A");
    }
}
