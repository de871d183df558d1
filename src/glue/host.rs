//! The worker's [`Host`], made of proxy-wasm host calls.
//!
//! The SDK's wrappers panic on any status they do not expect (a header map already sent
//! upstream, a stream already answered), and a panic kills the VM for every request on that
//! worker: the calls that can legitimately fail go through the small shims below, which return
//! the status instead. Calls for a request other than the one whose callback is running switch
//! the effective context first (the host restores it when the callback returns). An HTTP
//! call's answer comes back to the context whose callback sent it (the SDK's choice).

use crate::headers::serialize_pairs;
use crate::metrics::CounterSink;
use crate::worker::{ForeignError, Host};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MetricType, Status};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

const REQUEST_HEADERS: u32 = 0; // MapType::HttpRequestHeaders
const RESPONSE_HEADERS: u32 = 2; // MapType::HttpResponseHeaders
const RESPONSE_BODY: u32 = 1; // BufferType::HttpResponseBody
const CALL_RESPONSE_HEADERS: u32 = 6; // MapType::HttpCallResponseHeaders
const HTTP_REQUEST: u32 = 0; // StreamType::HttpRequest

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_call_foreign_function(
        name_data: *const u8,
        name_size: usize,
        args_data: *const u8,
        args_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
}

/// The current request's headers in the proxy-wasm map encoding, in one host call.
pub fn request_header_pairs() -> Vec<u8> {
    map_pairs(REQUEST_HEADERS)
}

/// The headers of the HTTP call answer being handled, in the same encoding.
pub fn call_response_header_pairs() -> Vec<u8> {
    map_pairs(CALL_RESPONSE_HEADERS)
}

/// A header map in one host call; empty if the host has none to give.
fn map_pairs(map_type: u32) -> Vec<u8> {
    // SAFETY: the out-pointers are `host_buffer`'s.
    host_buffer(|data, size| unsafe { proxy_get_header_map_pairs(map_type, data, size) })
        .unwrap_or_default()
}

/// Runs a host call that returns a buffer through out-pointers: the buffer when it answered
/// 0, else its status.
fn host_buffer(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Vec<u8>, u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    let status = call(&mut data, &mut size);
    if status != 0 {
        return Err(status);
    }
    if data.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: on success the host wrote a buffer it allocated with this module's allocator
    // (`proxy_on_memory_allocate`), of `size` bytes, which we now own.
    Ok(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Answers the current request.
pub fn send_local_response(status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let headers = serialize_pairs(headers);
    // SAFETY: pointers and lengths of live slices; the host copies them.
    unsafe {
        proxy_send_local_response(
            u32::from(status),
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        );
    }
}

/// Follows the host's log level, so a disabled level costs nothing per request (no
/// formatting, no host call); re-read every tick, so `/logging?wasm=debug` takes effect.
pub fn follow_host_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

/// The proxy, for one worker's VM.
pub struct ProxyHost {
    /// The context host calls apply to right now.
    effective: Cell<u32>,
    gauges: RefCell<HashMap<String, u32>>,
}

impl ProxyHost {
    pub fn new(root_context_id: u32) -> ProxyHost {
        ProxyHost {
            effective: Cell::new(root_context_id),
            gauges: RefCell::default(),
        }
    }

    /// A callback of `context` began: the host made it the effective context.
    pub fn enter(&self, context: u32) {
        self.effective.set(context);
    }

    /// Makes `context` the effective one; false when the host no longer knows it (then the
    /// call meant for it is not made at all, rather than landing on another request).
    fn switch(&self, context: u32) -> bool {
        if self.effective.get() == context {
            return true;
        }
        if hostcalls::set_effective_context(context).is_err() {
            return false;
        }
        self.effective.set(context);
        true
    }
}

impl CounterSink for ProxyHost {
    fn define_counter(&self, name: &str) -> Option<u32> {
        hostcalls::define_metric(MetricType::Counter, name).ok()
    }

    fn add_to_counter(&self, id: u32, n: u64) {
        let _ = hostcalls::increment_metric(id, n.min(i64::MAX as u64) as i64);
    }
}

impl Host for ProxyHost {
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn get_shared(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Result<u32, u32> {
        hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            body,
            vec![],
            Duration::from_millis(timeout_ms),
        )
        .map_err(|status| status as u32)
    }

    fn env_var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn set_gauge(&self, name: &str, value: u64) {
        let known = self.gauges.borrow().get(name).copied();
        let id = known.or_else(|| {
            let id = hostcalls::define_metric(MetricType::Gauge, name).ok()?;
            self.gauges.borrow_mut().insert(name.to_string(), id);
            Some(id)
        });
        if let Some(id) = id {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn call_foreign(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, ForeignError> {
        // SAFETY: pointers and lengths of live slices, which the host copies.
        host_buffer(|data, size| unsafe {
            let (n, a) = (name.as_ptr(), args.as_ptr());
            proxy_call_foreign_function(n, name.len(), a, args.len(), data, size)
        })
        .map_err(|status| match status {
            s if s == Status::NotFound as u32 => ForeignError::NotFound,
            s => ForeignError::Failed(s),
        })
    }

    fn resume(&self, context: u32) {
        if !self.switch(context) {
            return;
        }
        // SAFETY: no pointers.
        unsafe {
            proxy_continue_stream(HTTP_REQUEST);
        }
    }

    fn respond(&self, context: u32, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        if self.switch(context) {
            send_local_response(status, headers, body);
        }
    }

    fn set_request_header(&self, context: u32, name: &str, value: &str) {
        if !self.switch(context) {
            return;
        }
        // SAFETY: as above.
        unsafe {
            proxy_replace_header_map_value(
                REQUEST_HEADERS,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            );
        }
    }

    fn remove_request_header(&self, context: u32, name: &str) {
        if !self.switch(context) {
            return;
        }
        // SAFETY: as above.
        unsafe {
            proxy_remove_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len());
        }
    }

    fn set_filter_state(&self, context: u32, name: &str, value: &str) {
        if !self.switch(context) {
            return;
        }
        // SAFETY: pointers and lengths of live slices; the host copies them. A path of one
        // element is that element's bytes.
        unsafe {
            proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len());
        }
    }

    fn response_header(&self, context: u32, name: &str) -> Option<String> {
        if !self.switch(context) {
            return None;
        }
        // SAFETY: the key is a live slice the host copies; the out-pointers are `host_buffer`'s.
        host_buffer(|data, size| unsafe {
            proxy_get_header_map_value(RESPONSE_HEADERS, name.as_ptr(), name.len(), data, size)
        })
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
    }

    fn remove_response_header(&self, context: u32, name: &str) {
        if !self.switch(context) {
            return;
        }
        // SAFETY: as above.
        unsafe {
            proxy_remove_header_map_value(RESPONSE_HEADERS, name.as_ptr(), name.len());
        }
    }

    fn response_body(&self, context: u32, size: usize) -> Vec<u8> {
        if !self.switch(context) {
            return Vec::new();
        }
        // SAFETY: the out-pointers are `host_buffer`'s; the host clamps the read to what it holds.
        host_buffer(|data, got| unsafe {
            proxy_get_buffer_bytes(RESPONSE_BODY, 0, size, data, got)
        })
        .unwrap_or_default()
    }

    fn set_response_body(&self, context: u32, size: usize, body: &[u8]) {
        if !self.switch(context) {
            return;
        }
        // SAFETY: pointer and length of a live slice; the host copies it. Replacing from 0
        // with at least the held size replaces it all.
        let status =
            unsafe { proxy_set_buffer_bytes(RESPONSE_BODY, 0, size, body.as_ptr(), body.len()) };
        if status != 0 {
            log::warn!(
                "mcp-oauth-filter: the host refused to replace a response body (status {status})"
            );
        }
    }

    fn request_body(&self, context: u32, max: usize) -> Vec<u8> {
        if !self.switch(context) {
            return Vec::new();
        }
        // The host clamps a read to what it has buffered.
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, max)
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}
