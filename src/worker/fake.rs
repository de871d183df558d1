//! A host for native tests: a clock the test moves, shared data that several fake workers can
//! share (as Envoy's workers do), HTTP calls recorded for the test to answer, and every action
//! on a request recorded in order.

use super::host::{ForeignError, Host};
use crate::metrics::CounterSink;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// The tests' "now" (2027-01-15T08:00:00Z) in milliseconds: `verify::tests::NOW` × 1000.
pub const T0_MS: u64 = 1_800_000_000_000;

/// What the worker did to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Resume(u32),
    Respond {
        context: u32,
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    SetHeader(u32, String, String),
    RemoveHeader(u32, String),
    RemoveResponseHeader(u32, String),
    FilterState(u32, String, String),
}

/// An HTTP call the worker dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    pub token: u32,
    pub cluster: String,
    pub method: String,
    pub url: String,
    pub timeout_ms: u64,
}

/// Data shared by every worker of one fake proxy.
#[derive(Debug, Default)]
struct Store {
    data: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

/// The fake proxy, one per worker; [`FakeHost::worker_beside`] makes another worker of the
/// same proxy.
#[derive(Debug)]
pub struct FakeHost {
    clock: Rc<Cell<u64>>,
    store: Rc<RefCell<Store>>,
    next_token: Rc<Cell<u32>>,
    calls: RefCell<Vec<Dispatched>>,
    refuse_calls: Cell<bool>,
    actions: RefCell<Vec<Action>>,
    bodies: RefCell<HashMap<u32, Vec<u8>>>,
    response_headers: RefCell<HashMap<u32, Vec<(String, String)>>>,
    response_bodies: RefCell<HashMap<u32, Vec<u8>>>,
    env: RefCell<HashMap<String, String>>,
    counter_names: RefCell<Vec<String>>,
    counters: RefCell<BTreeMap<String, u64>>,
    gauges: RefCell<BTreeMap<String, u64>>,
}

impl Default for FakeHost {
    fn default() -> FakeHost {
        FakeHost::new()
    }
}

impl FakeHost {
    /// A proxy at [`T0_MS`], without Envoy's `verify_signature`.
    pub fn new() -> FakeHost {
        FakeHost {
            clock: Rc::new(Cell::new(T0_MS)),
            store: Rc::default(),
            next_token: Rc::new(Cell::new(1)),
            calls: RefCell::default(),
            refuse_calls: Cell::new(false),
            actions: RefCell::default(),
            bodies: RefCell::default(),
            response_headers: RefCell::default(),
            response_bodies: RefCell::default(),
            env: RefCell::default(),
            counter_names: RefCell::default(),
            counters: RefCell::default(),
            gauges: RefCell::default(),
        }
    }

    /// Another worker of the same proxy: same clock, same shared data, its own calls,
    /// actions and counters.
    pub fn worker_beside(&self) -> FakeHost {
        FakeHost {
            clock: self.clock.clone(),
            store: self.store.clone(),
            next_token: self.next_token.clone(),
            ..FakeHost::new()
        }
    }

    /// The VM's environment has `name` = `value`.
    pub fn with_env(self, name: &str, value: &str) -> FakeHost {
        self.env
            .borrow_mut()
            .insert(name.to_string(), value.to_string());
        self
    }

    /// The host refuses every HTTP call (an undefined cluster).
    pub fn refusing_calls(self) -> FakeHost {
        self.refuse_calls.set(true);
        self
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.get()
    }

    pub fn advance_ms(&self, ms: u64) {
        self.clock.set(self.clock.get() + ms);
    }

    /// The request body the proxy has buffered for `context` grows by `chunk`.
    pub fn buffer_body(&self, context: u32, chunk: &[u8]) -> usize {
        let mut bodies = self.bodies.borrow_mut();
        let body = bodies.entry(context).or_default();
        body.extend_from_slice(chunk);
        body.len()
    }

    /// The upstream answered `context` with these headers.
    pub fn response_headers(&self, context: u32, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.response_headers.borrow_mut().insert(context, headers);
    }

    /// The response body the host holds for `context` is now `body`; its size.
    pub fn hold_response_body(&self, context: u32, body: &[u8]) -> usize {
        self.response_bodies
            .borrow_mut()
            .insert(context, body.to_vec());
        body.len()
    }

    /// The response body the host holds for `context`, as the worker left it.
    pub fn held_response_body(&self, context: u32) -> Vec<u8> {
        self.response_bodies
            .borrow()
            .get(&context)
            .cloned()
            .unwrap_or_default()
    }

    /// The calls dispatched since the last look.
    pub fn take_calls(&self) -> Vec<Dispatched> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }

    /// The actions on requests since the last look.
    pub fn take_actions(&self) -> Vec<Action> {
        std::mem::take(&mut *self.actions.borrow_mut())
    }

    /// A counter's value as the host shows it (0 when not defined).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.borrow().get(name).copied().unwrap_or(0)
    }

    /// Whether the counter was defined with the host.
    pub fn has_counter(&self, name: &str) -> bool {
        self.counters.borrow().contains_key(name)
    }

    pub fn gauge(&self, name: &str) -> Option<u64> {
        self.gauges.borrow().get(name).copied()
    }

    pub fn shared(&self, key: &str) -> Option<Vec<u8>> {
        self.store.borrow().data.get(key).map(|(v, _)| v.clone())
    }
}

impl CounterSink for FakeHost {
    fn define_counter(&self, name: &str) -> Option<u32> {
        let mut names = self.counter_names.borrow_mut();
        if let Some(i) = names.iter().position(|n| n == name) {
            return Some(i as u32);
        }
        names.push(name.to_string());
        self.counters.borrow_mut().insert(name.to_string(), 0);
        Some(names.len() as u32 - 1)
    }

    fn add_to_counter(&self, id: u32, n: u64) {
        let Some(name) = self.counter_names.borrow().get(id as usize).cloned() else {
            return;
        };
        *self.counters.borrow_mut().entry(name).or_default() += n;
    }
}

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        self.clock.get()
    }

    fn get_shared(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.store.borrow().data.get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut store = self.store.borrow_mut();
        let current = store.data.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != current {
            return false;
        }
        store.next_cas += 1;
        let next = store.next_cas;
        store.data.insert(key.to_string(), (value.to_vec(), next));
        true
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        _body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Result<u32, u32> {
        if self.refuse_calls.get() {
            return Err(6); // proxy-wasm's BadArgument: no such cluster
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("", |(_, v)| *v)
        };
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        self.calls.borrow_mut().push(Dispatched {
            token,
            cluster: cluster.to_string(),
            method: get(":method").to_string(),
            url: format!("{}://{}{}", get(":scheme"), get(":authority"), get(":path")),
            timeout_ms,
        });
        Ok(token)
    }

    fn env_var(&self, name: &str) -> Option<String> {
        self.env.borrow().get(name).cloned()
    }

    fn set_gauge(&self, name: &str, value: u64) {
        self.gauges.borrow_mut().insert(name.to_string(), value);
    }

    fn call_foreign(&self, _name: &str, _args: &[u8]) -> Result<Vec<u8>, ForeignError> {
        Err(ForeignError::NotFound)
    }

    fn resume(&self, context: u32) {
        self.actions.borrow_mut().push(Action::Resume(context));
    }

    fn respond(&self, context: u32, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.actions.borrow_mut().push(Action::Respond {
            context,
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }

    fn set_request_header(&self, context: u32, name: &str, value: &str) {
        self.actions.borrow_mut().push(Action::SetHeader(
            context,
            name.to_string(),
            value.to_string(),
        ));
    }

    fn remove_request_header(&self, context: u32, name: &str) {
        self.actions
            .borrow_mut()
            .push(Action::RemoveHeader(context, name.to_string()));
    }

    fn request_body(&self, context: u32, max: usize) -> Vec<u8> {
        let bodies = self.bodies.borrow();
        let body = bodies.get(&context).map_or(&[][..], Vec::as_slice);
        body[..body.len().min(max)].to_vec()
    }

    fn set_filter_state(&self, context: u32, name: &str, value: &str) {
        self.actions.borrow_mut().push(Action::FilterState(
            context,
            name.to_string(),
            value.to_string(),
        ));
    }

    fn response_header(&self, context: u32, name: &str) -> Option<String> {
        let headers = self.response_headers.borrow();
        let headers = headers.get(&context)?;
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn remove_response_header(&self, context: u32, name: &str) {
        if let Some(headers) = self.response_headers.borrow_mut().get_mut(&context) {
            headers.retain(|(n, _)| n != name);
        }
        self.actions
            .borrow_mut()
            .push(Action::RemoveResponseHeader(context, name.to_string()));
    }

    fn response_body(&self, context: u32, size: usize) -> Vec<u8> {
        let body = self.held_response_body(context);
        body[..body.len().min(size)].to_vec()
    }

    fn set_response_body(&self, context: u32, size: usize, body: &[u8]) {
        let mut bodies = self.response_bodies.borrow_mut();
        let held = bodies.entry(context).or_default();
        assert_eq!(held.len(), size, "the worker replaces what the host holds");
        *held = body.to_vec();
    }
}
