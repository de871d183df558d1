//! The floors of the benchmark: what any proxy-wasm HTTP filter costs on Envoy's V8 runtime.
//!
//! - No configuration: the **no-op** floor. It reads one request header (`authorization`) and
//!   returns `Continue`.
//! - A configuration of reply rules: the **local-reply** floor, the least a filter that
//!   answers a request itself must do. It reads `:path` and sends the first matching rule's
//!   response, with no other logic. The bench gives it the responses our filter sends for the
//!   401 and metadata scenarios, so the two differ only in how each decides.
//!
//! A rule is one line of tab-separated fields: a path prefix, the status, the body, then one
//! `name: value` field per response header.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

struct Reply {
    prefix: String,
    status: u32,
    body: String,
    headers: Vec<(String, String)>,
}

/// Reads the rules; a line that is not a rule is skipped (this is a benchmark helper: the
/// bench checks the floor's answers before it measures).
fn parse_rules(text: &str) -> Vec<Reply> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let prefix = fields.next()?.to_string();
            let status = fields.next()?.parse().ok()?;
            let body = fields.next()?.to_string();
            let headers = fields
                .filter_map(|h| h.split_once(": "))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            Some(Reply {
                prefix,
                status,
                body,
                headers,
            })
        })
        .collect()
}

/// Each plugin has its own root context, so two listeners may share this module's VM.
#[derive(Default)]
struct Root {
    replies: Rc<Vec<Reply>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.replies = Rc::new(parse_rules(&String::from_utf8_lossy(&config)));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.replies.is_empty() {
            Some(Box::new(Noop))
        } else {
            Some(Box::new(LocalReply(self.replies.clone())))
        }
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let header = self.get_http_request_header("authorization");
        // Keep the read observable so it is not optimised away.
        std::hint::black_box(header);
        Action::Continue
    }
}

struct LocalReply(Rc<Vec<Reply>>);

impl Context for LocalReply {}

impl HttpContext for LocalReply {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let Some(reply) = self.0.iter().find(|r| path.starts_with(&r.prefix)) else {
            return Action::Continue;
        };
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.send_http_response(reply.status, headers, Some(reply.body.as_bytes()));
        Action::Pause
    }
}
