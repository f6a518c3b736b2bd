//! What the database holds, read from one snapshot: entries and bytes per table, the event
//! log's extent, the file's size and the room left on its filesystem. Operators read it at
//! `GET /admin/storage` and in the `ctxhost_storage_*` metrics.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{ReadableTable, ReadableTableMetadata, TableHandle};
use serde::Serialize;

use super::db::{Db, EVENTS, kv};
use super::error::StateError;

/// Entries and bytes of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct TableUsage {
    pub(crate) entries: u64,
    /// Bytes the table takes in the file: keys and values, the tree's own pages and their
    /// unused space.
    pub(crate) bytes: u64,
}

/// The event log's extent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventLogUsage {
    pub(crate) entries: u64,
    /// Sequence number of the oldest event kept (`None`: the log is empty).
    pub(crate) oldest_seq: Option<u64>,
    /// Sequence number of the newest event kept (`None`: the log is empty).
    pub(crate) newest_seq: Option<u64>,
    pub(crate) bytes: u64,
}

/// Everything the database holds, by kind of table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) event_log: EventLogUsage,
    /// `inbox/<context>` by context.
    pub(crate) inboxes: BTreeMap<String, TableUsage>,
    /// `ctx/<context>` by context.
    pub(crate) contexts: BTreeMap<String, TableUsage>,
    /// `sys/*` tables other than the event log, by name (dead letters, cursors, ...).
    pub(crate) host: BTreeMap<String, TableUsage>,
    /// Size of the database file.
    pub(crate) file_bytes: u64,
    /// Room left on the database's filesystem for an unprivileged writer, and its size
    /// (`None` where the system cannot tell).
    pub(crate) disk_free_bytes: Option<u64>,
    pub(crate) disk_total_bytes: Option<u64>,
}

impl Usage {
    /// Entries of a host table (0 when it does not exist).
    pub(crate) fn host_entries(&self, table: &str) -> u64 {
        self.host.get(table).map(|t| t.entries).unwrap_or(0)
    }
}

fn bytes_of(stats: &redb::TableStats) -> u64 {
    stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes()
}

impl Db {
    /// What the database holds as of one snapshot, and the size of `dir`'s database file.
    /// Walks each table's pages for its size: meant for operators and a periodic sampler,
    /// not for a hot path.
    pub(crate) fn usage(&self, dir: &Path) -> Result<Usage, StateError> {
        let txn = self.snapshot()?;
        let mut usage = Usage::default();
        {
            let events = txn.open_table(EVENTS).map_err(StateError::storage)?;
            usage.event_log = EventLogUsage {
                entries: events.len().map_err(StateError::storage)?,
                oldest_seq: events
                    .first()
                    .map_err(StateError::storage)?
                    .map(|(k, _)| k.value()),
                newest_seq: events
                    .last()
                    .map_err(StateError::storage)?
                    .map(|(k, _)| k.value()),
                bytes: bytes_of(&events.stats().map_err(StateError::storage)?),
            };
        }
        let names: Vec<String> = txn
            .list_tables()
            .map_err(StateError::storage)?
            .map(|h| h.name().to_string())
            .collect();
        for name in names {
            if name == EVENTS.name() {
                continue;
            }
            let t = match txn.open_table(kv(&name)) {
                Ok(t) => t,
                // A table of another shape is not the host's to report.
                Err(redb::TableError::TableTypeMismatch { .. }) => continue,
                Err(e) => return Err(StateError::storage(e)),
            };
            let u = TableUsage {
                entries: t.len().map_err(StateError::storage)?,
                bytes: bytes_of(&t.stats().map_err(StateError::storage)?),
            };
            if let Some(c) = name.strip_prefix("ctx/") {
                usage.contexts.insert(c.to_string(), u);
            } else if let Some(c) = name.strip_prefix("inbox/") {
                usage.inboxes.insert(c.to_string(), u);
            } else {
                usage.host.insert(name, u);
            }
        }
        let file = dir.join("state.redb");
        usage.file_bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        if let Some((free, total)) = disk_space(dir) {
            usage.disk_free_bytes = Some(free);
            usage.disk_total_bytes = Some(total);
        }
        Ok(usage)
    }

    /// The sequence numbers of the oldest and the newest event kept (`None`: empty log).
    pub(crate) fn event_log_extent(&self) -> Result<Option<(u64, u64)>, StateError> {
        let txn = self.snapshot()?;
        let events = txn.open_table(EVENTS).map_err(StateError::storage)?;
        let first = events.first().map_err(StateError::storage)?;
        let last = events.last().map_err(StateError::storage)?;
        Ok(match (first, last) {
            (Some((f, _)), Some((l, _))) => Some((f.value(), l.value())),
            _ => None,
        })
    }

    /// The contexts that have an inbox table.
    pub(crate) fn inbox_contexts(&self) -> Result<Vec<String>, StateError> {
        let txn = self.snapshot()?;
        let names = txn.list_tables().map_err(StateError::storage)?;
        Ok(names
            .filter_map(|h| h.name().strip_prefix("inbox/").map(str::to_string))
            .collect())
    }
}

/// Free (for unprivileged writers) and total bytes of the filesystem holding `dir`.
#[cfg(unix)]
fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` is a properly sized out-parameter
    // that statvfs fills on success; it is read only then.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u64 here, u32 on some).
    #[allow(clippy::unnecessary_cast)]
    let frsize = st.f_frsize as u64;
    #[allow(clippy::unnecessary_cast)]
    Some((
        (st.f_bavail as u64).saturating_mul(frsize),
        (st.f_blocks as u64).saturating_mul(frsize),
    ))
}

#[cfg(not(unix))]
fn disk_space(_dir: &Path) -> Option<(u64, u64)> {
    None
}
