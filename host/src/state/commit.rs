//! The committer: the single writer of the database.
//!
//! Units of work arrive on a channel; the committer takes every unit waiting (a group),
//! validates each against the state as of the units before it, applies the valid ones, gives
//! their events sequence numbers and commits the group in one durable redb transaction, so
//! one fsync covers many invocations. A unit whose reads changed is answered `Conflict`
//! and its invocation runs again on fresh state.

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;

use redb::{Durability, ReadableTable, Table as RedbTable, WriteTransaction};
use tokio::sync::{oneshot, watch};

use super::db::{Db, EVENTS, SEQUENCES, StateError, kv};
use super::uow::{ReadRecord, UnitOfWork, digest_value, range_digest};

/// Most units of work committed in one transaction.
const MAX_GROUP: usize = 256;

/// How a unit of work ended at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Durable; its events got the sequence numbers `first..=last` (none when empty).
    Committed { events: Option<(u64, u64)> },
    /// Something it read changed before it could commit; nothing was written.
    Conflict,
}

struct Request {
    unit: UnitOfWork,
    reply: oneshot::Sender<Result<CommitOutcome, StateError>>,
}

/// Handle to the committer thread.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
    committed: watch::Receiver<u64>,
}

impl Committer {
    /// Start the committer thread on `db`.
    pub fn start(db: Db) -> Result<Self, StateError> {
        let last = last_event_seq(&db)?;
        let (tx, rx) = mpsc::channel::<Request>();
        let (seq_tx, seq_rx) = watch::channel(last);
        thread::Builder::new()
            .name("ctxhost-committer".into())
            .spawn(move || run(db, rx, seq_tx, last))
            .map_err(StateError::storage)?;
        Ok(Committer {
            tx,
            committed: seq_rx,
        })
    }

    /// Commit `unit` durably (or report a conflict). Read-only units return at once.
    pub async fn commit(&self, unit: UnitOfWork) -> Result<CommitOutcome, StateError> {
        if unit.is_read_only() {
            return Ok(CommitOutcome::Committed { events: None });
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { unit, reply })
            .map_err(|_| StateError::CommitterGone)?;
        rx.await.map_err(|_| StateError::CommitterGone)?
    }

    /// The sequence number of the last committed event; changes wake event transports.
    pub fn committed_events(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }
}

fn last_event_seq(db: &Db) -> Result<u64, StateError> {
    let txn = db.snapshot()?;
    let t = txn.open_table(EVENTS).map_err(StateError::storage)?;
    let last = t.last().map_err(StateError::storage)?;
    Ok(last.map(|(k, _)| k.value()).unwrap_or(0))
}

fn run(db: Db, rx: mpsc::Receiver<Request>, seq_tx: watch::Sender<u64>, mut next_seq: u64) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let before = next_seq;
        match commit_group(&db, &group, &mut next_seq) {
            Ok(outcomes) => {
                if next_seq != before {
                    seq_tx.send_replace(next_seq);
                }
                for (req, outcome) in group.into_iter().zip(outcomes) {
                    let _ = req.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                next_seq = before;
                tracing::error!(error = %e, units = group.len(), "commit failed");
                for req in group {
                    let _ = req.reply.send(Err(StateError::Storage(e.to_string())));
                }
            }
        }
    }
}

fn commit_group(
    db: &Db,
    group: &[Request],
    next_seq: &mut u64,
) -> Result<Vec<CommitOutcome>, StateError> {
    let mut txn = db.database().begin_write().map_err(StateError::storage)?;
    txn.set_durability(Durability::Immediate)
        .map_err(StateError::storage)?;
    let mut outcomes = Vec::with_capacity(group.len());
    {
        let mut tables: HashMap<String, RedbTable<'_, &'static str, &'static [u8]>> =
            HashMap::new();
        let mut events = txn.open_table(EVENTS).map_err(StateError::storage)?;
        for req in group {
            let unit = &req.unit;
            if !validate(&txn, &mut tables, unit)? {
                outcomes.push(CommitOutcome::Conflict);
                continue;
            }
            for ((table, key), value) in &unit.writes {
                let t = open(&txn, &mut tables, table)?;
                match value {
                    Some(v) => {
                        t.insert(key.as_str(), v.as_slice())
                            .map_err(StateError::storage)?;
                    }
                    None => {
                        t.remove(key.as_str()).map_err(StateError::storage)?;
                    }
                }
            }
            for (key, taken) in &unit.sequences {
                let t = open(&txn, &mut tables, SEQUENCES)?;
                let stored = t
                    .get(key.as_str())
                    .map_err(StateError::storage)?
                    .map(|v| decode_u64(v.value()))
                    .unwrap_or(0);
                if *taken > stored {
                    t.insert(key.as_str(), taken.to_be_bytes().as_slice())
                        .map_err(StateError::storage)?;
                }
            }
            let range = if unit.events.is_empty() {
                None
            } else {
                let first = *next_seq + 1;
                for ev in &unit.events {
                    *next_seq += 1;
                    events
                        .insert(*next_seq, ev.encoded.as_slice())
                        .map_err(StateError::storage)?;
                }
                Some((first, *next_seq))
            };
            outcomes.push(CommitOutcome::Committed { events: range });
        }
    }
    txn.commit().map_err(StateError::storage)?;
    Ok(outcomes)
}

fn open<'a, 't>(
    txn: &'t WriteTransaction,
    tables: &'a mut HashMap<String, RedbTable<'t, &'static str, &'static [u8]>>,
    name: &str,
) -> Result<&'a mut RedbTable<'t, &'static str, &'static [u8]>, StateError> {
    if !tables.contains_key(name) {
        let t = txn.open_table(kv(name)).map_err(StateError::storage)?;
        tables.insert(name.to_string(), t);
    }
    tables
        .get_mut(name)
        .ok_or_else(|| StateError::Storage(format!("table {name} vanished")))
}

fn validate<'t>(
    txn: &'t WriteTransaction,
    tables: &mut HashMap<String, RedbTable<'t, &'static str, &'static [u8]>>,
    unit: &UnitOfWork,
) -> Result<bool, StateError> {
    for read in &unit.reads {
        match read {
            ReadRecord::Key { table, key, digest } => {
                let t = open(txn, tables, table)?;
                let now = t.get(key.as_str()).map_err(StateError::storage)?;
                if digest_value(now.as_ref().map(|v| v.value())) != *digest {
                    return Ok(false);
                }
            }
            ReadRecord::Range {
                table,
                range,
                digest,
            } => {
                let t = open(txn, tables, table)?;
                if range_digest(&*t, range)? != *digest {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

/// Decode a big-endian u64 stored by the host (0 when malformed).
pub(crate) fn decode_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}
