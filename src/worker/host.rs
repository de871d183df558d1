//! What the worker needs from the proxy, as one trait: the clock, data shared by every worker
//! (with its compare-and-swap token), HTTP calls out, counters, Envoy's `verify_signature`
//! foreign function, and what can be done to a request (resume it, answer it, edit its
//! headers, read its buffered body). The glue implements it with proxy-wasm host calls; a
//! fake host implements it for native tests (`worker::fake`). Every per-request call names
//! its request's context, so calls for a request held elsewhere need no hidden state.

use crate::metrics::CounterSink;

/// The proxy, as the worker sees it.
pub trait Host: CounterSink {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// The value stored under `key` by any worker, and its compare-and-swap token.
    fn get_shared(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);

    /// Stores `value` under `key` if its token is still `cas` (`None`: whatever it is);
    /// whether it was stored.
    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;

    /// Sends an HTTP request through the Envoy cluster `cluster` (`headers` include the
    /// pseudo-headers); its answer comes to `Worker::on_http_call_response` with the token
    /// returned here. `Err` carries the host's status when it refused.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Result<u32, u32>;

    /// The value of the environment variable `name` of the VM (Envoy
    /// `vm_config.environment_variables`, Istio `vmConfig.env`).
    fn env_var(&self, name: &str) -> Option<String>;

    /// Sets the gauge `name` (prefix included).
    fn set_gauge(&self, name: &str, value: u64);

    /// Calls the host's foreign function `name`.
    fn call_foreign(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, ForeignError>;

    /// Lets a held request go on (to the next filter, then the upstream).
    fn resume(&self, context: u32);

    /// Answers the request itself; nothing of it goes further.
    fn respond(&self, context: u32, status: u16, headers: &[(&str, &str)], body: &[u8]);

    fn set_request_header(&self, context: u32, name: &str, value: &str);

    fn remove_request_header(&self, context: u32, name: &str);

    /// The request body the host has buffered for `context`, at most `max` bytes. Only asked
    /// for the request whose body (or trailers) callback is running.
    fn request_body(&self, context: u32, max: usize) -> Vec<u8>;

    /// Sets the filter state `name` of `context` (proxy-wasm `set_property` with that one path
    /// element; Envoy keeps it as `wasm.<name>` for the access log and later filters).
    fn set_filter_state(&self, context: u32, name: &str, value: &str);

    /// The value of the response header `name` (lower case) of `context`, in its response
    /// headers callback.
    fn response_header(&self, context: u32, name: &str) -> Option<String>;

    /// Removes a response header of `context`, in its response headers callback.
    fn remove_response_header(&self, context: u32, name: &str);

    /// The response body the host holds for `context` (`size` bytes: the chunk, or all of
    /// it while it is buffered), in its response body callback.
    fn response_body(&self, context: u32, size: usize) -> Vec<u8>;

    /// Replaces the `size` bytes of response body the host holds for `context` with `body`.
    fn set_response_body(&self, context: u32, size: usize, body: &[u8]);
}

/// Why a foreign function gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignError {
    /// The host has no function of that name.
    NotFound,
    /// It refused with this status.
    Failed(u32),
}

/// What came back from an HTTP call: no `:status` means it timed out or the connection
/// failed. `body` is at most [`MAX_CALL_BODY`] + 1 bytes of the `body_size` the host had.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallResponse {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub body_size: usize,
}

/// The largest answer read whole; larger ones are refused (the glue reads one byte more, so
/// "too large" is seen).
pub const MAX_CALL_BODY: usize = crate::remote::MAX_DOCUMENT_BYTES;

impl CallResponse {
    /// The value of the response header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The HTTP status; `None` when there was no answer.
    pub fn status(&self) -> Option<u16> {
        self.header(":status").and_then(|s| s.parse().ok())
    }

    /// The body, unless the host had more than [`MAX_CALL_BODY`] bytes.
    pub fn whole_body(&self) -> Option<&[u8]> {
        (self.body_size <= MAX_CALL_BODY).then_some(self.body.as_slice())
    }
}

/// What the callback tells the host to do with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}
