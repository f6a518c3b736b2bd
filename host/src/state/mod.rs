//! Durable state: one redb database holding a table per context and the host's own tables,
//! the unit of work every invocation writes into, and the committer that makes units of work
//! durable (optimistic validation, group commit), and recovery from storage errors (the
//! committer reopens the database; `health` tells the probes). `compact` gives the space
//! of deleted rows back to the filesystem while no host runs. `backup` writes a snapshot
//! (and the files it refers to) to one file while the host serves, and restores it.

pub(crate) mod backup;
mod clock;
mod commit;
mod compact;
mod contention;
mod db;
mod error;
mod health;
pub(crate) mod inbox;
mod sequences;
mod uow;
mod usage;

pub(crate) use commit::{CommitOutcome, Committer};
pub use compact::{CompactError, CompactReport, compact};
pub(crate) use contention::contention_backoff;
pub(crate) use db::{
    CURSORS, DEAD_LETTERS, DEFAULT_CACHE_BYTES, Db, Table, VERSIONS, context_table, db_tables,
    inbox_table,
};
pub(crate) use error::StateError;
pub(crate) use health::RecoveryPolicy;
pub(crate) use sequences::{SequenceError, Sequences};
pub(crate) use uow::{
    LimitError, OutgoingEvent, ScanError, ScanRange, SharedUnit, UnitLimits, UnitOfWork, share,
    unshare,
};
pub(crate) use usage::TableUsage;

#[cfg(test)]
mod small_disk;
#[cfg(test)]
mod tests;
