//! The unit of work: everything one invocation (and the calls it makes into other contexts)
//! reads, writes and publishes.
//!
//! Reads come from a snapshot taken when the unit begins, overlaid with the unit's own
//! writes; each read is recorded so the committer can check, at commit time, that nothing
//! the unit saw has changed since (optimistic concurrency). Writes and events stay in memory
//! until the commit, so a trap or an error simply drops them.
//!
//! What a guest can make the unit hold is bounded ([`UnitLimits`]): the entries and bytes of
//! one scan, and of the unit's buffered writes and published events. Host code (inbox,
//! cursors) writes unbounded with [`UnitOfWork::put`]; the capabilities use the bounded
//! operations, whose [`LimitError`] names the limit and its setting.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Bound;
use std::sync::Arc;

use redb::{ReadTransaction, ReadableTable, TableError};

use super::db::{Db, Table, kv};
use super::error::StateError;

/// An event published by the unit, waiting for its commit to get a sequence number.
#[derive(Debug, Clone, Default)]
pub struct OutgoingEvent {
    /// The encoded event (see `bus::envelope`).
    pub encoded: Vec<u8>,
    /// The publishing context and the event's type, for the metrics of committed events.
    pub publisher: Arc<str>,
    pub event_type: Arc<str>,
}

impl OutgoingEvent {
    /// An event known only by its bytes (the metrics count it under an empty name).
    pub fn new(encoded: Vec<u8>) -> Self {
        OutgoingEvent {
            encoded,
            ..OutgoingEvent::default()
        }
    }
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
    bounded_writes: usize,
    bounded_write_bytes: usize,
    events: usize,
    event_bytes: usize,
}

/// What guests may make one unit of work hold, so that the host's memory stays bounded
/// before the guest's own memory cap can apply. A unit is one HTTP request with the calls it
/// makes into other contexts, or one event delivery (a batch of deliveries shares one, and a
/// delivery that fails there runs again alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitLimits {
    /// Entries one scan may return.
    pub scan_entries: usize,
    /// Bytes (keys and values) one scan may return.
    pub scan_bytes: usize,
    /// Distinct keys the unit may write or delete.
    pub write_entries: usize,
    /// Bytes (keys and values) of those writes.
    pub write_bytes: usize,
    /// Events the unit may publish.
    pub events: usize,
    /// Bytes of those events, encoded.
    pub event_bytes: usize,
}

impl Default for UnitLimits {
    fn default() -> Self {
        UnitLimits {
            scan_entries: 1_000,
            scan_bytes: 4 * 1024 * 1024,
            write_entries: 10_000,
            write_bytes: 16 * 1024 * 1024,
            events: 1_000,
            event_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A guest operation refused because the unit would pass one of its [`UnitLimits`]; the
/// message names the setting that raises it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "the scan matches more than {max} entries, the host's limit (limits.scan_entries): \
         pass a limit of at most {max} and continue after the last key returned"
    )]
    ScanEntries { max: usize },
    #[error(
        "the scan's entries add up to more than {max} bytes, the host's limit \
         (limits.scan_bytes): pass a smaller limit and continue after the last key returned"
    )]
    ScanBytes { max: usize },
    #[error(
        "the invocation would write {count} distinct keys, over the limit of {max} \
         (limits.write_entries)"
    )]
    WriteEntries { count: usize, max: usize },
    #[error(
        "the invocation's writes would hold {bytes} bytes, over the limit of {max} \
         (limits.write_bytes)"
    )]
    WriteBytes { bytes: usize, max: usize },
    #[error("the invocation would publish {count} events, over the limit of {max} (limits.events)")]
    Events { count: usize, max: usize },
    #[error(
        "the invocation's events would hold {bytes} bytes, over the limit of {max} \
         (limits.event_bytes)"
    )]
    EventBytes { bytes: usize, max: usize },
}

/// Why a scan failed: the data files, or a limit.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// The bytes a buffered write holds.
fn write_size(key: &str, value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len)
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
    /// Entries of `writes` made by [`UnitOfWork::put_bounded`] (guests' writes; host
    /// bookkeeping in other tables does not count against guests' limits).
    bounded_writes: usize,
    /// Keys and values of those entries, in bytes.
    bounded_write_bytes: usize,
    pub(crate) events: Vec<OutgoingEvent>,
    /// Encoded `events`, in bytes.
    event_bytes: usize,
    /// Highest value taken per `<context>/<sequence>`, persisted with the commit.
    pub(crate) sequences: HashMap<String, u64>,
    /// Remove the event log's entries in this range (inclusive) with the commit: retention's
    /// pruning, applied by the committer inside a group like any other change.
    pub(crate) prune_events: Option<(u64, u64)>,
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
            bounded_writes: 0,
            bounded_write_bytes: 0,
            events: Vec::new(),
            event_bytes: 0,
            sequences: HashMap::new(),
            prune_events: None,
        })
    }

    /// True when committing would change nothing.
    pub fn is_read_only(&self) -> bool {
        self.writes.is_empty()
            && self.events.is_empty()
            && self.sequences.is_empty()
            && self.prune_events.is_none()
    }

    /// Remove the event log's entries `first..=last` with this unit (host bookkeeping:
    /// retention decides which events every consumer has).
    pub(crate) fn remove_events(&mut self, first: u64, last: u64) {
        self.prune_events = Some((first, last));
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

    /// Buffer a write (`None` deletes). Host bookkeeping only: guests' writes go through
    /// [`UnitOfWork::put_bounded`].
    pub fn put(&mut self, table: &Table, key: &str, value: Option<Vec<u8>>) {
        self.writes.insert((table.clone(), key.to_string()), value);
    }

    /// Buffer a write (`None` deletes) unless the unit's bounded writes would pass `limits`.
    /// Host bookkeeping and bounded writes never share a table, so a key is counted by the
    /// kind of write that made it.
    pub fn put_bounded(
        &mut self,
        table: &Table,
        key: &str,
        value: Option<Vec<u8>>,
        limits: &UnitLimits,
    ) -> Result<(), LimitError> {
        let entry = (table.clone(), key.to_string());
        let (count, bytes) = match self.writes.get(&entry) {
            Some(old) => (
                self.bounded_writes,
                self.bounded_write_bytes
                    .saturating_sub(write_size(key, old.as_deref())),
            ),
            None => (self.bounded_writes + 1, self.bounded_write_bytes),
        };
        let bytes = bytes + write_size(key, value.as_deref());
        if count > limits.write_entries {
            return Err(LimitError::WriteEntries {
                count,
                max: limits.write_entries,
            });
        }
        if bytes > limits.write_bytes {
            return Err(LimitError::WriteBytes {
                bytes,
                max: limits.write_bytes,
            });
        }
        self.writes.insert(entry, value);
        self.bounded_writes = count;
        self.bounded_write_bytes = bytes;
        Ok(())
    }

    /// Buffer an event.
    pub fn publish(&mut self, event: OutgoingEvent) {
        self.event_bytes += event.encoded.len();
        self.events.push(event);
    }

    /// Buffer an event unless the unit's events would pass `limits`.
    pub fn publish_bounded(
        &mut self,
        event: OutgoingEvent,
        limits: &UnitLimits,
    ) -> Result<(), LimitError> {
        let count = self.events.len() + 1;
        let bytes = self.event_bytes + event.encoded.len();
        if count > limits.events {
            return Err(LimitError::Events {
                count,
                max: limits.events,
            });
        }
        if bytes > limits.event_bytes {
            return Err(LimitError::EventBytes {
                bytes,
                max: limits.event_bytes,
            });
        }
        self.publish(event);
        Ok(())
    }

    /// Record that `<context>/<sequence>` handed out `value`.
    pub fn took_sequence(&mut self, key: String, value: u64) {
        let e = self.sequences.entry(key).or_insert(0);
        *e = (*e).max(value);
    }

    /// Entries of `table` in `[start, end)` (bounds as given), in key order, at most `limit`,
    /// as this unit sees them. Fails, rather than cutting the answer short, when the answer
    /// would hold more than `limits.scan_entries` entries or `limits.scan_bytes` bytes: a
    /// guest must not mistake a cut answer for the whole range.
    pub fn scan(
        &mut self,
        table: &Table,
        range: ScanRange,
        limit: Option<usize>,
        limits: &UnitLimits,
    ) -> Result<Vec<(String, Vec<u8>)>, ScanError> {
        // One entry more than the limit allows tells that the limit was passed.
        let limit = limit
            .unwrap_or(usize::MAX)
            .min(limits.scan_entries.saturating_add(1));
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
            Err(e) => return Err(StateError::storage(e).into()),
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
        let mut bytes = 0usize;
        let mut over_bytes = false;
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
            // The size of the entry about to be returned (a deletion returns nothing).
            let next_size = if take_overlay {
                overlay
                    .peek()
                    .and_then(|(k, v)| v.as_ref().map(|v| k.len() + v.len()))
            } else {
                pending.as_ref().map(|(k, v)| k.len() + v.len())
            };
            if let Some(size) = next_size {
                if bytes.saturating_add(size) > limits.scan_bytes {
                    exhausted = false;
                    over_bytes = true;
                    break;
                }
                bytes += size;
            }
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
        // What the scan consumed is recorded for validation: the whole range when it ran to
        // its end, else up to its last key; a scan stopped before its first key read nothing.
        let end = if exhausted {
            Some(range.end.clone())
        } else {
            last_key.map(Bound::Included)
        };
        if let Some(end) = end {
            self.reads.push(ReadRecord::Range {
                table: table.clone(),
                range: ScanRange {
                    start: range.start,
                    end,
                },
                digest: hasher.finish(),
            });
        }
        if over_bytes {
            return Err(LimitError::ScanBytes {
                max: limits.scan_bytes,
            }
            .into());
        }
        if out.len() > limits.scan_entries {
            return Err(LimitError::ScanEntries {
                max: limits.scan_entries,
            }
            .into());
        }
        Ok(out)
    }

    /// Remember the current writes and events.
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            writes: self.writes.clone(),
            bounded_writes: self.bounded_writes,
            bounded_write_bytes: self.bounded_write_bytes,
            events: self.events.len(),
            event_bytes: self.event_bytes,
        }
    }

    /// Undo every write and event since `sp`. Reads stay recorded: they shaped the outcome.
    pub fn rollback_to(&mut self, sp: Savepoint) {
        self.writes = sp.writes;
        self.bounded_writes = sp.bounded_writes;
        self.bounded_write_bytes = sp.bounded_write_bytes;
        self.events.truncate(sp.events);
        self.event_bytes = sp.event_bytes;
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
