//! The key sets a worker verifies with, one slot per configured issuer: inline keys are there
//! from the start; fetched keys (SPEC §7) fill their slot when they arrive.

use crate::config::{Config, IssuerId, KeySource};
use crate::keys::KeySet;
use crate::verify::KeyStore;

#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    sets: Vec<Option<KeySet>>,
}

impl KeyRing {
    pub fn new(config: &Config) -> KeyRing {
        let sets = config
            .issuers
            .iter()
            .map(|issuer| match &issuer.keys {
                KeySource::Inline(set) => Some(set.clone()),
                KeySource::Remote { .. } => None,
            })
            .collect();
        KeyRing { sets }
    }

    /// Replaces an issuer's keys (a fetched set arrived).
    pub fn install(&mut self, issuer: IssuerId, set: KeySet) {
        if let Some(slot) = self.sets.get_mut(issuer) {
            *slot = Some(set);
        }
    }
}

impl KeyStore for KeyRing {
    fn keys(&self, issuer: IssuerId) -> Option<&KeySet> {
        self.sets.get(issuer)?.as_ref()
    }
}
