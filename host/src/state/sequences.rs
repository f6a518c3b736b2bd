//! Sequences behind `store.next-id`: values handed out from memory, never twice, and
//! persisted with the commits that use them so a restart continues above them.
//!
//! The value last handed out stays in memory for every sequence a context asked for, whether
//! or not a commit used it: forgetting a name whose value is still held by a unit in flight
//! could hand that value out again. So what a context can make the host keep is bounded
//! instead: at most `max_names` distinct sequence names per context (`limits.sequences`).

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;

use super::commit::decode_u64;
use super::db::{Db, SEQUENCES};
use super::error::StateError;

/// Why `next` handed out no value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SequenceError {
    #[error(
        "context {context} already uses {max} sequence names, the host's limit \
         (limits.sequences): use fewer, fixed sequence names"
    )]
    TooMany { context: String, max: usize },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The host's sequences, stored under `<context>/<sequence>`.
pub(crate) struct Sequences {
    db: Db,
    /// Distinct sequence names one context may use.
    max_names: usize,
    /// Per context, the last value handed out per sequence name; a plain mutex, held for a
    /// map lookup (and, the first time a name is used, one read of its stored value).
    current: Mutex<HashMap<String, HashMap<String, u64>>>,
}

impl Sequences {
    /// The sequences stored in `db`, each context limited to `max_names` names.
    pub(crate) fn new(db: Db, max_names: usize) -> Self {
        Sequences {
            db,
            max_names,
            current: Mutex::new(HashMap::new()),
        }
    }

    /// The key under which `context`'s sequence `name` is stored (what the unit of work
    /// records with [`super::UnitOfWork::took_sequence`]).
    pub(crate) fn key(context: &str, name: &str) -> String {
        format!("{context}/{name}")
    }

    /// The next value of `context`'s sequence `name`.
    pub(crate) fn next(&self, context: &str, name: &str) -> Result<u64, SequenceError> {
        let mut map = lock(&self.current);
        let names = map.entry(context.to_string()).or_default();
        if let Some(v) = names.get_mut(name) {
            *v += 1;
            return Ok(*v);
        }
        if names.len() >= self.max_names {
            return Err(SequenceError::TooMany {
                context: context.to_string(),
                max: self.max_names,
            });
        }
        let stored = self
            .db
            .read(SEQUENCES, &Self::key(context, name))?
            .map(|b| decode_u64(&b))
            .unwrap_or(0);
        let v = stored + 1;
        names.insert(name.to_string(), v);
        Ok(v)
    }
}
