//! The unit of work: everything one invocation (and the calls it makes into other contexts)
//! reads, writes and publishes.
//!
//! Reads come from a snapshot taken when the unit begins, overlaid with the unit's own
//! writes; each read is recorded so the committer can check, at commit time, that nothing
//! the unit saw has changed since (optimistic concurrency). Writes and events stay in memory
//! until the commit, so a trap or an error simply drops them.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable, TableError};

use super::db::{Db, Table, kv};
use super::error::StateError;

/// An event published by the unit, waiting for its commit to get a sequence number.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    /// The encoded event (see `bus::envelope`).
    pub encoded: Vec<u8>,
}

/// A range read by a scan: what the committer re-reads to validate it.
#[derive(Debug, Clone)]
pub struct ScanRange {
    pub start: Bound<String>,
    pub end: Bound<String>,
}

/// What the unit read, to be validated at commit.
#[derive(Debug, Clone)]
pub(crate) enum ReadRecord {
    Key {
        table: Table,
        key: String,
        digest: u64,
    },
    Range {
        table: Table,
        range: ScanRange,
        digest: u64,
    },
}

/// A point the unit can return to, used to undo the effects of a failed call into another
/// context while keeping the caller's.
#[derive(Debug, Clone)]
pub struct Savepoint {
    writes: BTreeMap<(Table, String), Option<Vec<u8>>>,
    events: usize,
}

/// A unit of work shared by the invocation that owns it and the contexts it calls; locked
/// with [`crate::sync::lock`].
pub(crate) type SharedUnit = std::sync::Arc<std::sync::Mutex<UnitOfWork>>;

/// `unit`, to be shared by the invocation that owns it and the contexts it calls.
pub(crate) fn share(unit: UnitOfWork) -> SharedUnit {
    std::sync::Arc::new(std::sync::Mutex::new(unit))
}

/// Sole ownership of a shared unit again, once every invocation that used it has ended;
/// `None` while another holder remains (a host bug: an invocation outlived its request).
pub(crate) fn unshare(shared: SharedUnit) -> Option<UnitOfWork> {
    std::sync::Arc::try_unwrap(shared)
        .ok()
        .map(crate::sync::into_inner)
}

/// The buffered reads, writes and events of one invocation tree.
pub struct UnitOfWork {
    snapshot: ReadTransaction,
    pub(crate) reads: Vec<ReadRecord>,
    pub(crate) writes: BTreeMap<(Table, String), Option<Vec<u8>>>,
    pub(crate) events: Vec<OutgoingEvent>,
    /// Highest value taken per `<context>/<sequence>`, persisted with the commit.
    pub(crate) sequences: HashMap<String, u64>,
}

pub(crate) fn digest_entry(hasher: &mut DefaultHasher, key: &str, value: Option<&[u8]>) {
    key.hash(hasher);
    value.hash(hasher);
}

pub(crate) fn digest_value(value: Option<&[u8]>) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl UnitOfWork {
    /// Begin a unit of work on the current committed state.
    pub fn begin(db: &Db) -> Result<Self, StateError> {
        Ok(UnitOfWork {
            snapshot: db.snapshot()?,
            reads: Vec::new(),
            writes: BTreeMap::new(),
            events: Vec::new(),
            sequences: HashMap::new(),
        })
    }

    /// True when committing would change nothing.
    pub fn is_read_only(&self) -> bool {
        self.writes.is_empty() && self.events.is_empty() && self.sequences.is_empty()
    }

    /// The value of `key` in `table` as this unit sees it.
    pub fn get(&mut self, table: &Table, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.writes.get(&(table.clone(), key.to_string())) {
            return Ok(v.clone());
        }
        let value = self.snapshot_get(table, key)?;
        self.reads.push(ReadRecord::Key {
            table: table.clone(),
            key: key.to_string(),
            digest: digest_value(value.as_deref()),
        });
        Ok(value)
    }

    fn snapshot_get(&self, table: &Table, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let t = match self.snapshot.open_table(kv(table)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(StateError::storage(e)),
        };
        let v = t.get(key).map_err(StateError::storage)?;
        Ok(v.map(|g| g.value().to_vec()))
    }

    /// Buffer a write (`None` deletes).
    pub fn put(&mut self, table: &Table, key: &str, value: Option<Vec<u8>>) {
        self.writes.insert((table.clone(), key.to_string()), value);
    }

    /// Buffer an event.
    pub fn publish(&mut self, event: OutgoingEvent) {
        self.events.push(event);
    }

    /// Record that `<context>/<sequence>` handed out `value`.
    pub fn took_sequence(&mut self, key: String, value: u64) {
        let e = self.sequences.entry(key).or_insert(0);
        *e = (*e).max(value);
    }

    /// Entries of `table` in `[start, end)` (bounds as given), in key order, at most `limit`,
    /// as this unit sees them.
    pub fn scan(
        &mut self,
        table: &Table,
        range: ScanRange,
        limit: Option<usize>,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let limit = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // The unit's own writes in the range.
        let lo = match &range.start {
            Bound::Included(k) => Bound::Included((table.clone(), k.clone())),
            Bound::Excluded(k) => Bound::Excluded((table.clone(), k.clone())),
            Bound::Unbounded => Bound::Included((table.clone(), String::new())),
        };
        let mut overlay = self
            .writes
            .range((lo, Bound::Unbounded))
            .take_while(|((t, k), _)| t == table && in_end(&range.end, k))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .peekable();

        let t = match self.snapshot.open_table(kv(table)) {
            Ok(t) => Some(t),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(StateError::storage(e)),
        };
        let bounds = (as_str(&range.start), as_str(&range.end));
        let mut snap = match &t {
            Some(t) => Some(t.range::<&str>(bounds).map_err(StateError::storage)?),
            None => None,
        };
        let mut pending: Option<(String, Vec<u8>)> = None;
        let mut hasher = DefaultHasher::new();
        let mut exhausted = true;
        let mut last_key: Option<String> = None;
        loop {
            if out.len() >= limit {
                exhausted = false;
                break;
            }
            if pending.is_none()
                && let Some(it) = snap.as_mut()
            {
                match it.next() {
                    Some(item) => {
                        let (k, v) = item.map_err(StateError::storage)?;
                        pending = Some((k.value().to_string(), v.value().to_vec()));
                    }
                    None => snap = None,
                }
            }
            let take_overlay = match (&pending, overlay.peek()) {
                (None, None) => break,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((sk, _)), Some((ok, _))) => ok <= sk,
            };
            if take_overlay {
                let Some((k, v)) = overlay.next() else { break };
                if let Some((sk, sv)) = &pending
                    && *sk == k
                {
                    digest_entry(&mut hasher, sk, Some(sv));
                    pending = None;
                }
                last_key = Some(k.clone());
                if let Some(v) = v {
                    out.push((k, v));
                }
            } else if let Some((k, v)) = pending.take() {
                digest_entry(&mut hasher, &k, Some(&v));
                last_key = Some(k.clone());
                out.push((k, v));
            }
        }
        let end = if exhausted {
            range.end.clone()
        } else {
            match last_key {
                Some(k) => Bound::Included(k),
                None => range.end.clone(),
            }
        };
        self.reads.push(ReadRecord::Range {
            table: table.clone(),
            range: ScanRange {
                start: range.start,
                end,
            },
            digest: hasher.finish(),
        });
        Ok(out)
    }

    /// Remember the current writes and events.
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            writes: self.writes.clone(),
            events: self.events.len(),
        }
    }

    /// Undo every write and event since `sp`. Reads stay recorded: they shaped the outcome.
    pub fn rollback_to(&mut self, sp: Savepoint) {
        self.writes = sp.writes;
        self.events.truncate(sp.events);
    }

    /// Number of events buffered so far.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }
}

fn in_end(end: &Bound<String>, k: &str) -> bool {
    match end {
        Bound::Included(e) => k <= e.as_str(),
        Bound::Excluded(e) => k < e.as_str(),
        Bound::Unbounded => true,
    }
}

fn as_str(b: &Bound<String>) -> Bound<&str> {
    match b {
        Bound::Included(s) => Bound::Included(s.as_str()),
        Bound::Excluded(s) => Bound::Excluded(s.as_str()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Recompute the digest of a recorded range from a table, for validation.
pub(crate) fn range_digest<T>(table: &T, range: &ScanRange) -> Result<u64, StateError>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let mut hasher = DefaultHasher::new();
    for item in table
        .range::<&str>((as_str(&range.start), as_str(&range.end)))
        .map_err(StateError::storage)?
    {
        let (k, v) = item.map_err(StateError::storage)?;
        digest_entry(&mut hasher, k.value(), Some(v.value()));
    }
    Ok(hasher.finish())
}
