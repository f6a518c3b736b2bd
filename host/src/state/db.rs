//! The database file and the names of its tables.
//!
//! Every table maps string keys to bytes, except the event log (sequence number to encoded
//! event). A context's table is `ctx/<name>`; the host's bookkeeping lives in `sys/*` and
//! `inbox/<name>` tables that no context can name.
//!
//! The database sits behind a swappable handle: after a storage error redb refuses every
//! later write until the database is closed and opened again, so the committer closes it and
//! reopens it (see `commit.rs`). Readers take the handle under an uncontended read lock.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, RwLock};

use redb::{
    Database, ReadableDatabase, ReadableTableMetadata, TableDefinition, TableError,
    WriteTransaction,
};

use super::clock::HostClock;
use super::error::StateError;
use super::health::{RecoveryPolicy, StorageHealth, StorageStatus};
use crate::sync::{read, write};

/// A string-keyed table, named once and shared.
pub(crate) type Table = Arc<str>;

/// The event log: sequence number to encoded event (the outbox of every transport).
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("sys/events");

/// Table of delivery cursors: context name to the last sequence number it has consumed.
pub(crate) const CURSORS: &str = "sys/cursors";
/// Table of sequences handed out by `store.next-id`: `<context>/<sequence>` to the highest value.
pub(super) const SEQUENCES: &str = "sys/sequences";
/// Events a context could not handle after every retry: `<context>/<seq>` to a JSON record.
pub(crate) const DEAD_LETTERS: &str = "sys/dead-letters";
/// Deployed versions per context: context name to a JSON record (see `swap::versions`).
pub(crate) const VERSIONS: &str = "sys/versions";
/// The host's own small records (the host clock).
pub(crate) const META: &str = "sys/meta";

/// Memory the database keeps as its page cache unless told otherwise (`[storage]
/// db_cache_mb`): bounded, so the host's resident memory does not grow with the file.
pub(crate) const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The table of a context's own keyspace.
pub(crate) fn context_table(context: &str) -> Table {
    Arc::from(format!("ctx/{context}"))
}

/// The table of event ids a context has already applied.
pub(crate) fn inbox_table(context: &str) -> Table {
    Arc::from(format!("inbox/{context}"))
}

/// The tables a context needs: its keyspace and its inbox.
pub(crate) fn db_tables(context: &str) -> Vec<Table> {
    vec![context_table(context), inbox_table(context)]
}

/// Definition of a string-keyed table by name.
pub(crate) fn kv(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// Where the database lives: how to open its file (again), and how to check that its
/// filesystem has room for more without involving the database.
pub(super) struct Storage {
    pub open: Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>,
    pub room: Box<dyn Fn(usize) -> io::Result<()> + Send + Sync>,
}

struct Shared {
    /// The open database; `None` while it is being reopened.
    current: RwLock<Option<Database>>,
    storage: Storage,
    health: StorageHealth,
    clock: HostClock,
}

/// The host's database: shared by the committer (writes) and every invocation (snapshots).
#[derive(Clone)]
pub struct Db {
    inner: Arc<Shared>,
}

impl Db {
    /// Open or create `<dir>/state.redb` and make sure the given tables exist.
    pub fn open(dir: &Path, tables: &[Table]) -> Result<Self, StateError> {
        Self::open_with(dir, tables, RecoveryPolicy::default(), DEFAULT_CACHE_BYTES)
    }

    /// [`Db::open`] with how long storage may stay unrecoverable before `/healthz` fails,
    /// and how much memory the database may keep as its page cache.
    pub fn open_with(
        dir: &Path,
        tables: &[Table],
        policy: RecoveryPolicy,
        cache_bytes: usize,
    ) -> Result<Self, StateError> {
        let path = dir.join("state.redb");
        let shown = path.display().to_string();
        let probe = dir.join(".storage-probe");
        let storage = Storage {
            open: Box::new(move || {
                redb::Builder::new()
                    .set_cache_size(cache_bytes)
                    .create(&path)
            }),
            room: Box::new(move |bytes| room_for(&probe, bytes)),
        };
        Self::with_storage(storage, &shown, tables, policy)
    }

    /// A database on `storage`.
    pub(super) fn with_storage(
        storage: Storage,
        shown: &str,
        tables: &[Table],
        policy: RecoveryPolicy,
    ) -> Result<Self, StateError> {
        let db = (storage.open)().map_err(|source| StateError::Open {
            path: shown.to_string(),
            source: Arc::new(source),
        })?;
        let saved = saved_clock(&db.begin_read().map_err(StateError::storage)?)?;
        let this = Db {
            inner: Arc::new(Shared {
                current: RwLock::new(Some(db)),
                storage,
                health: StorageHealth::new(policy),
                clock: HostClock::resume(saved.as_deref()),
            }),
        };
        this.ensure_tables(tables)?;
        Ok(this)
    }

    /// Create the tables that do not exist yet, so snapshots can always open them.
    pub fn ensure_tables(&self, tables: &[Table]) -> Result<(), StateError> {
        let txn = self.begin_write()?;
        {
            txn.open_table(EVENTS).map_err(StateError::storage)?;
            for name in [CURSORS, SEQUENCES, DEAD_LETTERS, VERSIONS, META] {
                txn.open_table(kv(name)).map_err(StateError::storage)?;
            }
            for name in tables {
                txn.open_table(kv(name)).map_err(StateError::storage)?;
            }
        }
        txn.commit().map_err(StateError::storage)?;
        Ok(())
    }

    /// A consistent read-only view of the last commit; never waits for writers.
    pub fn snapshot(&self) -> Result<redb::ReadTransaction, StateError> {
        match &*read(&self.inner.current) {
            Some(db) => db.begin_read().map_err(StateError::storage),
            None => Err(self.inner.health.unavailable()),
        }
    }

    /// A write transaction (the committer's, or creating tables).
    pub(super) fn begin_write(&self) -> Result<WriteTransaction, StateError> {
        match &*read(&self.inner.current) {
            Some(db) => db.begin_write().map_err(StateError::storage),
            None => Err(self.inner.health.unavailable()),
        }
    }

    /// Close the database and open its file again, holding the handle meanwhile: snapshots
    /// begun meanwhile wait for the new handle (redb repairs the file after an I/O error, in
    /// time proportional to its size) instead of failing. Snapshots taken before keep what
    /// they already read; further reads of theirs fail as unavailable.
    pub(super) fn refresh(&self) -> Result<(), StateError> {
        let mut current = write(&self.inner.current);
        // redb holds the file and its lock until the old handle is gone.
        drop(current.take());
        *current = Some((self.inner.storage.open)().map_err(StateError::storage)?);
        Ok(())
    }

    /// Open the database file again when no handle is open (a [`Db::refresh`] that could
    /// not reopen it left none).
    pub(super) fn reopen(&self) -> Result<(), StateError> {
        let db = (self.inner.storage.open)().map_err(StateError::storage)?;
        *write(&self.inner.current) = Some(db);
        Ok(())
    }

    /// Whether `bytes` more fit on the database's filesystem, checked beside the database (a
    /// failed write would leave the database refusing even reads until reopened).
    pub(super) fn room(&self, bytes: usize) -> Result<(), StateError> {
        (self.inner.storage.room)(bytes).map_err(|e| StateError::storage(redb::Error::Io(e)))
    }

    /// Bytes the database's page cache holds now (read cache and write buffer), at most the
    /// `db_cache_mb` it was opened with; 0 while the database is being reopened.
    pub(crate) fn cache_used_bytes(&self) -> u64 {
        read(&self.inner.current)
            .as_ref()
            .map_or(0, |db| db.cache_stats().used_bytes() as u64)
    }

    /// Whether the database is open.
    pub(super) fn is_open(&self) -> bool {
        read(&self.inner.current).is_some()
    }

    /// The host clock (running time over the database's life), which inbox entries are
    /// stamped and aged with.
    pub(crate) fn clock(&self) -> &HostClock {
        &self.inner.clock
    }

    /// Buffer the host clock's value now into `unit`, so a later start resumes from it.
    pub(crate) fn save_clock(&self, unit: &mut super::UnitOfWork) {
        let table: Table = Arc::from(META);
        let now = self.inner.clock.now_ms();
        unit.put(&table, HostClock::KEY, Some(now.to_be_bytes().to_vec()));
    }

    pub(crate) fn health(&self) -> &StorageHealth {
        &self.inner.health
    }

    /// The state of storage, for the probes.
    pub fn storage_status(&self) -> StorageStatus {
        self.inner.health.status()
    }

    /// Read one value of a string-keyed table from a fresh snapshot.
    pub fn read(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let txn = self.snapshot()?;
        let table = match txn.open_table(kv(table)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(StateError::storage(e)),
        };
        let value = table.get(key).map_err(StateError::storage)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// How many entries a string-keyed table holds (0 before its first entry).
    pub fn count(&self, table: &str) -> Result<u64, StateError> {
        let txn = self.snapshot()?;
        let table = match txn.open_table(kv(table)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(StateError::storage(e)),
        };
        table.len().map_err(StateError::storage)
    }

    /// Every entry of a string-keyed table whose key starts with `prefix`.
    pub fn read_prefix(
        &self,
        table: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        self.read_page(table, prefix, None, usize::MAX)
    }

    /// At most `limit` entries of a string-keyed table whose key starts with `prefix`, in
    /// key order, after the key `after` when given: one page of a listing.
    pub fn read_page(
        &self,
        table: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let txn = self.snapshot()?;
        let table = match txn.open_table(kv(table)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(StateError::storage(e)),
        };
        let start = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a),
            _ => std::ops::Bound::Included(prefix),
        };
        let mut out = Vec::new();
        let range = table
            .range::<&str>((start, std::ops::Bound::Unbounded))
            .map_err(StateError::storage)?;
        for item in range {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(StateError::storage)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// How many keys of `table` start with `prefix` (without reading their values).
    pub fn count_prefix(&self, table: &str, prefix: &str) -> Result<u64, StateError> {
        let txn = self.snapshot()?;
        let table = match txn.open_table(kv(table)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(StateError::storage(e)),
        };
        let mut n = 0;
        for item in table.range(prefix..).map_err(StateError::storage)? {
            let (k, _) = item.map_err(StateError::storage)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Events with sequence numbers in `(after, ..]`, at most `limit`, in order.
    pub fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StateError> {
        let txn = self.snapshot()?;
        let table = txn.open_table(EVENTS).map_err(StateError::storage)?;
        let mut out = Vec::new();
        for item in table
            .range(after.saturating_add(1)..)
            .map_err(StateError::storage)?
        {
            let (k, v) = item.map_err(StateError::storage)?;
            out.push((k.value(), v.value().to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

/// The host clock a database holds (none before its first save).
fn saved_clock(txn: &redb::ReadTransaction) -> Result<Option<Vec<u8>>, StateError> {
    let t = match txn.open_table(kv(META)) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(StateError::storage(e)),
    };
    let v = t.get(HostClock::KEY).map_err(StateError::storage)?;
    Ok(v.map(|g| g.value().to_vec()))
}

/// Write `bytes` to `probe` durably and remove it again: the filesystem has that much room.
fn room_for(probe: &Path, bytes: usize) -> io::Result<()> {
    let written = File::create(probe).and_then(|mut f| {
        f.write_all(&vec![0u8; bytes])?;
        f.sync_all()
    });
    let removed = fs::remove_file(probe);
    written.and(removed)
}
