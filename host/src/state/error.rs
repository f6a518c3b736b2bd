//! Errors of the state layer, with what a caller needs to decide: a storage fault the host
//! recovers from by itself (retry later) is told apart from every other failure, and the
//! database's own error stays in the source chain instead of in the message.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Why storage refuses changes for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// The filesystem of the data directory has no space (or quota) left.
    Full,
    /// Reading or writing the database file failed, or the database is being reopened.
    Failing,
}

impl StorageFault {
    /// Short, non-secret name: `full` or `failing`.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageFault::Full => "full",
            StorageFault::Failing => "failing",
        }
    }

    /// What an operator or client can be told, without internals.
    pub fn reason(self) -> &'static str {
        match self {
            StorageFault::Full => "the host's storage is full",
            StorageFault::Failing => "the host's storage is failing",
        }
    }

    /// The fault an I/O error stands for.
    pub(crate) fn of_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::FileTooLarge => StorageFault::Full,
            _ => StorageFault::Failing,
        }
    }
}

impl fmt::Display for StorageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// Errors of the state layer. Every variant is cheap to clone (sources are shared), so the
/// committer can answer each unit of a failed group with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the database {path}")]
    Open {
        path: String,
        #[source]
        source: Arc<redb::DatabaseError>,
    },
    /// Storage cannot take changes now; the host reopens its database and recovers by
    /// itself once the cause is gone (see `Committer`). Callers should answer "retry later".
    #[error("{fault}; changes are refused until it recovers, retry later")]
    Unavailable {
        fault: StorageFault,
        #[source]
        source: Option<Arc<redb::Error>>,
    },
    /// Any other failure of the database (corruption, a host bug, ...).
    #[error("the database failed")]
    Storage(#[source] Arc<redb::Error>),
    /// A stored record or a host invariant is not as expected.
    #[error("{0}")]
    Invalid(String),
    #[error("the committer has stopped")]
    CommitterGone,
}

impl StateError {
    /// Classify an error of the database: an I/O failure (or the refusal that follows one,
    /// or a read of a database closed for reopening) is [`StateError::Unavailable`].
    pub(crate) fn storage(e: impl Into<redb::Error>) -> Self {
        let e: redb::Error = e.into();
        let fault = match &e {
            redb::Error::Io(io) => Some(StorageFault::of_io(io)),
            redb::Error::PreviousIo | redb::Error::DatabaseClosed => Some(StorageFault::Failing),
            _ => None,
        };
        match fault {
            Some(fault) => StateError::Unavailable {
                fault,
                source: Some(Arc::new(e)),
            },
            None => StateError::Storage(Arc::new(e)),
        }
    }

    /// A stored record or host invariant that is not as expected.
    pub(crate) fn invalid(what: impl fmt::Display) -> Self {
        StateError::Invalid(what.to_string())
    }

    /// True when storage refuses changes for now and the host is recovering by itself: a
    /// caller should answer 503 with `Retry-After` (or retry later itself).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StateError::Unavailable { .. })
    }

    /// The storage fault behind an [`StateError::Unavailable`].
    pub fn fault(&self) -> Option<StorageFault> {
        match self {
            StateError::Unavailable { fault, .. } => Some(*fault),
            _ => None,
        }
    }
}

/// `e` with its whole source chain, for logs (never for answers to clients).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_unavailable_with_their_kind_and_keep_the_source() {
        let full =
            StateError::storage(redb::Error::Io(io::Error::from(io::ErrorKind::StorageFull)));
        assert!(full.is_unavailable());
        assert_eq!(full.fault(), Some(StorageFault::Full));
        assert!(!full.to_string().contains("redb"), "{full}");
        assert!(std::error::Error::source(&full).is_some());
        let previous = StateError::storage(redb::StorageError::PreviousIo);
        assert_eq!(previous.fault(), Some(StorageFault::Failing));
        assert!(!previous.to_string().contains("Previous I/O"), "{previous}");
        assert!(
            chain(&previous).contains("Previous I/O"),
            "{}",
            chain(&previous)
        );
        let corrupt = StateError::storage(redb::StorageError::Corrupted("x".into()));
        assert!(!corrupt.is_unavailable());
    }
}
