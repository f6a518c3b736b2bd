//! Online backups of a data directory, and their restore.
//!
//! A backup is taken from ONE read transaction ([`crate::state::Db::snapshot`]): redb's read
//! transactions are snapshots of the last commit and never block the committer, so the host
//! keeps serving while every table of the snapshot is written out in key order, followed by
//! the files of the data directory that the snapshot refers to (the kept component versions,
//! chosen by the caller) and a trailer. The writer reads as it writes ([`dump()`]), so memory
//! stays bounded whatever the size of the database. While a backup runs, redb cannot reuse
//! the pages that commits free after its snapshot: the database file grows by what the host
//! writes meanwhile (`ctxhost compact` gives the space back later).
//!
//! A restore ([`restore()`]) first reads the whole file and checks it ([`verify`]); only a
//! file that passes every check is written, into a staging directory that is renamed into
//! place at the end, so a refused or failed restore leaves the target as it was.
//!
//! # File format, version 1
//!
//! Integers are little-endian. The file is a header, records, and a trailer:
//!
//! ```text
//! header   magic    8 bytes   "CTXHBKUP"
//!          version  u32       1
//!          taken_at u64       time of the snapshot, milliseconds since the Unix epoch
//!
//! record   tag      u8
//!          len      u32       length of the payload, at most 1 MiB (MAX_PAYLOAD)
//!          payload  len bytes
//!
//!   0x01 TABLE   kind u8 (0: string keys, 1: u64 keys; values are bytes)
//!                entries u64 (how many ENTRY records of this table follow)
//!                name (UTF-8, the rest of the payload, 1..=4096 bytes)
//!   0x02 ENTRY   key_len u32 (at most 64 KiB) | key | value_len u64 | the value's first
//!                bytes (the rest of the payload); string keys are UTF-8, u64 keys 8 bytes
//!   0x03 FILE    size u64 | name (the rest of the payload): a path relative to the data
//!                directory, '/'-separated, segments of [A-Za-z0-9._-] not starting with '.'
//!   0x04 DATA    the next bytes of the open value or file (1..=len of what is missing)
//!   0xFF TRAILER tables u64 | entries u64 | files u64 | bytes of files u64 | SHA-256 (32)
//! ```
//!
//! Order: TABLE records, each followed by its entries in key order, then FILE records, then
//! the TRAILER, then the end of the file. A value or a file longer than fits in its first
//! record continues in DATA records that immediately follow it (the writer puts at most
//! 256 KiB in each). The SHA-256 covers every byte of the file before it: header, records,
//! and the trailer's tag, length and counts. Since no record is longer than 1 MiB, a
//! damaged length cannot make a reader allocate more than that.

mod dump;
mod error;
mod format;
mod restore;
#[cfg(test)]
mod tests;

use redb::{ReadTransaction, TableError};

/// An error with its whole source chain, for the log of a failed backup.
pub(crate) use super::error::chain;
pub(crate) use dump::{DataFile, dump};
pub use error::BackupError;
pub use restore::RestoreReport;
pub(crate) use restore::{RestoreOptions, restore, verify};

use crate::state::StateError;
use crate::state::db::kv;

/// What a backup holds, as written or as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Version of the file format.
    pub version: u32,
    /// When the snapshot was taken, milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// Size of the file.
    pub bytes: u64,
    /// Tables of the database.
    pub tables: u64,
    /// Entries of all tables together.
    pub entries: u64,
    /// Files of the data directory (the kept component versions).
    pub files: u64,
    /// Their size together.
    pub file_bytes: u64,
    /// SHA-256 of the file's content (what the trailer holds), lowercase hex.
    pub sha256: String,
}

impl BackupSummary {
    /// When the snapshot was taken, as RFC 3339 UTC.
    pub fn taken_at(&self) -> String {
        let nanos = i128::from(self.taken_at_ms) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("{} ms after the epoch", self.taken_at_ms))
    }
}

/// Whether `name` is a plain relative path: 1 to 8 `/`-separated segments of ASCII letters,
/// digits, `.`, `-`, `_`, none empty or starting with `.` (so no `..`, no hidden files).
pub(super) fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= format::MAX_NAME
        && name.split('/').count() <= 8
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        })
}

/// Every entry of the string-keyed `table` as `snapshot` sees it (none when the table does
/// not exist), for deciding what else goes into a backup of that snapshot.
pub(crate) fn snapshot_entries(
    snapshot: &ReadTransaction,
    table: &str,
) -> Result<Vec<(String, Vec<u8>)>, StateError> {
    use redb::ReadableTable;
    let table = match snapshot.open_table(kv(table)) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(StateError::storage(e)),
    };
    let mut out = Vec::new();
    for item in table.iter().map_err(StateError::storage)? {
        let (k, v) = item.map_err(StateError::storage)?;
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}
