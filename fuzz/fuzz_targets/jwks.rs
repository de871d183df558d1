//! JWK sets from arbitrary bytes, through the fetch path (`remote::read_jwks`) and directly
//! (`KeySet::from_jwks`); every usable key is then asked to verify a junk signature with every
//! algorithm (must not panic, must not verify).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::alg::Alg;
use mcp_oauth_filter::keys::KeySet;
use mcp_oauth_filter::remote::read_jwks;

fuzz_target!(|data: &[u8]| {
    let _ = read_jwks(200, data);
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok((set, _)) = KeySet::from_jwks(&doc) else {
        return;
    };
    for key in set.keys() {
        for alg in Alg::ALL {
            assert!(!key.verify(alg, b"message", data));
            let _ = set.select(key.kid.as_deref(), alg);
        }
    }
});
