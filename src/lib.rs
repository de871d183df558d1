//! `mcp-oauth-filter`: a proxy-wasm HTTP filter that makes an MCP server behind Envoy or Istio an
//! OAuth 2.1 resource server (MCP authorization, RFC 9728, RFC 6750, RFC 8707).
//!
//! Everything but the glue (`glue/`, the only code that imports `proxy_wasm`) is a pure core
//! that never calls the host: decisions take their inputs (including `now`) as arguments and
//! return values; the worker (`worker/`) talks to the proxy through one trait, implemented by
//! the glue and, in tests, by a fake host. README, "Design notes", draws the layout.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod alg;
pub mod cache;
pub mod challenge;
pub mod config;
pub mod cors;
pub mod decide;
pub mod extract;
pub mod headers;
pub mod hostsig;
pub mod introspect;
pub mod json;
pub mod keyring;
pub mod keys;
pub mod mcp;
pub mod metadata;
pub mod metrics;
pub mod paths;
pub mod reason;
pub mod remote;
pub mod response;
pub mod route;
pub mod scopes;
pub mod sse;
pub mod token;
pub mod tools_list;
pub mod url;
pub mod verify;
pub mod worker;

#[cfg(target_arch = "wasm32")]
mod glue;
