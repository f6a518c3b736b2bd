//! Writing a backup of one read transaction: every table of the snapshot in key order, then
//! the files the caller opened, then the trailer. It reads as it writes, so memory stays
//! bounded by one record whatever the size of the database.

use std::fs::File;
use std::io::Write;

use redb::{
    MultimapTableHandle, ReadTransaction, ReadableTable, ReadableTableMetadata, TableError,
    TableHandle,
};

use super::BackupSummary;
use super::error::BackupError;
use super::format::{TableKind, Writer};
use crate::state::StateError;
use crate::state::db::{EVENTS, kv};

/// A file of the data directory that goes into a backup: its name in the backup (a path
/// relative to the data directory, `/`-separated), opened before the backup begins so a
/// file removed meanwhile is still read whole.
pub(crate) struct DataFile {
    pub name: String,
    pub file: File,
    pub len: u64,
}

fn db(e: impl Into<redb::Error>) -> BackupError {
    BackupError::Database(StateError::storage(e))
}

/// Write the backup of `snapshot` (taken at `taken_at_ms`) and of `files` to `out`; the
/// output and what the backup holds.
pub(crate) fn dump<W: Write>(
    snapshot: &ReadTransaction,
    files: Vec<DataFile>,
    taken_at_ms: u64,
    out: W,
) -> Result<(W, BackupSummary), BackupError> {
    if let Some(t) = snapshot.list_multimap_tables().map_err(db)?.next() {
        return Err(BackupError::Unsupported(format!(
            "the multimap table {}",
            t.name()
        )));
    }
    let names: Vec<String> = snapshot
        .list_tables()
        .map_err(db)?
        .map(|t| t.name().to_string())
        .collect();
    let mut w = Writer::new(out, taken_at_ms)?;
    for name in names {
        if name == EVENTS.name() {
            let table = snapshot.open_table(EVENTS).map_err(db)?;
            w.table(TableKind::U64, &name, table.len().map_err(db)?)?;
            for item in table.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                w.entry(&k.value().to_le_bytes(), v.value())?;
            }
        } else {
            let table = match snapshot.open_table(kv(&name)) {
                Ok(t) => t,
                Err(TableError::TableTypeMismatch { .. }) => {
                    return Err(BackupError::Unsupported(format!(
                        "the table {name}, whose types are not string to bytes"
                    )));
                }
                Err(e) => return Err(db(e)),
            };
            w.table(TableKind::Str, &name, table.len().map_err(db)?)?;
            for item in table.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                w.entry(k.value().as_bytes(), v.value())?;
            }
        }
    }
    for f in files {
        w.file(&f.name, f.len, f.file)?;
    }
    w.finish()
}
