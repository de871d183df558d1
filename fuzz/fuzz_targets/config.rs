//! `Config::from_json` on arbitrary bytes; a configuration that compiles is then asked the
//! per-request questions (which resource, which metadata document, which challenge).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::challenge::ErrorCode;
use mcp_oauth_filter::config::Config;
use mcp_oauth_filter::route::{metadata_document, route};

fuzz_target!(|data: &[u8]| {
    let Ok(c) = Config::from_json(data) else {
        return;
    };
    for r in &c.resources {
        let _ = route(&c, &r.metadata_path, "mcp.example.com");
        let _ = metadata_document(&c, &r.metadata_path, "mcp.example.com");
        let _ = route(&c, &format!("{}/X", r.path_prefix), "");
        let _ = r.challenge.missing();
        let _ = r
            .challenge
            .with_error(ErrorCode::InsufficientScope, "d", &["a"]);
        serde_json::from_str::<serde_json::Value>(&r.metadata_body).unwrap();
    }
    let _ = metadata_document(&c, "/.well-known/oauth-protected-resource", "x.");
});
