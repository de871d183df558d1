//! The glue: the only code (with `lib.rs`) that talks to the proxy-wasm host. The root context
//! compiles the configuration once; each HTTP context gathers a request view, calls
//! [`decide`], and applies the decision. No decision logic lives here.

use crate::config::Config;
use crate::decide::{decide, Decision, Outcome, Request, Response, ALLOWED_METRIC};
use crate::keyring::KeyRing;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MetricType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

const METRIC_PREFIX: &str = "mcp_oauth_";

/// Counters, defined with the host on first use and remembered per VM (SPEC §8).
#[derive(Default)]
struct Metrics {
    ids: RefCell<HashMap<String, u32>>,
}

impl Metrics {
    fn increment(&self, name: &str) {
        let mut ids = self.ids.borrow_mut();
        let id = match ids.get(name) {
            Some(id) => *id,
            None => match hostcalls::define_metric(
                MetricType::Counter,
                &format!("{METRIC_PREFIX}{name}"),
            ) {
                Ok(id) => *ids.entry(name.to_string()).or_insert(id),
                Err(_) => return,
            },
        };
        let _ = hostcalls::increment_metric(id, 1);
    }
}

/// State shared by the root context and the HTTP contexts of one VM (one worker).
struct Shared {
    config: Config,
    keys: RefCell<KeyRing>,
    metrics: Metrics,
}

#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let text = self.get_plugin_configuration().unwrap_or_default();
        match Config::from_json(&text) {
            Ok(config) => {
                for warning in &config.warnings {
                    log::warn!("mcp-oauth-filter: configuration: {warning}");
                }
                log::info!(
                    "mcp-oauth-filter: configured {} resource(s), {} issuer(s)",
                    config.resources.len(),
                    config.issuers.len()
                );
                let keys = RefCell::new(KeyRing::new(&config));
                self.shared = Some(Rc::new(Shared {
                    config,
                    keys,
                    metrics: Metrics::default(),
                }));
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            shared: self.shared.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    /// `None` only if the configuration was refused and the host created a context anyway.
    shared: Option<Rc<Shared>>,
}

impl Context for Http {}

/// The request headers the filter reads, fetched in one host call. All `Authorization`
/// values are kept: asking the host for one header returns only its first value.
#[derive(Default)]
struct Headers {
    method: String,
    path: String,
    authority: String,
    authorization: Vec<String>,
    origin: Option<String>,
    request_method: Option<String>,
    /// Whether the client sent any header the filter sets from claims.
    has_claim_header: bool,
}

impl Headers {
    fn read(ctx: &Http, config: &Config) -> Headers {
        let mut h = Headers::default();
        for (name, value) in ctx.get_http_request_headers_bytes() {
            // Header values may hold any byte; lossy decoding keeps the ASCII structure.
            let value = || String::from_utf8_lossy(&value).into_owned();
            match name.as_str() {
                ":method" => h.method = value(),
                ":path" => h.path = value(),
                ":authority" => h.authority = value(),
                "authorization" => h.authorization.push(value()),
                "origin" => h.origin = Some(value()),
                "access-control-request-method" => h.request_method = Some(value()),
                other => h.has_claim_header |= config.claim_headers.iter().any(|(c, _)| c == other),
            }
        }
        h
    }

    fn request(&self) -> Request<'_> {
        Request {
            method: &self.method,
            path: &self.path,
            authority: &self.authority,
            authorization: self.authorization.iter().map(String::as_str).collect(),
            origin: self.origin.as_deref(),
            access_control_request_method: self.request_method.as_deref(),
        }
    }
}

impl Http {
    fn now(&self) -> u64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn respond(&self, response: &Response<'_>) {
        let headers: Vec<(&str, &str)> = response
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_ref()))
            .collect();
        let body = (!response.body.is_empty()).then_some(response.body.as_bytes());
        self.send_http_response(u32::from(response.status), headers, body);
    }

    fn remove_claim_headers(&self, config: &Config) {
        for (header, _) in &config.claim_headers {
            self.set_http_request_header(header, None);
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            self.send_http_response(
                503,
                vec![("content-type", "application/json")],
                Some(br#"{"error":"temporarily_unavailable","error_description":"authorization filter not configured"}"#),
            );
            return Action::Pause;
        };
        let config = &shared.config;
        let headers = Headers::read(self, config);
        let keys = shared.keys.borrow();
        let decision = decide(config, &*keys, &headers.request(), self.now());
        match decision {
            Decision::PassThrough => {
                if headers.has_claim_header {
                    self.remove_claim_headers(config);
                }
                Action::Continue
            }
            Decision::Allow(allow) => {
                if headers.has_claim_header {
                    self.remove_claim_headers(config);
                }
                if allow.strip_authorization {
                    self.set_http_request_header("authorization", None);
                }
                for (name, value) in &allow.set_headers {
                    self.set_http_request_header(name, Some(value));
                }
                shared.metrics.increment(ALLOWED_METRIC);
                Action::Continue
            }
            Decision::Respond(response) => {
                if let Outcome::Denied(reason) = response.outcome {
                    log::debug!(
                        "mcp-oauth-filter: denied {} {} with {}: {reason}",
                        headers.method,
                        crate::paths::split_query(&headers.path).0,
                        response.status
                    );
                }
                shared.metrics.increment(&response.outcome.metric());
                self.respond(&response);
                Action::Pause
            }
            Decision::WaitForKeys(issuer) => {
                log::warn!(
                    "mcp-oauth-filter: keys for issuer {:?} are not available",
                    config.issuers.get(issuer).map(|i| i.issuer.as_str())
                );
                shared.metrics.increment("requests_denied_keys_unavailable");
                self.send_http_response(
                    503,
                    vec![("content-type", "application/json"), ("retry-after", "5")],
                    Some(br#"{"error":"temporarily_unavailable","error_description":"signing keys not available yet"}"#),
                );
                Action::Pause
            }
        }
    }
}
