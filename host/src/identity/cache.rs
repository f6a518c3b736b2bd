//! Tokens verified recently: a client sends the same bearer token with every request for
//! minutes, so the gateway pays for its signature (and its JSON) once and afterwards for a
//! SHA-256 of the token and a map lookup.
//!
//! An entry holds the principal, until when the token stays valid (`exp` plus the leeway)
//! and the JWKS key set it was verified under: when the key file changes, every entry made
//! under the old keys stops matching, so a token of a removed key is refused at once. Only
//! verified tokens are kept; a refused one is verified again each time. The cache is
//! bounded: [`SHARDS`] maps of at most [`PER_SHARD`] entries each, a full shard first drops
//! its expired entries, then everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Principal;
use super::jwks::KeySet;
use crate::sync::lock;

/// Independent maps, so concurrent requests rarely wait for one another.
const SHARDS: usize = 16;
/// Entries one map holds at most (16,384 tokens in all).
pub(super) const PER_SHARD: usize = 1_024;

struct Entry {
    principal: Arc<Principal>,
    /// Seconds since the epoch after which the token is no longer accepted.
    valid_until: f64,
    /// The key set the token was verified under (`None`: no JWKS configured).
    keys: Option<Arc<KeySet>>,
}

/// The cache of one authenticator.
pub(super) struct Verified {
    shards: Vec<Mutex<HashMap<[u8; 32], Entry>>>,
}

impl Default for Verified {
    fn default() -> Self {
        Verified {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// The cache key of `token`: its SHA-256 (the map never holds tokens themselves).
pub(super) fn key_of(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

fn same_keys(a: &Option<Arc<KeySet>>, b: &Option<Arc<KeySet>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

impl Verified {
    fn shard(&self, key: &[u8; 32]) -> &Mutex<HashMap<[u8; 32], Entry>> {
        &self.shards[usize::from(key[0]) % SHARDS]
    }

    /// The principal of a token verified before, while it is still valid at `now` under the
    /// current `keys`.
    pub(super) fn get(
        &self,
        key: &[u8; 32],
        now: f64,
        keys: &Option<Arc<KeySet>>,
    ) -> Option<Arc<Principal>> {
        let shard = lock(self.shard(key));
        let entry = shard.get(key)?;
        (now < entry.valid_until && same_keys(&entry.keys, keys)).then(|| entry.principal.clone())
    }

    /// Keep the principal of a token just verified.
    pub(super) fn put(
        &self,
        key: [u8; 32],
        principal: Arc<Principal>,
        valid_until: f64,
        keys: Option<Arc<KeySet>>,
        now: f64,
    ) {
        let mut shard = lock(self.shard(&key));
        if shard.len() >= PER_SHARD {
            shard.retain(|_, e| now < e.valid_until);
            if shard.len() >= PER_SHARD {
                shard.clear();
            }
        }
        shard.insert(
            key,
            Entry {
                principal,
                valid_until,
                keys,
            },
        );
    }

    /// Entries held now, for tests.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}
