//! Requests the worker holds or has answered, by context id: one map, one enum per request.
//! A request is in it from the moment the filter holds it (or answers it) until the host
//! drops its context, so a finished request is forgotten in one place, and combinations that
//! make no sense (waiting for keys and for a body at once) cannot be written down.
//! A request that is not in the map was let go: its later callbacks continue. One let go with
//! `tools/list` calls stays until its response is done, so that response can be rewritten.

use crate::config::IssuerId;
use crate::decide::BodyCheck;
use crate::headers::RequestHead;
use crate::introspect::Digest;
use crate::tools_list::{ListFilter, ResponseRewrite};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Why a request is in the map.
#[derive(Debug)]
pub enum Pending {
    /// Held until its token can be decided: its issuer's keys change (first load, a refetch for
    /// an unknown `kid`, a discovered introspection endpoint) or an introspection answer
    /// comes, or its wait runs out.
    Token(TokenWait),
    /// Its body decides: held (or, headers gone first, its body held) until the body is whole.
    Body(BodyWait),
    /// Answered by the filter: nothing of it may go on.
    Answered,
    /// Let go, with `tools/list` calls whose results its response must have filtered.
    Listing(Listing),
}

/// Where the response of a request with `tools/list` calls is.
#[derive(Debug)]
pub enum Listing {
    /// Its headers have not come yet.
    Requested(ListFilter),
    /// Its body is being rewritten.
    Responding(Box<ResponseRewrite>),
}

#[derive(Debug)]
pub struct TokenWait {
    pub awaiting: Awaiting,
    /// Index of the resource in `Config::resources`.
    pub resource: usize,
    pub deadline_ms: u64,
    pub head: RequestHead,
    pub body: BodySoFar,
}

/// What a held token waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// The issuer's fetch record to move past this generation.
    Keys { issuer: IssuerId, generation: u64 },
    /// The answer of the introspection call about this token (by its digest).
    Answer { issuer: IssuerId, digest: Digest },
}

/// What of a held request's body has reached the filter (kept only where the body decides).
#[derive(Debug, Default)]
pub enum BodySoFar {
    #[default]
    Nothing,
    /// Chunks came: the host hands bodies to a filter that holds the headers.
    Partial,
    Whole(Vec<u8>),
}

#[derive(Debug)]
pub struct BodyWait {
    pub check: BodyCheck,
    pub head: RequestHead,
    /// The headers are held too (else they went upstream first).
    pub headers_held: bool,
    /// A chunk of the body reached the filter.
    pub seen: bool,
    pub deadline_ms: u64,
}

/// Context ids come from the host, not from clients: no need for a DoS-resistant hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Every request the worker holds or has answered.
#[derive(Debug, Default)]
pub struct PendingRequests {
    map: HashMap<u32, Pending, BuildHasherDefault<IdHasher>>,
}

impl PendingRequests {
    pub fn get_mut(&mut self, context: u32) -> Option<&mut Pending> {
        self.map.get_mut(&context)
    }

    pub fn insert(&mut self, context: u32, pending: Pending) {
        self.map.insert(context, pending);
    }

    pub fn remove(&mut self, context: u32) -> Option<Pending> {
        self.map.remove(&context)
    }

    /// Marks a request answered (whatever it was waiting for).
    pub fn answered(&mut self, context: u32) {
        self.map.insert(context, Pending::Answered);
    }

    /// Forgets a finished request.
    pub fn forget(&mut self, context: u32) {
        if !self.map.is_empty() {
            self.map.remove(&context);
        }
    }

    /// The held tokens that `due` says must be decided again.
    pub fn token_waits(&self, mut due: impl FnMut(&TokenWait) -> bool) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .map
            .iter()
            .filter_map(|(id, p)| match p {
                Pending::Token(w) if due(w) => Some(*id),
                _ => None,
            })
            .collect();
        ids.sort_unstable(); // deterministic: oldest context first
        ids
    }

    /// The requests whose body wait ran out at `now_ms`.
    pub fn body_waits_past(&self, now_ms: u64) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .map
            .iter()
            .filter_map(|(id, p)| match p {
                Pending::Body(w) if now_ms >= w.deadline_ms => Some(*id),
                _ => None,
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
