//! The verified-token cache (README, design notes): a bounded per-worker map from a token to what its
//! signature vouched for, so an MCP session's repeated token costs a hash, not a signature
//! check. Claim checks (issuer, audience, expiry, scopes) still run on every hit, for the
//! resource at hand; an entry never outlives the token's `exp` nor the key that verified it.
//! A token an introspection answer vouched for (RFC 7662) is kept here too, no longer than that
//! answer is in the shared introspection cache: a repeated opaque token costs a hash, not a
//! shared-data read.
//!
//! The key is a SipHash of the whole token under a random key drawn when the worker starts
//! (`RandomState`), plus the token's last 16 bytes (the end of its signature). Nobody outside
//! can compute the hash, so nobody can aim a forged token at a cached one: a forgery must hit
//! the 64-bit hash of a cached token blind *and* end in that token's signature bytes, which
//! only someone holding the token knows. One pass over the token, a fraction of a SHA-256.

use crate::token::Signed;
use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::rc::Rc;

/// The keyed hash of the token and its last 16 bytes (zero-padded when shorter).
pub type Digest = (u64, [u8; 16]);

#[derive(Default)]
struct Inner {
    /// Each entry with the time (seconds since the epoch) it is good until.
    map: HashMap<Digest, (Rc<Signed>, f64)>,
    /// Insertion order, for first-in-first-out eviction; may hold digests already removed.
    order: VecDeque<Digest>,
    counts: Counts,
}

/// Lookups since the counters were last taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub hits: u64,
    pub misses: u64,
    /// Those of the hits that found a token an introspection answer vouched for: an
    /// introspection answered from this worker's memory.
    pub introspected_hits: u64,
}

/// Interior mutability: the cache is filled while a request is decided through a shared
/// reference; each VM is single-threaded.
pub struct TokenCache {
    capacity: usize,
    hasher: RandomState,
    inner: RefCell<Inner>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        // Allocated once, at full size: tables that grow and move leave holes in a wasm heap
        // that never shrinks. The map gets twice the room it holds: with evictions leaving
        // tombstones, a hash table more than half full grows when it runs out of free slots
        // instead of cleaning up in place.
        let inner = Inner {
            map: HashMap::with_capacity(2 * capacity),
            order: VecDeque::with_capacity(2 * capacity + 1),
            ..Inner::default()
        };
        TokenCache {
            capacity,
            hasher: RandomState::new(),
            inner: RefCell::new(inner),
        }
    }

    /// The cache key of a token.
    pub fn key(&self, token: &str) -> Digest {
        let bytes = token.as_bytes();
        let mut tail = [0u8; 16];
        let end = &bytes[bytes.len().saturating_sub(16)..];
        tail[..end.len()].copy_from_slice(end);
        (self.hasher.hash_one(token), tail)
    }

    /// The entry for a token still good at `now`, counted as a hit. A miss is counted by
    /// [`TokenCache::record_miss`] once the token is worth verifying.
    pub fn get(&self, key: &Digest, now: u64) -> Option<Rc<Signed>> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.inner.borrow_mut();
        match inner.map.get(key).cloned() {
            Some((entry, until)) if (now as f64) < until => {
                inner.counts.hits += 1;
                if entry.alg.is_none() {
                    inner.counts.introspected_hits += 1;
                }
                Some(entry)
            }
            Some(_) => {
                inner.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Counts a token that was not in the cache and goes on to verification.
    pub fn record_miss(&self) {
        if self.capacity > 0 {
            self.inner.borrow_mut().counts.misses += 1;
        }
    }

    /// Keeps `entry` until `until` (seconds since the epoch): a verified JWT until its `exp`
    /// plus the leeway, an introspected token until its answer leaves the shared cache.
    pub fn insert(&self, key: Digest, entry: Rc<Signed>, until: f64) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        while inner.map.len() >= self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.map.remove(&old);
                }
                None => break,
            }
        }
        if inner.order.len() >= 2 * self.capacity {
            // Entries removed on expiry leave their digests behind: drop them.
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|d| map.contains_key(d));
        }
        inner.order.push_back(key);
        inner.map.insert(key, (entry, until));
    }

    /// Forgets every token of `issuer` whose verifying key fails `keep` (a key set changed).
    pub fn retain_keys(&self, issuer: usize, keep: impl Fn(u64) -> bool) {
        self.inner
            .borrow_mut()
            .map
            .retain(|_, (e, _)| e.issuer != issuer || keep(e.key));
    }

    pub fn len(&self) -> usize {
        self.inner.borrow().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hits and misses since the last call (for counters).
    pub fn take_counts(&self) -> Counts {
        std::mem::take(&mut self.inner.borrow_mut().counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::Alg;

    fn entry(issuer: usize, key: u64, exp: f64) -> Rc<Signed> {
        Rc::new(Signed {
            alg: Some(Alg::Rs256),
            issuer,
            key,
            exp,
            facts: Default::default(),
            scopes: vec![],
            header_values: vec![],
            identity: Default::default(),
        })
    }

    fn digest(token: &str) -> Digest {
        // Tests use one fixed-key cache's keys: any cache's `key` is equally good here.
        thread_local!(static C: TokenCache = TokenCache::new(0));
        C.with(|c| c.key(token))
    }

    #[test]
    fn keys_differ_per_token_and_per_worker() {
        let a = TokenCache::new(1);
        let b = TokenCache::new(1);
        assert_eq!(a.key("t"), a.key("t"));
        assert_ne!(a.key("t"), a.key("u"));
        assert_ne!(a.key("t"), b.key("t"), "random keys per cache");
    }

    #[test]
    fn returns_entries_only_until_they_are_good_until() {
        let c = TokenCache::new(4);
        c.insert(digest("a"), entry(0, 1, 100.0), 160.0);
        assert!(c.get(&digest("a"), 159).is_some());
        assert!(c.get(&digest("a"), 160).is_none());
        assert!(c.is_empty(), "expired entries are dropped");
        c.record_miss();
        let counts = |hits, misses, introspected_hits| Counts {
            hits,
            misses,
            introspected_hits,
        };
        assert_eq!(c.take_counts(), counts(1, 1, 0));
        assert_eq!(c.take_counts(), counts(0, 0, 0));
        // A token an introspection answer vouched for counts as an introspection hit too.
        let introspected = Rc::new(Signed {
            alg: None,
            ..(*entry(0, 2, 100.0)).clone()
        });
        c.insert(digest("b"), introspected, 160.0);
        assert!(c.get(&digest("b"), 100).is_some());
        assert_eq!(c.take_counts(), counts(1, 0, 1));
    }

    #[test]
    fn stays_within_its_bound_by_evicting_the_oldest() {
        let c = TokenCache::new(3);
        for i in 0..1000 {
            c.insert(digest(&i.to_string()), entry(0, 1, 1e12), 1e12);
            assert!(c.len() <= 3);
        }
        assert!(c.get(&digest("999"), 0).is_some());
        assert!(c.get(&digest("0"), 0).is_none());
        assert!(c.inner.borrow().order.len() <= 6);
    }

    #[test]
    fn keeps_its_order_bounded_when_entries_expire_instead_of_being_evicted() {
        let c = TokenCache::new(3);
        for i in 0..1000 {
            let key = digest(&i.to_string());
            c.insert(key, entry(0, 1, 10.0), 10.0);
            assert!(c.get(&key, 100).is_none());
        }
        assert!(c.inner.borrow().order.len() <= 6);
    }

    #[test]
    fn forgets_tokens_verified_by_removed_keys_of_that_issuer_only() {
        let c = TokenCache::new(8);
        c.insert(digest("k1"), entry(0, 1, 1e12), 1e12);
        c.insert(digest("k2"), entry(0, 2, 1e12), 1e12);
        c.insert(digest("other"), entry(1, 1, 1e12), 1e12);
        c.retain_keys(0, |k| k == 2);
        assert!(c.get(&digest("k1"), 0).is_none());
        assert!(c.get(&digest("k2"), 0).is_some());
        assert!(c.get(&digest("other"), 0).is_some());
    }

    #[test]
    fn a_zero_capacity_cache_holds_nothing() {
        let c = TokenCache::new(0);
        c.insert(digest("a"), entry(0, 1, 1e12), 1e12);
        assert!(c.get(&digest("a"), 0).is_none());
    }
}
