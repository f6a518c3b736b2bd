//! Durable state: one redb database holding a table per context and the host's own tables,
//! the unit of work every invocation writes into, and the committer that makes units of work
//! durable (optimistic validation, group commit).

mod commit;
mod db;
mod sequences;
mod uow;

pub use commit::{CommitOutcome, Committer};
pub use db::{
    CURSORS, DEAD_LETTERS, Db, StateError, Table, VERSIONS, context_table, db_tables, inbox_table,
};
pub use sequences::Sequences;
pub use uow::{OutgoingEvent, Savepoint, ScanRange, UnitOfWork};

#[cfg(test)]
mod tests;
