//! Request-path handling on arbitrary `:path` values: `split_query`, `normalize`, and the
//! normal form's promises (no `//`, `/./` or `/../`; normalizing a non-ambiguous result
//! again changes nothing); plus the credential extractor and `Cache-Control` reader, which
//! also read raw header text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::extract::{check_syntax, extract};
use mcp_oauth_filter::paths::{is_under, normalize, split_query, Normalized};
use mcp_oauth_filter::remote::max_age;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = split_query(raw);
    let n = normalize(path);
    let out = n.as_str();
    assert!(
        out.starts_with('/') || matches!(n, Normalized::Plain(_)),
        "{raw:?} -> {n:?}"
    );
    if !matches!(n, Normalized::Plain(_)) {
        for bad in ["//", "/./", "/../"] {
            assert!(!out.contains(bad), "{raw:?} -> {n:?}");
        }
        assert!(
            !out.ends_with("/.") && !out.ends_with("/.."),
            "{raw:?} -> {n:?}"
        );
    }
    if !matches!(n, Normalized::Ambiguous(_)) {
        assert_eq!(normalize(out).as_str(), out, "{raw:?} -> {n:?}");
    }
    let _ = is_under(out, "/mcp");
    let headers: Vec<&str> = raw.split('\n').collect();
    let _ = extract(&headers, query);
    let _ = extract(&headers[..1], query);
    let _ = check_syntax(raw);
    let _ = max_age(Some(raw));
});
