//! The key sets a worker verifies with, one slot per configured issuer: inline keys are there
//! from the start; fetched keys (README, Remote keys) fill their slot when the shared record
//! says a new version is stored, together with the worker's copy of that record.

use crate::cache::TokenCache;
use crate::config::{Config, IssuerId, KeySource};
use crate::keys::KeySet;
use crate::remote::{FetchPolicy, FetchState};
use crate::verify::KeyStore;

#[derive(Debug, Clone, Default)]
struct Slot {
    set: Option<KeySet>,
    /// The last copy of the shared fetch record (fetched keys only).
    state: FetchState,
    policy: Option<FetchPolicy>,
}

pub struct KeyRing {
    slots: Vec<Slot>,
}

impl KeyRing {
    pub fn new(config: &Config) -> KeyRing {
        let slots = config
            .issuers
            .iter()
            .map(|issuer| match &issuer.keys {
                KeySource::Inline(set) => Slot {
                    set: Some(set.clone()),
                    ..Slot::default()
                },
                KeySource::Remote { policy, .. } => Slot {
                    policy: Some(*policy),
                    ..Slot::default()
                },
                KeySource::None => Slot::default(),
            })
            .collect();
        KeyRing { slots }
    }

    /// Installs a fetched key set and the record that describes it; `cache` forgets the
    /// tokens verified by keys that left the set.
    pub fn install(
        &mut self,
        issuer: IssuerId,
        set: KeySet,
        state: FetchState,
        cache: &TokenCache,
    ) {
        if let Some(slot) = self.slots.get_mut(issuer) {
            cache.retain_keys(issuer, |key| set.has_fingerprint(key));
            slot.set = Some(set);
            slot.state = state;
        }
    }

    /// Records the latest shared fetch record (keys unchanged).
    pub fn observe(&mut self, issuer: IssuerId, state: FetchState) {
        if let Some(slot) = self.slots.get_mut(issuer) {
            slot.state = state;
        }
    }

    pub fn state(&self, issuer: IssuerId) -> Option<&FetchState> {
        self.slots.get(issuer).map(|s| &s.state)
    }

    /// Version of the key set this worker verifies with (0: none fetched yet).
    pub fn installed_version(&self, issuer: IssuerId) -> u64 {
        self.slots
            .get(issuer)
            .filter(|s| s.set.is_some())
            .map_or(0, |s| s.state.version)
    }

    /// Keys in use across all issuers.
    pub fn key_count(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| s.set.as_ref())
            .map(KeySet::len)
            .sum()
    }
}

impl KeyStore for KeyRing {
    fn keys(&self, issuer: IssuerId) -> Option<&KeySet> {
        self.slots.get(issuer)?.set.as_ref()
    }

    fn refetch_allowed(&self, issuer: IssuerId, now: u64) -> bool {
        self.slots
            .get(issuer)
            .and_then(|s| Some(s.state.may_refetch(now, s.policy.as_ref()?)))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{base, compile, remote_json};
    use crate::keys::tests::fixture_set;
    use crate::remote::Why;

    const T0: u64 = 1_800_000_000;

    #[test]
    fn inline_keys_are_ready_and_never_refetched() {
        let c = base();
        let ring = KeyRing::new(&c);
        assert!(ring.keys(0).is_some());
        assert!(!ring.refetch_allowed(0, T0));
        assert_eq!(ring.key_count(), 6);
    }

    #[test]
    fn fetched_keys_arrive_by_install_and_refetch_follows_the_shared_record() {
        let c = compile(&remote_json()).unwrap();
        let mut ring = KeyRing::new(&c);
        assert!(ring.keys(0).is_none());
        assert!(
            !ring.refetch_allowed(0, T0),
            "nothing to refetch before the first load"
        );
        let mut state = FetchState::default();
        state.begin(T0, Why::Initial, &FetchPolicy::default());
        state.succeed(T0, None, 1, &FetchPolicy::default());
        ring.install(0, fixture_set(), state.clone(), &TokenCache::new(0));
        assert_eq!(ring.installed_version(0), 1);
        assert!(ring.refetch_allowed(0, T0 + 1));
        state.begin(T0 + 1, Why::UnknownKid, &FetchPolicy::default());
        ring.observe(0, state);
        assert!(!ring.refetch_allowed(0, T0 + 2));
    }
}
