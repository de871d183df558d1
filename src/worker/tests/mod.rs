//! The worker against a fake host, natively and with a fake clock. This module holds the
//! configurations, tokens and host answers the tests share; each child module tests one
//! concern: `keys`, `bodies`, `introspection`, `origin`, `responses`, `observe` (counters and
//! the audit trail) and `property` (nothing held is released except by its decision).

use super::fake::{Action, Dispatched, FakeHost, T0_MS};
use super::*;
use crate::config::tests::base_json;
use crate::headers::serialize_pairs;
use crate::keys::tests::fixture;
use crate::verify::tests::{good_claims, token};
use serde_json::{json, Value};

mod bodies;
mod introspection;
mod keys;
mod observe;
mod origin;
mod property;
mod responses;

const CTX: u32 = 10;

/// `/mcp` only, its issuer's keys fetched from `https://auth.example.com/jwks` through the
/// cluster `auth`.
fn remote_json() -> Value {
    let mut v = base_json();
    v["resources"].as_array_mut().unwrap().truncate(1);
    v["issuers"] = json!([{"issuer": "https://auth.example.com", "cluster": "auth",
        "jwks_uri": "https://auth.example.com/jwks"}]);
    v
}

/// `/mcp` with per-tool scopes (inline keys): `delete_all` needs `mcp:admin`.
fn tools_json(hold: bool) -> Value {
    let mut v = base_json();
    v["resources"][0]["tool_scopes"] = json!({"delete_all": ["mcp:admin"]});
    v["hold_headers_for_body"] = json!(hold);
    v["body_wait_ms"] = json!(1000);
    v
}

fn worker(config: &Value, host: FakeHost) -> Worker<FakeHost> {
    Worker::configure(host, config.to_string().as_bytes()).unwrap()
}

/// A token for /mcp signed by `key` under `kid`, valid for an hour, with `scope`.
fn bearer(key: &str, kid: &str, scope: &str) -> String {
    let mut claims = good_claims();
    claims["exp"] = json!(T0_MS / 1000 + 3600 * 24);
    claims["scope"] = json!(scope);
    let t = token(key, "RS256", json!({"alg": "RS256", "kid": kid}), claims);
    format!("Bearer {t}")
}

fn headers(method: &str, authorization: Option<&str>) -> Vec<u8> {
    let mut pairs = vec![
        (":method", method),
        (":path", "/mcp"),
        (":authority", "mcp.example.com"),
    ];
    if let Some(a) = authorization {
        pairs.push(("authorization", a));
    }
    serialize_pairs(&pairs)
}

fn jwks(names: &[&str]) -> Vec<u8> {
    let keys: Vec<Value> = names
        .iter()
        .map(|n| fixture(&format!("{n}.jwk.json")))
        .collect();
    json!({ "keys": keys }).to_string().into_bytes()
}

fn answer(w: &mut Worker<FakeHost>, call: &Dispatched, status: u16, body: &[u8]) {
    let response = CallResponse {
        headers: vec![(":status".into(), status.to_string())],
        body: body.to_vec(),
        body_size: body.len(),
    };
    w.on_http_call_response(None, call.token, &response);
}

/// The statuses the worker answered, by context, in order.
fn answered(actions: &[Action]) -> Vec<(u32, u16)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Respond {
                context, status, ..
            } => Some((*context, *status)),
            _ => None,
        })
        .collect()
}

fn resumed(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Resume(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// Ticks until the worker dispatched a call, and returns it.
fn tick_until_call(w: &mut Worker<FakeHost>) -> Dispatched {
    for _ in 0..5 {
        w.on_tick();
        if let Some(call) = w.host().take_calls().pop() {
            return call;
        }
        w.host().advance_ms(TICK_MS);
    }
    panic!("no call dispatched")
}

/// A worker whose issuer's keys (`names`) are loaded.
fn loaded(names: &[&str]) -> Worker<FakeHost> {
    let mut w = worker(&remote_json(), FakeHost::new());
    let call = tick_until_call(&mut w);
    answer(&mut w, &call, 200, &jwks(names));
    w
}

fn tool_call(name: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}})
        .to_string()
        .into_bytes()
}

/// Sends `body` in two chunks (and, with `trailers`, ends it with trailers).
fn send_body(w: &mut Worker<FakeHost>, ctx: u32, body: &[u8], trailers: bool) -> Vec<Flow> {
    let (a, b) = body.split_at(body.len() / 2);
    let size = w.host().buffer_body(ctx, a);
    let mut flows = vec![w.on_request_body(ctx, size, false)];
    let size = w.host().buffer_body(ctx, b);
    flows.push(w.on_request_body(ctx, size, !trailers));
    if trailers {
        flows.push(w.on_request_trailers(ctx));
    }
    flows
}

fn response_of(actions: &[Action]) -> (u16, Vec<(String, String)>, String) {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Respond {
                status,
                headers,
                body,
                ..
            } => Some((*status, headers.clone(), body.clone())),
            _ => None,
        })
        .expect("an answer")
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
