//! The deployed versions of each context, kept in the data directory: the `.wasm` of every
//! version under `plugins/<context>/<digest>.wasm`, and in the database the stack of active
//! versions (the top one runs; rollback pops it) plus the history of deployments.
//!
//! Both are bounded (`keep_versions`): the file of a version that neither the stack, the
//! history nor the configured file refers to any more is deleted once the record without
//! it has committed (never before: a crash in between leaves a file too many, never a
//! record without its file), and [`VersionStore::sweep_orphans`] deletes at start what such
//! a crash, or a deployment refused after its file was written, left behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::Runtime;
use crate::state::backup::{DataFile, snapshot_entries};
use crate::state::{CommitOutcome, Committer, Db, StateError, Table, UnitOfWork, VERSIONS};

/// The directory of the data directory that holds the kept versions.
pub(crate) const ARTIFACT_DIR: &str = "plugins";

/// One deployed version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VersionRecord {
    pub digest: String,
    pub version: String,
    pub origin: String,
    pub deployed_at: String,
}

/// Everything kept about one context's versions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Versions {
    /// Active versions, oldest first; the last one runs.
    pub stack: Vec<VersionRecord>,
    /// Every deployment, oldest first (bounded).
    pub history: Vec<VersionRecord>,
    /// Digest of the file the configuration pointed at when last started.
    pub configured: Option<String>,
}

impl Versions {
    /// The digests whose files this record needs: the stack, the history, the configured one.
    fn referenced(&self) -> BTreeSet<&str> {
        self.stack
            .iter()
            .chain(&self.history)
            .map(|r| r.digest.as_str())
            .chain(self.configured.as_deref())
            .collect()
    }
}

/// Versions kept on the stack and in the history, unless configured (`keep_versions`).
const DEFAULT_KEEP_VERSIONS: usize = 20;

/// A temporary file younger than this may still be being written.
const TEMP_GRACE: Duration = Duration::from_secs(60);

/// Reads and writes version records and artifacts.
#[derive(Clone)]
pub struct VersionStore {
    db: Db,
    committer: Committer,
    dir: PathBuf,
    /// Most versions on the stack, and in the history, of each context.
    keep: usize,
}

impl VersionStore {
    pub fn new(runtime: Runtime, data_dir: &Path) -> Self {
        Self::on(runtime.db().clone(), runtime.committer().clone(), data_dir)
    }

    /// A store on the state `db` (committing through `committer`) and `data_dir`.
    fn on(db: Db, committer: Committer, data_dir: &Path) -> Self {
        VersionStore {
            db,
            committer,
            dir: data_dir.join(ARTIFACT_DIR),
            keep: DEFAULT_KEEP_VERSIONS,
        }
    }

    /// This store, keeping `keep` versions (at least 1) on each context's stack and in its
    /// history.
    pub fn keeping(self, keep: usize) -> Self {
        VersionStore {
            keep: keep.max(1),
            ..self
        }
    }

    /// Versions of `context`.
    pub fn load(&self, context: &str) -> Result<Versions, StateError> {
        match self.db.read(VERSIONS, context)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| StateError::invalid(format!("unreadable versions of {context}: {e}"))),
            None => Ok(Versions::default()),
        }
    }

    /// Every context with recorded versions.
    pub fn contexts(&self) -> Result<Vec<String>, StateError> {
        Ok(self
            .db
            .read_prefix(VERSIONS, "")?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Save `versions` of `context`, bounded to the versions kept; then delete the files of
    /// the versions the saved record no longer refers to (those of the record it replaced,
    /// or of `versions`, that fell out).
    pub async fn save(&self, context: &str, versions: &Versions) -> Result<(), StateError> {
        let mut v = versions.clone();
        if v.stack.len() > self.keep {
            v.stack.drain(..v.stack.len() - self.keep);
        }
        if v.history.len() > self.keep {
            v.history.drain(..v.history.len() - self.keep);
        }
        let bytes = serde_json::to_vec(&v).map_err(StateError::invalid)?;
        let table: Table = Arc::from(VERSIONS);
        let replaced = loop {
            let mut unit = UnitOfWork::begin(&self.db)?;
            // Read in the unit: a save meanwhile is a conflict, so `replaced` is exactly
            // what this commit replaces.
            let replaced = unit.get(&table, context)?;
            unit.put(&table, context, Some(bytes.clone()));
            if let CommitOutcome::Committed { .. } = self.committer.commit(unit).await? {
                break replaced;
            }
        };
        let replaced: Versions = replaced
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let kept = v.referenced();
        let dropped: BTreeSet<&str> = replaced
            .referenced()
            .union(&versions.referenced())
            .filter(|d| !kept.contains(*d))
            .copied()
            .collect();
        for digest in dropped {
            let path = self.artifact_path(context, digest);
            if remove_file(&path) {
                tracing::info!(context, digest, file = %path.display(), "deleted the file of a version no longer kept");
            }
        }
        Ok(())
    }

    /// Delete the files of `<data dir>/plugins` that no version record refers to: left by a
    /// crash between a save and its deletions, or by a deployment refused after its file was
    /// written; and temporary files older than a minute. Meant for the start, before any
    /// deployment. Returns how many files it deleted; a context whose record cannot be read
    /// is left alone.
    pub fn sweep_orphans(&self) -> usize {
        let contexts = match std::fs::read_dir(&self.dir) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot look for files of versions no longer kept");
                return 0;
            }
        };
        let mut deleted = 0;
        for entry in contexts.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !crate::runtime::valid_name(&name) || !entry.path().is_dir() {
                continue;
            }
            let versions = match self.load(&name) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(context = %name, error = %e, "cannot read the versions: their files are left as they are");
                    continue;
                }
            };
            let referenced: BTreeSet<PathBuf> = versions
                .referenced()
                .into_iter()
                .map(|d| self.artifact_path(&name, d))
                .collect();
            deleted += self.sweep_context(&name, &entry.path(), &referenced);
            if versions.stack.is_empty() && versions.history.is_empty() {
                // Empty now: no version of this context remains.
                let _ = std::fs::remove_dir(entry.path());
            }
        }
        deleted
    }

    /// Delete the files of one context's directory that are not `referenced`.
    fn sweep_context(&self, context: &str, dir: &Path, referenced: &BTreeSet<PathBuf>) -> usize {
        let files = match std::fs::read_dir(dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot look for files of versions no longer kept");
                return 0;
            }
        };
        let mut deleted = 0;
        for file in files.flatten() {
            let path = file.path();
            let name = file.file_name().to_string_lossy().into_owned();
            let orphan = if name.starts_with('.') && name.ends_with(".tmp") {
                file.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > TEMP_GRACE))
            } else {
                name.ends_with(".wasm") && !referenced.contains(&path)
            };
            if orphan && remove_file(&path) {
                tracing::info!(context, file = %path.display(), "deleted a file no version refers to");
                deleted += 1;
            }
        }
        deleted
    }

    /// Where the `.wasm` of version `digest` of `context` is kept.
    fn artifact_path(&self, context: &str, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.join(context).join(format!("{hex}.wasm"))
    }

    /// Keep the bytes of a version (idempotent).
    pub fn store_artifact(&self, context: &str, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.artifact_path(context, digest);
        if path.exists() {
            return Ok(());
        }
        let dir = self.dir.join(context);
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }

    /// The files of every version `snapshot` records (the stacks, the histories and the
    /// configured files) that exist, opened, each named by its path in the data directory:
    /// what a backup of that snapshot holds besides the database.
    pub(crate) fn kept_files(
        &self,
        snapshot: &redb::ReadTransaction,
    ) -> Result<Vec<DataFile>, StateError> {
        let mut out = Vec::new();
        for (context, record) in snapshot_entries(snapshot, VERSIONS)? {
            let v: Versions = serde_json::from_slice(&record).map_err(|e| {
                StateError::invalid(format!("unreadable versions of {context}: {e}"))
            })?;
            for digest in v.referenced() {
                let path = self.artifact_path(&context, digest);
                let opened = std::fs::File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f)));
                let (len, file) = match opened {
                    Ok(found) => found,
                    // Never kept, or deleted since the snapshot because a deployment that
                    // committed after it dropped the version: the backup goes without it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(StateError::invalid(format!(
                            "cannot read the kept version {}: {e}",
                            path.display()
                        )));
                    }
                };
                let hex = digest.trim_start_matches("sha256:");
                out.push(DataFile {
                    name: format!("{ARTIFACT_DIR}/{context}/{hex}.wasm"),
                    file,
                    len,
                });
            }
        }
        Ok(out)
    }

    /// The bytes of a kept version, if still there.
    pub fn read_artifact(&self, context: &str, digest: &str) -> Option<Vec<u8>> {
        std::fs::read(self.artifact_path(context, digest)).ok()
    }
}

/// Remove `path`; true when this call removed it (false when it was not there, or could not
/// be removed: logged, and the sweep at the next start tries again).
fn remove_file(path: &Path) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot delete the file of a version no longer kept");
            false
        }
    }
}

#[cfg(test)]
mod tests;
