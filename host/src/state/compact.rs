//! Offline compaction of the state database (`ctxhost compact`): redb reuses freed pages
//! but never gives them back to the filesystem, so after a large deletion the file keeps its
//! size until it is compacted. Compaction needs the database to itself: it refuses a file a
//! running host holds open.

use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError};

/// The database file of a data directory.
const FILE: &str = "state.redb";

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// The database file.
    pub path: PathBuf,
    /// Its size before, in bytes.
    pub before: u64,
    /// Its size after, in bytes.
    pub after: u64,
}

/// Why the database could not be compacted.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("{path}: no state database here (is this a data directory?)")]
    Missing { path: String },
    #[error("{path} is open in another process: stop the host before compacting")]
    InUse { path: String },
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: DatabaseError,
    },
    #[error("cannot compact {path}: {source}")]
    Compact {
        path: String,
        #[source]
        source: redb::CompactionError,
    },
    #[error("cannot read the size of {path}: {source}")]
    Size {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn size(path: &Path) -> Result<u64, CompactError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| CompactError::Size {
            path: path.display().to_string(),
            source,
        })
}

/// Compact `<dir>/state.redb`, which no process may hold open.
pub fn compact(dir: &Path) -> Result<CompactReport, CompactError> {
    let path = dir.join(FILE);
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(CompactError::Missing { path: shown });
    }
    let before = size(&path)?;
    let mut db = Database::open(&path).map_err(|source| match source {
        DatabaseError::DatabaseAlreadyOpen => CompactError::InUse {
            path: shown.clone(),
        },
        source => CompactError::Open {
            path: shown.clone(),
            source,
        },
    })?;
    tracing::info!(path = %shown, bytes = before, "compacting");
    db.compact().map_err(|source| CompactError::Compact {
        path: shown.clone(),
        source,
    })?;
    drop(db);
    let after = size(&path)?;
    Ok(CompactReport {
        path,
        before,
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

    const T: TableDefinition<&str, &[u8]> = TableDefinition::new("t");

    #[test]
    fn compaction_gives_freed_space_back_and_refuses_what_it_cannot_touch() {
        let dir = std::env::temp_dir().join(format!("ctxhost-compact-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(matches!(compact(&dir), Err(CompactError::Missing { .. })));
        {
            let db = Database::create(dir.join(FILE)).expect("create");
            let value = vec![7u8; 4096];
            let w = db.begin_write().expect("write");
            {
                let mut t = w.open_table(T).expect("table");
                for i in 0..2_000 {
                    t.insert(format!("k{i}").as_str(), value.as_slice())
                        .expect("insert");
                }
            }
            w.commit().expect("commit");
            let w = db.begin_write().expect("write");
            {
                let mut t = w.open_table(T).expect("table");
                for i in 0..1_990 {
                    t.remove(format!("k{i}").as_str()).expect("remove");
                }
            }
            w.commit().expect("commit");
            // Held open: refused, the file untouched.
            assert!(matches!(compact(&dir), Err(CompactError::InUse { .. })));
        }
        let report = compact(&dir).expect("compacts");
        assert!(report.after < report.before, "{report:?}");
        let db = Database::open(dir.join(FILE)).expect("reopen");
        let r = db.begin_read().expect("read");
        let t = r.open_table(T).expect("table");
        assert_eq!(t.len().expect("len"), 10, "what was kept is still there");
        drop((t, r, db));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
