//! `WWW-Authenticate` rendering with arbitrary descriptions and scopes: never a panic, and
//! never a CR or LF in the header unless the input had one (configuration refuses control
//! characters; descriptions are our own constants, but the renderer must not add any).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::challenge::{error_body, ErrorCode, ResourceChallenge};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut fields = text.split('\u{0}');
    let url = fields.next().unwrap_or_default();
    let description = fields.next().unwrap_or_default();
    let scopes: Vec<String> = fields
        .next()
        .unwrap_or_default()
        .split(' ')
        .map(String::from)
        .collect();
    let needed: Vec<&str> = fields.next().unwrap_or_default().split(' ').collect();
    let c = ResourceChallenge::new(url, &scopes);
    let clean = !text.contains(['\r', '\n']);
    for code in [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidToken,
        ErrorCode::InsufficientScope,
    ] {
        let header = c.with_error(code, description, &needed);
        assert!(header.starts_with("Bearer "));
        assert!(!clean || !header.contains(['\r', '\n']));
        let body: serde_json::Value =
            serde_json::from_str(&error_body(code.as_str(), description)).unwrap();
        assert_eq!(body["error_description"], description);
    }
    assert!(!clean || !c.missing().contains(['\r', '\n']));
});
