//! Sequences behind `store.next-id`: values handed out from memory, never twice, and
//! persisted with the commits that use them so a restart continues above them.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;

use super::commit::decode_u64;
use super::db::{Db, SEQUENCES};
use super::error::StateError;

/// The host's sequences, keyed `<context>/<sequence>`.
pub(crate) struct Sequences {
    db: Db,
    /// Next value to hand out per sequence; a plain mutex, held for a map lookup only.
    current: Mutex<HashMap<String, u64>>,
}

impl Sequences {
    pub(crate) fn new(db: Db) -> Self {
        Sequences {
            db,
            current: Mutex::new(HashMap::new()),
        }
    }

    /// The next value of `key`.
    pub(crate) fn next(&self, key: &str) -> Result<u64, StateError> {
        let mut map = lock(&self.current);
        if let Some(v) = map.get_mut(key) {
            *v += 1;
            return Ok(*v);
        }
        let stored = self
            .db
            .read(SEQUENCES, key)?
            .map(|b| decode_u64(&b))
            .unwrap_or(0);
        let v = stored + 1;
        map.insert(key.to_string(), v);
        Ok(v)
    }
}
