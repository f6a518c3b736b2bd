//! Durable positions in the event log, one per key of the cursor table: a subscriber of the
//! embedded bus (its context name) or the broker relay.

use std::sync::Arc;

use crate::bus::BusCtx;
use crate::state::{CURSORS, CommitOutcome, StateError, Table, UnitOfWork};

/// The cursor table.
pub(super) fn table() -> Table {
    Arc::from(CURSORS)
}

/// The sequence number stored under `key` (0 when none).
pub(super) fn read(bus: &BusCtx, key: &str) -> Result<u64, StateError> {
    Ok(bus
        .db()
        .read(CURSORS, key)?
        .and_then(|b| b.as_slice().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// Every stored cursor: its key and sequence number.
pub(super) fn all(bus: &BusCtx) -> Result<Vec<(String, u64)>, StateError> {
    Ok(bus
        .db()
        .read_prefix(CURSORS, "")?
        .into_iter()
        .map(|(k, v)| {
            let seq = v.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
            (k, seq)
        })
        .collect())
}

/// Whether a cursor key is a context's (the transports' own keys hold a `:`, which no
/// context name does).
pub(super) fn is_context(key: &str) -> bool {
    !key.contains(':')
}

/// Store `seq` under `key`, durably.
pub(super) async fn write(bus: &BusCtx, key: &str, seq: u64) -> Result<(), StateError> {
    let table = table();
    loop {
        let mut unit = UnitOfWork::begin(bus.db())?;
        unit.put(&table, key, Some(seq.to_be_bytes().to_vec()));
        if let CommitOutcome::Committed { .. } = bus.committer().commit(unit).await? {
            return Ok(());
        }
    }
}
