//! `verify::verify` on arbitrary tokens, against the fixture configuration (inline keys of
//! every type). Half the inputs are taken as a raw token; the other half are split on NUL into
//! header, claims and signature bytes that are base64url-encoded here, so the fuzzer reaches
//! the header and claim checks instead of stalling on base64.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::cache::TokenCache;
use mcp_oauth_filter::config::Config;
use mcp_oauth_filter::json::b64url_encode;
use mcp_oauth_filter::keyring::KeyRing;
use mcp_oauth_filter::verify::verify;

const NOW: u64 = 1_800_000_000;

fn config() -> Config {
    let fixture = |name: &str| -> serde_json::Value {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let doc = serde_json::json!({
        "resources": [
            {"resource": "https://mcp.example.com/mcp",
             "authorization_servers": ["https://auth.example.com"],
             "required_scopes": ["mcp:read"]},
            {"resource": "https://other.example.com/tools",
             "authorization_servers": ["https://auth.example.com", "joe"]}
        ],
        "issuers": [
            {"issuer": "https://auth.example.com", "jwks": fixture("jwks.json")},
            {"issuer": "joe", "jwks": {"keys": [fixture("ec-p256.jwk.json")]}, "algorithms": ["ES256"]}
        ]
    });
    Config::from_json(doc.to_string().as_bytes()).unwrap()
}

thread_local! {
    static STATE: (Config, KeyRing, TokenCache) = {
        let c = config();
        let ring = KeyRing::new(&c);
        let cache = TokenCache::new(64);
        (c, ring, cache)
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let mut parts = rest.splitn(3, |b| *b == 0);
        let h = parts.next().unwrap_or_default();
        let p = parts.next().unwrap_or_default();
        let s = parts.next().unwrap_or_default();
        format!(
            "{}.{}.{}",
            b64url_encode(h),
            b64url_encode(p),
            b64url_encode(s)
        )
    };
    let now = NOW.wrapping_add(u64::from(mode >> 1) * 1000);
    STATE.with(|(c, ring, cache)| {
        for resource in &c.resources {
            let _ = verify(&token, resource, c, ring, Some(cache), now);
        }
    });
});
