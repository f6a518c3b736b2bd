//! The JWKS file, re-read when it changes: a rotated Kubernetes Secret (or any replaced
//! file) takes effect without a restart.
//!
//! No background task: [`JwksFile::keys`] looks at the file's metadata (length, modification
//! time, inode) at most once per [`RECHECK`], and a token naming an unknown `kid` may look
//! again after [`RECHECK_ON_MISS`] (a key that was just rotated in). Only the caller that
//! wins the turn looks; the others go on with the keys in place, which a read lock hands
//! out as an `Arc` (no lock is held while a token is verified). A changed file that cannot
//! be used leaves the previous keys in place, with one warning per change.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::Algorithm;

use super::jwks::{JwksError, KeySet, MAX_JWKS_BYTES};
use crate::sync::{lock, read, write};

/// How often the file's metadata is looked at.
pub(super) const RECHECK: Duration = Duration::from_secs(1);
/// How soon a token with an unknown `kid` may make the host look again.
pub(super) const RECHECK_ON_MISS: Duration = Duration::from_millis(100);

/// What identifies one version of the file (`None`: its metadata cannot be read).
type Stamp = Option<(u64, Option<SystemTime>, u64)>;

/// What the last look found.
struct Seen {
    /// The version the keys in place come from (`None`: the file changed while it was
    /// read, so the next look reads it again).
    loaded: Option<Stamp>,
    /// A later version that could not be used (warned about once).
    failed: Option<Stamp>,
}

/// A JWKS file and the keys it last held.
pub(super) struct JwksFile {
    path: PathBuf,
    accepted: Vec<Algorithm>,
    keys: RwLock<Arc<KeySet>>,
    seen: Mutex<Seen>,
    /// Milliseconds from `epoch` to the last look.
    last_look: AtomicU64,
    epoch: Instant,
    recheck: Duration,
    recheck_on_miss: Duration,
}

impl JwksFile {
    /// Read the file, keeping the keys usable with one of `accepted`. A file that cannot be
    /// read or holds no usable key is an error (at start, the host refuses to run).
    pub(super) fn open(
        path: &Path,
        accepted: &[Algorithm],
        recheck: Duration,
        recheck_on_miss: Duration,
    ) -> Result<JwksFile, LoadError> {
        let stamp = stamp(path);
        let (keys, notes) = load(path, accepted)?;
        for note in notes {
            tracing::warn!(path = %path.display(), "JWKS file: {note}");
        }
        Ok(JwksFile {
            path: path.to_path_buf(),
            accepted: accepted.to_vec(),
            keys: RwLock::new(Arc::new(keys)),
            seen: Mutex::new(Seen {
                loaded: Some(stamp),
                failed: None,
            }),
            last_look: AtomicU64::new(0),
            epoch: Instant::now(),
            recheck,
            recheck_on_miss,
        })
    }

    /// The file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The keys in place, after looking at the file if it is time.
    pub(super) fn keys(&self) -> Arc<KeySet> {
        self.look(self.recheck);
        read(&self.keys).clone()
    }

    /// After a token named a `kid` that `had` lacks: newer keys, when the file changed since
    /// (looking at it at most once per [`RECHECK_ON_MISS`]) or another caller just put them
    /// in place; else `None`.
    pub(super) fn keys_after_miss(&self, had: &Arc<KeySet>) -> Option<Arc<KeySet>> {
        self.look(self.recheck_on_miss);
        let now = read(&self.keys).clone();
        (!Arc::ptr_eq(&now, had)).then_some(now)
    }

    /// Look at the file if the last look is `interval` old and no one else is looking.
    fn look(&self, interval: Duration) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_look.load(Ordering::Relaxed);
        let interval = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) < interval
            || self
                .last_look
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut seen = lock(&self.seen);
        let stamp = stamp(&self.path);
        if seen.loaded == Some(stamp) || seen.failed == Some(stamp) {
            return;
        }
        let result = load(&self.path, &self.accepted);
        // Changed while it was read (rewritten in place): what was read may be neither
        // version, so it is only remembered when the file held still.
        let settled = self::stamp(&self.path) == stamp;
        match result {
            Ok((keys, notes)) => {
                for note in notes {
                    tracing::warn!(path = %self.path.display(), "JWKS file: {note}");
                }
                tracing::info!(
                    path = %self.path.display(),
                    keys = keys.len(),
                    "JWKS file changed: its keys are in place"
                );
                *write(&self.keys) = Arc::new(keys);
                seen.loaded = settled.then_some(stamp);
                seen.failed = None;
            }
            Err(e) if settled => {
                tracing::warn!(
                    path = %self.path.display(),
                    error = %e,
                    kept = read(&self.keys).len(),
                    "JWKS file changed but cannot be used: the previous keys stay in place"
                );
                seen.failed = Some(stamp);
            }
            Err(_) => {}
        }
    }
}

/// Why the file could not give keys.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

fn load(path: &Path, accepted: &[Algorithm]) -> Result<(KeySet, Vec<String>), LoadError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_JWKS_BYTES + 1)
        .read_to_end(&mut bytes)?;
    let mut notes = Vec::new();
    let keys = KeySet::parse(&bytes, accepted, &mut notes)?;
    Ok((keys, notes))
}

/// The file's version, by its metadata (symbolic links followed, as a mounted Secret's are).
fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.len(), meta.modified().ok(), inode))
}
