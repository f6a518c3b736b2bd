//! The deployed versions of each context, kept in the data directory: the `.wasm` of every
//! version under `plugins/<context>/<digest>.wasm`, and in the database the stack of active
//! versions (the top one runs; rollback pops it) plus the history of deployments.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::runtime::Runtime;
use crate::state::{CommitOutcome, StateError, Table, UnitOfWork, VERSIONS};

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

/// Most versions kept on the stack and in the history.
const KEEP: usize = 20;

/// Reads and writes version records and artifacts.
#[derive(Clone)]
pub struct VersionStore {
    runtime: Runtime,
    dir: PathBuf,
}

impl VersionStore {
    pub fn new(runtime: Runtime, data_dir: &Path) -> Self {
        VersionStore {
            runtime,
            dir: data_dir.join("plugins"),
        }
    }

    /// Versions of `context`.
    pub fn load(&self, context: &str) -> Result<Versions, StateError> {
        match self.runtime.db().read(VERSIONS, context)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| StateError::invalid(format!("unreadable versions of {context}: {e}"))),
            None => Ok(Versions::default()),
        }
    }

    /// Every context with recorded versions.
    pub fn contexts(&self) -> Result<Vec<String>, StateError> {
        Ok(self
            .runtime
            .db()
            .read_prefix(VERSIONS, "")?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Save `versions` of `context`.
    pub async fn save(&self, context: &str, versions: &Versions) -> Result<(), StateError> {
        let mut v = versions.clone();
        if v.stack.len() > KEEP {
            v.stack.drain(..v.stack.len() - KEEP);
        }
        if v.history.len() > KEEP {
            v.history.drain(..v.history.len() - KEEP);
        }
        let bytes = serde_json::to_vec(&v).map_err(StateError::invalid)?;
        let table: Table = Arc::from(VERSIONS);
        loop {
            let mut unit = UnitOfWork::begin(self.runtime.db())?;
            unit.put(&table, context, Some(bytes.clone()));
            if let CommitOutcome::Committed { .. } = self.runtime.committer().commit(unit).await? {
                return Ok(());
            }
        }
    }

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

    /// The bytes of a kept version, if still there.
    pub fn read_artifact(&self, context: &str, digest: &str) -> Option<Vec<u8>> {
        std::fs::read(self.artifact_path(context, digest)).ok()
    }
}
