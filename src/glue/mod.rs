//! The glue: the proxy-wasm SDK's callbacks, forwarded to the worker (`worker`), and the
//! worker's host made of host calls (`host`). This folder alone imports `proxy_wasm`; nothing
//! here decides anything.
//!
//! One root context per VM owns the worker; each HTTP context reaches it through a shared
//! handle. Envoy defers what a host call asks of another stream until the VM call returns, so
//! no callback runs inside another; should a host ever re-enter, the request is held rather
//! than let through.

mod host;

use crate::headers::header_pairs;
use crate::worker::{CallResponse, Flow, Worker, MAX_CALL_BODY, TICK_MS};
use host::ProxyHost;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root::new(context_id))
    });
}}

type Shared = Rc<RefCell<Worker<ProxyHost>>>;

pub struct Root {
    context_id: u32,
    worker: Option<Shared>,
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        Root {
            context_id,
            worker: None,
        }
    }

    fn with_worker(&self, f: impl FnOnce(&mut Worker<ProxyHost>)) {
        if let Some(mut worker) = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok()) {
            worker.host().enter(self.context_id);
            f(&mut worker);
        }
    }
}

/// The answer of an HTTP call, read in its callback.
fn call_response(body_size: usize) -> CallResponse {
    let pairs = host::call_response_header_pairs();
    let headers = header_pairs(&pairs)
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    let limit = body_size.min(MAX_CALL_BODY + 1);
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, limit)
        .ok()
        .flatten()
        .unwrap_or_default();
    CallResponse {
        headers,
        body,
        body_size,
    }
}

/// The SDK drops the root context when the host deletes it: the plugin instance is going
/// away (Envoy replaced its configuration, or drains), and its fetches with it.
impl Drop for Root {
    fn drop(&mut self) {
        self.with_worker(Worker::on_shutdown);
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.with_worker(|worker| {
            worker.on_http_call_response(None, token_id, &call_response(body_size));
        });
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        host::follow_host_log_level();
        let text = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        match Worker::configure(ProxyHost::new(self.context_id), &text) {
            Ok(worker) => {
                self.worker = Some(Rc::new(RefCell::new(worker)));
                self.set_tick_period(Duration::from_millis(TICK_MS));
                true
            }
            Err(e) => {
                log::error!(
                    "mcp-oauth-filter: invalid configuration: {e} [{}]",
                    e.kind.code()
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        host::follow_host_log_level();
        self.with_worker(Worker::on_tick);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            context_id,
            worker: self.worker.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    context_id: u32,
    /// `None` only if the configuration was refused and the host created a context anyway.
    worker: Option<Shared>,
}

impl Http {
    /// Runs a request callback on the worker. Without one the request gets 503; re-entered,
    /// it is held: fail closed either way.
    fn run(&self, f: impl FnOnce(&mut Worker<ProxyHost>, u32) -> Flow) -> Action {
        let Some(worker) = &self.worker else {
            host::send_local_response(
                503,
                &[("content-type", "application/json")],
                br#"{"error":"temporarily_unavailable","error_description":"authorization filter not configured"}"#,
            );
            return Action::Pause;
        };
        let Ok(mut worker) = worker.try_borrow_mut() else {
            log::error!("mcp-oauth-filter: a request callback re-entered the worker: held");
            return Action::Pause;
        };
        worker.host().enter(self.context_id);
        match f(&mut worker, self.context_id) {
            Flow::Continue => Action::Continue,
            Flow::Pause => Action::Pause,
        }
    }
}

/// The SDK hands an HTTP call's answer to the context whose callback sent it: a request's,
/// for an introspection it needed.
impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(mut worker) = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok()) {
            worker.host().enter(self.context_id);
            worker.on_http_call_response(
                Some(self.context_id),
                token_id,
                &call_response(body_size),
            );
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.run(|worker, context| {
            worker.on_request_headers(context, &host::request_header_pairs(), end_of_stream)
        })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.run(|worker, context| worker.on_request_body(context, body_size, end_of_stream))
    }

    /// Trailers end the body; the SDK's default would continue a held request here.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.run(|worker, context| worker.on_request_trailers(context))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.run(|worker, context| worker.on_response_headers(context, end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.run(|worker, context| worker.on_response_body(context, body_size, end_of_stream))
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.run(|worker, context| worker.on_response_trailers(context))
    }
}

/// The SDK drops the context in `proxy_on_delete`, which the host calls for every stream (the
/// module exports no `proxy_on_log`: see `tools/trim_exports.py`): the one place a finished
/// request is forgotten.
impl Drop for Http {
    fn drop(&mut self) {
        if let Some(mut worker) = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok()) {
            worker.on_done(self.context_id);
        }
    }
}
