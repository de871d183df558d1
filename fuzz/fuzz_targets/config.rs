//! `Config::from_json` on arbitrary bytes; a configuration that compiles is then asked the
//! per-request questions (which resource, which metadata document, which challenge).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::challenge::ErrorCode;
use mcp_oauth_filter::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = Config::from_json(data) else {
        return;
    };
    for r in &c.resources {
        let _ = c.resource_for_path(&r.metadata_path, "mcp.example.com");
        let _ = c.metadata_for_path(&r.metadata_path, "mcp.example.com");
        let _ = c.resource_for_path(&format!("{}/x", r.path_prefix), "");
        let _ = r.challenge.missing();
        let _ = r
            .challenge
            .with_error(ErrorCode::InsufficientScope, "d", &["a"]);
        serde_json::from_str::<serde_json::Value>(&r.metadata_body).unwrap();
    }
    let _ = c.metadata_for_path("/.well-known/oauth-protected-resource", "x");
});
