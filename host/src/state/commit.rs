//! The committer: the single writer of the database.
//!
//! Units of work arrive on a channel; the committer takes every unit waiting (a group),
//! validates each against the state as of the units before it, applies the valid ones, gives
//! their events sequence numbers and commits the group in one durable redb transaction, so
//! one fsync covers many invocations. A unit whose reads changed is answered `Conflict`
//! and its invocation runs again on fresh state.
//!
//! After a storage error (a full disk, a failing device) redb refuses every later write
//! until the database is closed and opened again. The committer then answers the group and
//! every unit that arrives as unavailable, reopens the database (reads go on), and with
//! backoff checks that the filesystem has room (1 MiB, written beside the database) and that
//! a probe write is durable; then storage is healthy again, without a restart.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use redb::{Durability, ReadableTable, Table as RedbTable, WriteTransaction};
use tokio::sync::{oneshot, watch};

use super::db::{Db, EVENTS, META, SEQUENCES, kv};
use super::error::StateError;
use super::error::chain;
use super::uow::{ReadRecord, UnitOfWork, digest_value, range_digest};

/// Key in the meta table of the highest sequence number retention removed from the log.
const PRUNED_THROUGH: &str = "events-pruned-through";
/// Most units of work committed in one transaction.
const MAX_GROUP: usize = 256;
/// First and longest wait between attempts to reopen the database after a storage error.
const REOPEN_FIRST: Duration = Duration::from_millis(50);
const REOPEN_MAX: Duration = Duration::from_secs(1);
/// The table the probe write of a recovery goes to.
const PROBE: &str = "sys/storage-probe";
/// Room the filesystem must have before the database is tried again: a write of a few
/// bytes would fit in pages the database file already has even on a full disk, and storage
/// would flap between failing and healthy while every change that grows the file fails.
const PROBE_BYTES: usize = 1024 * 1024;

/// How a unit of work ended at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Durable; its events got the sequence numbers `first..=last` (none when empty).
    Committed { events: Option<(u64, u64)> },
    /// Something it read changed before it could commit; nothing was written.
    Conflict,
}

impl CommitOutcome {
    /// `committed` or `conflict`, for traces.
    pub fn label(&self) -> &'static str {
        match self {
            CommitOutcome::Committed { .. } => "committed",
            CommitOutcome::Conflict => "conflict",
        }
    }
}

/// The group a unit of work was committed in: units commit together in one transaction
/// with one fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupStats {
    /// Units in the group (0 for a read-only unit, which needs no commit).
    pub size: usize,
    /// How long the group's durable commit took (the fsync, mostly).
    pub fsync: Duration,
}

type Reply = Result<(CommitOutcome, GroupStats), StateError>;

struct Request {
    unit: UnitOfWork,
    reply: oneshot::Sender<Reply>,
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
        db.health().writer_started();
        let alive = WriterAlive(db.clone());
        thread::Builder::new()
            .name("ctxhost-committer".into())
            .spawn(move || {
                let _alive = alive;
                run(&db, rx, seq_tx, last);
            })
            .map_err(|e| StateError::invalid(format!("cannot start the committer: {e}")))?;
        Ok(Committer {
            tx,
            committed: seq_rx,
        })
    }

    /// Commit `unit` durably (or report a conflict). Read-only units return at once.
    pub async fn commit(&self, unit: UnitOfWork) -> Result<CommitOutcome, StateError> {
        self.commit_measured(unit).await.map(|(outcome, _)| outcome)
    }

    /// [`Committer::commit`], also telling the size of the group the unit was committed in
    /// and how long its durable commit took.
    pub async fn commit_measured(
        &self,
        unit: UnitOfWork,
    ) -> Result<(CommitOutcome, GroupStats), StateError> {
        if unit.is_read_only() {
            return Ok((
                CommitOutcome::Committed { events: None },
                GroupStats::default(),
            ));
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

/// The sequence number of the last event committed: the log's last entry, or the last
/// one retention removed when that is higher (the log may be empty).
fn last_event_seq(db: &Db) -> Result<u64, StateError> {
    let txn = db.snapshot()?;
    let t = txn.open_table(EVENTS).map_err(StateError::storage)?;
    let last = t.last().map_err(StateError::storage)?;
    let last = last.map(|(k, _)| k.value()).unwrap_or(0);
    let meta = txn.open_table(kv(META)).map_err(StateError::storage)?;
    let pruned = meta
        .get(PRUNED_THROUGH)
        .map_err(StateError::storage)?
        .map(|v| decode_u64(v.value()))
        .unwrap_or(0);
    Ok(last.max(pruned))
}

/// Held by the committer thread: when the thread ends (or panics, or never starts), the
/// probes learn that no change can be stored any more.
struct WriterAlive(Db);

impl Drop for WriterAlive {
    fn drop(&mut self) {
        self.0.health().writer_stopped();
        if thread::panicking() {
            tracing::error!("the committer has stopped; no change can be stored until a restart");
        }
    }
}

fn run(db: &Db, rx: mpsc::Receiver<Request>, seq_tx: watch::Sender<u64>, mut next_seq: u64) {
    // Grows while recoveries do not last; reset by a group that commits.
    let mut wait = REOPEN_FIRST;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let before = next_seq;
        let started = Instant::now();
        match commit_group(db, &group, &mut next_seq) {
            Ok((outcomes, fsync)) => {
                wait = REOPEN_FIRST;
                record(&group, &outcomes, started.elapsed());
                if next_seq != before {
                    seq_tx.send_replace(next_seq);
                }
                let stats = GroupStats {
                    size: group.len(),
                    fsync,
                };
                for (req, outcome) in group.into_iter().zip(outcomes) {
                    let _ = req.reply.send(Ok((outcome, stats)));
                }
            }
            Err(e) => {
                next_seq = before;
                let units = group.len();
                // Marked failing, and a fresh handle in place (after an I/O error redb
                // refuses even reads on the old one), before anyone hears of it.
                if e.is_unavailable() {
                    db.health().failed(&e, false);
                    if let Err(again) = db.refresh() {
                        db.health().failed(&again, true);
                    }
                }
                for req in group {
                    let _ = req.reply.send(Err(e.clone()));
                }
                if !e.is_unavailable() {
                    tracing::error!(error = %chain(&e), units, "commit failed");
                    continue;
                }
                tracing::error!(error = %chain(&e), units, "commit failed: storage is failing; changes are refused until the database is reopened");
                match recover(db, &rx, &mut wait) {
                    Some(seq) => next_seq = seq,
                    None => return,
                }
            }
        }
    }
}

/// The metrics of a committed group: its size and time, conflicts, and the events it put in
/// the log.
fn record(group: &[Request], outcomes: &[CommitOutcome], took: Duration) {
    let m = crate::telemetry::metrics();
    if !m.enabled() {
        return;
    }
    m.commit(group.len(), took);
    for (req, outcome) in group.iter().zip(outcomes) {
        if let CommitOutcome::Committed { events: Some(_) } = outcome {
            for ev in &req.unit.events {
                m.published(&ev.publisher, &ev.event_type);
            }
        }
    }
}

/// Recover from a storage error (the database already reopened, so reads go on): with
/// backoff, check that the filesystem has room and that the database takes a durable write;
/// every unit that arrives meanwhile is answered unavailable at once. Returns the last event sequence number, or `None` once
/// every handle of the committer is gone.
fn recover(db: &Db, rx: &mpsc::Receiver<Request>, wait: &mut Duration) -> Option<u64> {
    loop {
        let until = Instant::now() + *wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(req) => {
                    let _ = req.reply.send(Err(db.health().unavailable()));
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
        *wait = (*wait * 2).min(REOPEN_MAX);
        match attempt(db) {
            Ok(seq) => {
                let lasted = db.health().recovered();
                tracing::info!(failing_for = ?lasted, "storage recovered: the database is open and takes changes again");
                return Some(seq);
            }
            Err(e) => {
                let opened = db.is_open();
                db.health().failed(&e, !opened);
                tracing::debug!(error = %chain(&e), opened, retry_in = ?*wait, "storage still failing");
            }
        }
    }
}

/// One attempt to recover: the database open, room on its filesystem, a durable write; the
/// last event sequence number.
fn attempt(db: &Db) -> Result<u64, StateError> {
    if !db.is_open() {
        db.reopen()?;
    }
    db.room(PROBE_BYTES)?;
    if let Err(e) = probe(db) {
        // That failure spoiled this handle too: a fresh one serves reads meanwhile.
        if let Err(again) = db.refresh() {
            tracing::debug!(error = %chain(&again), "cannot reopen the database");
        }
        return Err(e);
    }
    last_event_seq(db)
}

/// A small durable write through the database.
fn probe(db: &Db) -> Result<(), StateError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(StateError::storage)?;
    {
        let mut t = txn.open_table(kv(PROBE)).map_err(StateError::storage)?;
        let now = crate::time::now_rfc3339();
        t.insert("last-recovery", now.as_bytes())
            .map_err(StateError::storage)?;
    }
    txn.commit().map_err(StateError::storage)
}

/// Validate, apply and durably commit `group`; the outcome of each unit, and how long the
/// durable commit took.
fn commit_group(
    db: &Db,
    group: &[Request],
    next_seq: &mut u64,
) -> Result<(Vec<CommitOutcome>, Duration), StateError> {
    let mut txn = db.begin_write()?;
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
            if let Some((first, last)) = unit.prune_events {
                events
                    .retain_in(first..=last, |_, _| false)
                    .map_err(StateError::storage)?;
                // Sequence numbers go on from the highest ever handed out, even when the
                // log is empty: consumers' cursors are positions in it.
                let meta = open(&txn, &mut tables, META)?;
                let through = meta
                    .get(PRUNED_THROUGH)
                    .map_err(StateError::storage)?
                    .map(|v| decode_u64(v.value()))
                    .unwrap_or(0);
                if last > through {
                    meta.insert(PRUNED_THROUGH, last.to_be_bytes().as_slice())
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
    let began = Instant::now();
    txn.commit().map_err(StateError::storage)?;
    Ok((outcomes, began.elapsed()))
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
        .ok_or_else(|| StateError::invalid(format!("table {name} vanished")))
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
