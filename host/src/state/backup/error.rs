//! Why a backup could not be taken, checked or restored. A damaged file is told apart by
//! what is wrong with it and where (byte offsets count from the start of the file).

use std::io;

use crate::state::StateError;

/// Errors of taking, checking and restoring backups.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file does not start with the magic bytes of a backup.
    #[error("not a ctxhost backup: the file does not start with the backup's magic bytes")]
    NotABackup,
    /// The file is a backup of a layout this build does not read.
    #[error(
        "backup format version {found} is not supported (this ctxhost reads version {supported})"
    )]
    Version { found: u32, supported: u32 },
    /// The file ends before its trailer.
    #[error(
        "the backup is truncated: it ends at byte {at}, {inside} (an interrupted copy or backup?)"
    )]
    Truncated { at: u64, inside: &'static str },
    /// A record's length is over the format's bound: the length is damaged.
    #[error("the backup is damaged at byte {at}: a record of {len} bytes, over the limit of {max}")]
    Oversize { at: u64, len: u64, max: u64 },
    /// The records do not fit together.
    #[error("the backup is damaged at byte {at}: {what}")]
    Damaged { at: u64, what: String },
    /// The SHA-256 of the content is not the one the trailer holds.
    #[error(
        "the backup is damaged: the SHA-256 of its content is {actual}, its trailer says {expected}"
    )]
    Digest { expected: String, actual: String },
    /// The trailer's counts are not what the file holds.
    #[error("the backup is damaged: its trailer counts {declared} {what}, the file holds {found}")]
    Counts {
        what: &'static str,
        declared: u64,
        found: u64,
    },
    /// The backup names a file outside the directories a restore replaces.
    #[error("the backup holds {name}, outside the directories a restore writes ({dirs})")]
    Outside { name: String, dirs: String },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Reading the snapshot failed while taking a backup.
    #[error("cannot read the database")]
    Database(#[source] StateError),
    /// The snapshot holds something the format cannot carry.
    #[error("the database holds {0}, which this backup format cannot carry")]
    Unsupported(String),
    /// Writing the backup failed (for the admin API: the client went away).
    #[error("cannot write the backup")]
    Write(#[source] io::Error),
    #[error("cannot read the component file {name} for the backup")]
    File {
        name: String,
        #[source]
        source: io::Error,
    },
    /// Restore: the target holds data and replacing it was not asked for.
    #[error(
        "{dir} is not empty: restore into a new or empty directory, or pass --force to replace its state database and kept versions"
    )]
    NotEmpty { dir: String },
    /// Restore: a host has the target's database open.
    #[error(
        "{path} is open in another process: stop the host before restoring into its data directory"
    )]
    InUse { path: String },
    /// Restore: writing the restored data failed; nothing was put in place.
    #[error("cannot restore into {path}")]
    Restore {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Restore: the new database refused a write; nothing was put in place.
    #[error("cannot write the restored database {path}")]
    Store {
        path: String,
        #[source]
        source: StateError,
    },
}

impl BackupError {
    /// Whether the error says the backup file itself is damaged, truncated or not a backup.
    pub fn is_damaged(&self) -> bool {
        matches!(
            self,
            BackupError::NotABackup
                | BackupError::Version { .. }
                | BackupError::Truncated { .. }
                | BackupError::Oversize { .. }
                | BackupError::Damaged { .. }
                | BackupError::Digest { .. }
                | BackupError::Counts { .. }
                | BackupError::Outside { .. }
        )
    }
}
