//! `mcp-oauth-filter`: a proxy-wasm HTTP filter that makes an MCP server behind Envoy or Istio an
//! OAuth 2.1 resource server (MCP authorization, RFC 9728, RFC 6750, RFC 8707).
//!
//! Everything but the glue in `filter` is a pure core that never calls the host: it takes its
//! inputs (including `now`) as arguments and returns values, so it is tested natively. Only this
//! file and `filter.rs` import `proxy_wasm`.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod alg;
pub mod cache;
pub mod challenge;
pub mod config;
pub mod cors;
pub mod decide;
pub mod extract;
pub mod hostsig;
pub mod json;
pub mod keyring;
pub mod keys;
pub mod mcp;
pub mod metadata;
pub mod paths;
pub mod reason;
pub mod remote;
pub mod response;
pub mod route;
pub mod scopes;
pub mod url;
pub mod verify;

#[cfg(target_arch = "wasm32")]
mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::Root::new(context_id))
    });
}}
