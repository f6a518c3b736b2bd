//! Checking a backup file, and restoring one into a data directory.
//!
//! A restore reads the file twice: once to check all of it (nothing is written unless it
//! passes), then to write it into a staging directory: a new `state.redb` filled in batches,
//! and the files. The staging directory sits next to the target when the target does not
//! exist yet (and is renamed to it), otherwise inside the target (so both are on one
//! filesystem, even when the target is a mount point); then the target's `state.redb` and
//! the restored directories are moved aside, the restored ones moved in, and what was moved
//! aside deleted. Anything else in the target (the admin token, the compilation cache)
//! stays. The second pass checks the digest again, so a file changed in between is refused
//! too, with nothing put in place.

use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, TableDefinition};

use super::BackupSummary;
use super::error::BackupError;
use super::format::{TableKind, Visit, read};
use crate::state::StateError;
use crate::state::db::kv;

/// The database file of a data directory.
const DB_FILE: &str = "state.redb";
/// Entries buffered before they are written in one transaction, and their bytes.
const BATCH_ENTRIES: usize = 10_000;
const BATCH_BYTES: usize = 16 << 20;
/// Buffer of the reader: records are read whole.
const READ_BUFFER: usize = 1 << 20;

/// How to restore.
pub(crate) struct RestoreOptions<'a> {
    /// Replace the database and the restored directories of a non-empty target.
    pub force: bool,
    /// The top-level directories of the data directory that a backup's files go to; a
    /// restore replaces them whole.
    pub file_dirs: &'a [&'a str],
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// What the backup held.
    pub backup: BackupSummary,
    /// The data directory restored into.
    pub dir: PathBuf,
    /// Whether a database or restored directories that were there were replaced.
    pub replaced: bool,
}

fn restore_error(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Restore {
        path: path.display().to_string(),
        source,
    }
}

/// Whether `name` lies in one of `dirs` (below it, not the directory itself).
fn check_dir(name: &str, dirs: &[&str]) -> Result<(), BackupError> {
    match name.split_once('/') {
        Some((top, _)) if dirs.contains(&top) => Ok(()),
        _ => Err(BackupError::Outside {
            name: name.to_string(),
            dirs: dirs.join(", "),
        }),
    }
}

/// Only checks.
struct Check<'a> {
    dirs: &'a [&'a str],
}

impl Visit for Check<'_> {
    fn file(&mut self, name: &str, _size: u64) -> Result<(), BackupError> {
        check_dir(name, self.dirs)
    }
}

fn open(path: &Path) -> Result<BufReader<File>, BackupError> {
    let file = File::open(path).map_err(|source| BackupError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(BufReader::with_capacity(READ_BUFFER, file))
}

/// Read and check the whole backup at `path`, writing nothing; what it holds. Files must go
/// to one of `file_dirs`.
pub(crate) fn verify(path: &Path, file_dirs: &[&str]) -> Result<BackupSummary, BackupError> {
    read(
        open(path)?,
        &path.display().to_string(),
        &mut Check { dirs: file_dirs },
    )
}

/// Restore the backup at `from` into the data directory `dir` (see the module's
/// documentation): refused, with nothing written, when the file does not pass every check,
/// when `dir` is not empty and `force` is not set, or when a host holds `dir`'s database.
pub(crate) fn restore(
    from: &Path,
    dir: &Path,
    opts: &RestoreOptions<'_>,
) -> Result<RestoreReport, BackupError> {
    let backup = verify(from, opts.file_dirs)?;
    let dir = std::path::absolute(dir).map_err(restore_error(dir))?;
    let occupied = match fs::read_dir(&dir) {
        Ok(mut entries) => Some(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(restore_error(&dir)(e)),
    };
    if occupied == Some(true) && !opts.force {
        return Err(BackupError::NotEmpty {
            dir: dir.display().to_string(),
        });
    }
    // Held until the new database is in place: no host can open the old one meanwhile.
    let held = hold(&dir.join(DB_FILE))?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let staging = match occupied {
        Some(_) => dir.join(format!(".restore-{id}")),
        None => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "data".into());
            let parent = dir.parent().unwrap_or(Path::new("/"));
            fs::create_dir_all(parent).map_err(restore_error(parent))?;
            parent.join(format!(".{name}.restore-{id}"))
        }
    };
    fs::create_dir(&staging).map_err(restore_error(&staging))?;
    let written = load(from, &staging, opts.file_dirs).and_then(|again| {
        if again.sha256 == backup.sha256 {
            Ok(())
        } else {
            Err(BackupError::Damaged {
                at: 0,
                what: format!("{} changed while it was restored", from.display()),
            })
        }
    });
    let placed = written.and_then(|()| match occupied {
        None => {
            fs::rename(&staging, &dir).map_err(restore_error(&dir))?;
            sync_dir(dir.parent().unwrap_or(Path::new("/")));
            Ok(false)
        }
        Some(_) => replace(&dir, &staging, &id, opts.file_dirs),
    });
    drop(held);
    match placed {
        Ok(replaced) => Ok(RestoreReport {
            backup,
            dir,
            replaced,
        }),
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Open the database at `path` if there is one, which fails when another process holds it.
fn hold(path: &Path) -> Result<Option<Database>, BackupError> {
    if !path.exists() {
        return Ok(None);
    }
    match Database::open(path) {
        Ok(db) => Ok(Some(db)),
        Err(DatabaseError::DatabaseAlreadyOpen) => Err(BackupError::InUse {
            path: path.display().to_string(),
        }),
        // A database that does not open (damaged, say) is no host's: it is replaced.
        Err(_) => Ok(None),
    }
}

/// Move the restored database and directories of `staging` into `dir` in place of what is
/// there; whether anything was replaced. On a failure, what was moved is moved back.
fn replace(dir: &Path, staging: &Path, id: &str, file_dirs: &[&str]) -> Result<bool, BackupError> {
    let aside = dir.join(format!(".restore-{id}-replaced"));
    fs::create_dir(&aside).map_err(restore_error(&aside))?;
    let names: Vec<&str> = std::iter::once(DB_FILE)
        .chain(file_dirs.iter().copied())
        .collect();
    // (from, to) of every rename done, to undo them in reverse on a failure.
    let mut done: Vec<(PathBuf, PathBuf)> = Vec::new();
    let step = |from: PathBuf, to: PathBuf, done: &mut Vec<(PathBuf, PathBuf)>| {
        fs::rename(&from, &to).map_err(restore_error(&to))?;
        done.push((from, to));
        Ok::<(), BackupError>(())
    };
    let mut moved = || -> Result<bool, BackupError> {
        let mut replaced = false;
        for name in &names {
            let old = dir.join(name);
            if fs::symlink_metadata(&old).is_ok() {
                step(old, aside.join(name), &mut done)?;
                replaced = true;
            }
        }
        for name in &names {
            let new = staging.join(name);
            if new.exists() {
                step(new, dir.join(name), &mut done)?;
            }
        }
        Ok(replaced)
    };
    match moved() {
        Ok(replaced) => {
            sync_dir(dir);
            let _ = fs::remove_dir_all(&aside);
            let _ = fs::remove_dir_all(staging);
            Ok(replaced)
        }
        Err(e) => {
            for (from, to) in done.into_iter().rev() {
                let _ = fs::rename(&to, &from);
            }
            let _ = fs::remove_dir_all(&aside);
            Err(e)
        }
    }
}

/// Make a directory's entries durable (renames, new files); best effort where the platform
/// cannot.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Write the backup at `from` into `staging`: `state.redb` and the files; what it held.
fn load(from: &Path, staging: &Path, file_dirs: &[&str]) -> Result<BackupSummary, BackupError> {
    let db_path = staging.join(DB_FILE);
    let shown = db_path.display().to_string();
    // The host's bounded page cache: a restore's memory does not follow the backup's size.
    let db = redb::Builder::new()
        .set_cache_size(crate::state::DEFAULT_CACHE_BYTES)
        .create(&db_path)
        .map_err(|e| BackupError::Store {
            path: shown.clone(),
            source: StateError::storage(e),
        })?;
    let mut loader = Loader {
        db,
        shown,
        staging,
        dirs: file_dirs,
        table: None,
        batch: Vec::new(),
        batch_bytes: 0,
        key: Vec::new(),
        value: Vec::new(),
        file: None,
    };
    let summary = read(open(from)?, &from.display().to_string(), &mut loader)?;
    loader.flush()?;
    drop(loader.db);
    for dir in file_dirs {
        sync_tree(&staging.join(dir));
    }
    sync_dir(staging);
    Ok(summary)
}

/// Sync every directory under `dir` (the files were synced as they were closed).
fn sync_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                sync_tree(&e.path());
            }
        }
        sync_dir(dir);
    }
}

/// Writes what [`read`] finds into a new database and files.
struct Loader<'a> {
    db: Database,
    /// The new database's path, for errors.
    shown: String,
    staging: &'a Path,
    dirs: &'a [&'a str],
    /// The current table.
    table: Option<(TableKind, String)>,
    /// Entries of the current table not yet written.
    batch: Vec<(Vec<u8>, Vec<u8>)>,
    batch_bytes: usize,
    /// The entry being read.
    key: Vec<u8>,
    value: Vec<u8>,
    /// The file being written.
    file: Option<(PathBuf, File)>,
}

impl Loader<'_> {
    fn store(&self, e: impl Into<redb::Error>) -> BackupError {
        BackupError::Store {
            path: self.shown.clone(),
            source: StateError::storage(e),
        }
    }

    /// Write the batch into the current table (creating it), in one transaction.
    fn flush(&mut self) -> Result<(), BackupError> {
        let Some((kind, name)) = &self.table else {
            return Ok(());
        };
        let txn = self.db.begin_write().map_err(|e| self.store(e))?;
        match kind {
            TableKind::Str => {
                let mut t = txn.open_table(kv(name)).map_err(|e| self.store(e))?;
                for (k, v) in &self.batch {
                    let k = std::str::from_utf8(k).map_err(|_| BackupError::Damaged {
                        at: 0,
                        what: format!("a key of {name} that is not UTF-8"),
                    })?;
                    t.insert(k, v.as_slice()).map_err(|e| self.store(e))?;
                }
            }
            TableKind::U64 => {
                let def: TableDefinition<u64, &[u8]> = TableDefinition::new(name);
                let mut t = txn.open_table(def).map_err(|e| self.store(e))?;
                for (k, v) in &self.batch {
                    let k =
                        <[u8; 8]>::try_from(k.as_slice()).map_err(|_| BackupError::Damaged {
                            at: 0,
                            what: format!("a key of {name} that is not 8 bytes"),
                        })?;
                    t.insert(u64::from_le_bytes(k), v.as_slice())
                        .map_err(|e| self.store(e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.store(e))?;
        self.batch.clear();
        self.batch_bytes = 0;
        Ok(())
    }
}

impl Visit for Loader<'_> {
    fn table(&mut self, kind: TableKind, name: &str) -> Result<(), BackupError> {
        self.flush()?;
        self.table = Some((kind, name.to_string()));
        // Created now, so a table without entries is restored too.
        self.flush()
    }

    fn entry(&mut self, key: &[u8]) -> Result<(), BackupError> {
        self.key.clear();
        self.key.extend_from_slice(key);
        self.value.clear();
        Ok(())
    }

    fn file(&mut self, name: &str, _size: u64) -> Result<(), BackupError> {
        check_dir(name, self.dirs)?;
        self.flush()?;
        self.table = None;
        let path = name
            .split('/')
            .fold(self.staging.to_path_buf(), |p, seg| p.join(seg));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(restore_error(parent))?;
        }
        let file = File::create_new(&path).map_err(restore_error(&path))?;
        self.file = Some((path, file));
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        match &mut self.file {
            Some((path, file)) => file.write_all(bytes).map_err(restore_error(path)),
            None => {
                self.value.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn done(&mut self) -> Result<(), BackupError> {
        if let Some((path, file)) = self.file.take() {
            return file.sync_all().map_err(restore_error(&path));
        }
        self.batch_bytes += self.key.len() + self.value.len();
        self.batch.push((
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.value),
        ));
        if self.batch.len() >= BATCH_ENTRIES || self.batch_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }
}
