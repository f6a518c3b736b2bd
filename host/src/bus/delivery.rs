//! Applying events to a context exactly once: in a single unit of work the host checks the
//! context's inbox for each event id, runs the handler, records the id and (for the
//! embedded bus) moves the context's cursor. A run of events shares one unit of work (one
//! commit, one fsync), each handler in a savepoint, so a backlog drains at many events per
//! fsync. A failing handler is retried alone with backoff, then dead-lettered with the
//! reason, and the stream moves on. A failure of state (storage full or failing) is an
//! error of the whole pass, retried by the transport, never a reason to dead-letter.

use std::sync::Arc;
use std::time::Duration;

use super::BusCtx;
use super::envelope::Envelope;
use crate::state::{
    CommitOutcome, StateError, Table, UnitOfWork, contention_backoff, inbox_table, share, unshare,
};
use crate::sync::lock;
use crate::telemetry::metrics;
use crate::telemetry::trace;
use tracing::Instrument as _;

/// How often and how patiently a failing handler is retried.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// The handler ran and its unit of work committed.
    Applied,
    /// The inbox already had the event id: nothing ran.
    Duplicate,
    /// Every attempt failed; the event is in the dead-letter table with this reason.
    DeadLettered(String),
    /// The context is not loaded here.
    NoSuchContext,
}

/// Most events applied in one unit of work.
pub(crate) const MAX_BATCH: usize = 64;

/// Why a pass over a run of events stopped before its end.
enum Stop {
    /// The handler of the next event failed (its effects undone).
    Failed(String),
    /// The context is not loaded here.
    NoSuchContext,
}

fn seq_bytes(seq: u64) -> Option<Vec<u8>> {
    Some(seq.to_be_bytes().to_vec())
}

/// Host bookkeeping written in the same unit of work as an event's outcome (applied, or
/// found in the inbox), so that it moves exactly when the effect commits.
#[derive(Clone, Copy)]
enum Mark<'a> {
    /// Move this cursor (table, key) to the event's sequence number (the embedded bus).
    Cursor(&'a Table, &'a str),
    /// Delete this entry (table, key): the dead letter of an event applied again.
    Remove(&'a Table, &'a str),
}

impl Mark<'_> {
    fn write(self, unit: &mut UnitOfWork, seq: u64) {
        match self {
            Mark::Cursor(table, key) => unit.put(table, key, seq_bytes(seq)),
            Mark::Remove(table, key) => unit.put(table, key, None),
        }
    }
}

/// Apply the events of `run` (in order) to `context` in one unit of work, each handler in its
/// own savepoint, and commit once, with `mark` written for each event applied or found in
/// the inbox. Stops before the first event whose handler fails, leaving it and the rest
/// uncommitted. Returns the outcomes (`Applied` or `Duplicate`) of the events it committed,
/// from the start of `run`, and why it stopped early. A conflict at commit runs the pass
/// again on fresh state.
async fn apply(
    bus: &BusCtx,
    context: &str,
    run: &[(u64, Envelope)],
    mark: Option<Mark<'_>>,
) -> Result<(Vec<Delivered>, Option<Stop>), StateError> {
    let inbox = inbox_table(context);
    let mut reruns = 0;
    loop {
        if reruns > 0 {
            // What the pass read changed before it committed: wait a little, jittered.
            tokio::time::sleep(contention_backoff(reruns)).await;
        }
        reruns += 1;
        let Some(ctx) = bus.subscriber(context) else {
            return Ok((Vec::new(), Some(Stop::NoSuchContext)));
        };
        let shared = share(UnitOfWork::begin(bus.db())?);
        let mut done = Vec::with_capacity(run.len());
        // How long each applied event's handler ran, for the metrics once committed.
        let mut took = Vec::with_capacity(run.len());
        let mut stop = None;
        for (seq, event) in run {
            let savepoint = {
                let mut unit = lock(&shared);
                if unit.get(&inbox, &event.id)?.is_some() {
                    if let Some(mark) = mark {
                        mark.write(&mut unit, *seq);
                    }
                    done.push(Delivered::Duplicate);
                    took.push(None);
                    continue;
                }
                let savepoint = unit.savepoint();
                let applied = crate::state::inbox::encode(*seq, bus.db().clock().now_ms());
                unit.put(&inbox, &event.id, Some(applied));
                savepoint
            };
            let started = std::time::Instant::now();
            let span = trace::consumer(
                &trace::EventAttributes {
                    id: &event.id,
                    event_type: &event.event_type,
                    correlation_id: &event.correlationid,
                    context,
                },
                &event.traceparent,
                &event.traceid,
            );
            let handled = ctx
                .handle(shared.clone(), event)
                .instrument(span.clone())
                .await;
            trace::record_delivery(
                &span,
                handled.as_ref().err().map(|e| e.to_string()).as_deref(),
            );
            let failure = match handled {
                Ok(()) => {
                    if let Some(mark) = mark {
                        mark.write(&mut lock(&shared), *seq);
                    }
                    done.push(Delivered::Applied);
                    took.push(Some(started.elapsed()));
                    continue;
                }
                // A handler that failed while storage is unavailable (its reads could
                // fail) is not the handler's failure: retried later, never dead-lettered.
                Err(_) if bus.db().health().fault().is_some() => {
                    return Err(bus.db().health().unavailable());
                }
                Err(e) => e.to_string(),
            };
            lock(&shared).rollback_to(savepoint);
            stop = Some(Stop::Failed(failure));
            break;
        }
        if done.is_empty() {
            return Ok((done, stop));
        }
        let unit =
            unshare(shared).ok_or_else(|| StateError::invalid("unit of work still shared"))?;
        match bus.committer().commit(unit).await? {
            CommitOutcome::Committed { .. } => {
                let m = metrics();
                for (((_, event), outcome), took) in run.iter().zip(&done).zip(took) {
                    let label = match outcome {
                        Delivered::Duplicate => "duplicate",
                        _ => "applied",
                    };
                    m.delivered(event.publisher(), context, &event.event_type, label, took);
                }
                return Ok((done, stop));
            }
            CommitOutcome::Conflict => metrics().conflict("event"),
        }
    }
}

/// Apply every event of `run` in order, in batches of up to [`MAX_BATCH`]; an event whose
/// handler fails is retried alone with backoff, then dead-lettered. Returns the outcome of
/// each event, or fewer outcomes when the context is gone (the rest untouched).
pub(crate) async fn deliver_all(
    bus: &BusCtx,
    context: &str,
    run: &[(u64, Envelope)],
    cursor: Option<(&Table, &str)>,
    policy: &RetryPolicy,
) -> Result<Vec<Delivered>, StateError> {
    let mut outcomes = Vec::with_capacity(run.len());
    while outcomes.len() < run.len() {
        let rest = &run[outcomes.len()..];
        let mark = cursor.map(|(table, key)| Mark::Cursor(table, key));
        let (done, stop) = apply(bus, context, &rest[..rest.len().min(MAX_BATCH)], mark).await?;
        outcomes.extend(done);
        match stop {
            None => {}
            Some(Stop::NoSuchContext) => break,
            Some(Stop::Failed(failure)) => {
                let item = &run[outcomes.len()];
                match retry(bus, context, item, cursor, policy, failure).await? {
                    Delivered::NoSuchContext => break,
                    outcome => outcomes.push(outcome),
                }
            }
        }
    }
    Ok(outcomes)
}

/// Retry one event whose handler has failed once with `failure`, until it applies or the
/// policy's attempts are spent; then it goes to the dead-letter table.
async fn retry(
    bus: &BusCtx,
    context: &str,
    item: &(u64, Envelope),
    cursor: Option<(&Table, &str)>,
    policy: &RetryPolicy,
    mut failure: String,
) -> Result<Delivered, StateError> {
    let (seq, event) = item;
    let mut attempts = 1u32;
    loop {
        tracing::warn!(context, event_id = %event.id, event_type = %event.event_type, seq, attempts, error = %failure, "event delivery failed");
        let last = attempts >= policy.max_attempts;
        let outcome = if last { "dead_lettered" } else { "retried" };
        metrics().delivered(event.publisher(), context, &event.event_type, outcome, None);
        if last {
            let mut record = serde_json::json!({
                "context": context,
                "seq": seq,
                "event": event,
                "data": String::from_utf8_lossy(&event.data),
                "reason": failure,
                "attempts": attempts,
                "deadLetteredAt": crate::time::now_rfc3339(),
            });
            // `data` is text for operators; bytes that are not UTF-8 are also kept exactly,
            // so that a retry applies the very event.
            if std::str::from_utf8(&event.data).is_err() {
                record["dataBase64"] = serde_json::json!(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    &event.data
                ));
            }
            let key = format!("{context}/{seq:020}-{}", event.id);
            let moved = cursor.map(|c| (c, *seq));
            record_dead_letter(bus, &key, &record, moved).await?;
            tracing::error!(context, event_id = %event.id, event_type = %event.event_type, seq, attempts, reason = %failure, "event dead-lettered");
            return Ok(Delivered::DeadLettered(failure));
        }
        let backoff = policy
            .first_backoff
            .saturating_mul(1 << (attempts - 1).min(16))
            .min(policy.max_backoff);
        tokio::time::sleep(backoff).await;
        let mark = cursor.map(|(table, key)| Mark::Cursor(table, key));
        let (mut done, stop) = apply(bus, context, std::slice::from_ref(item), mark).await?;
        match (done.pop(), stop) {
            (Some(outcome), _) => return Ok(outcome),
            (None, Some(Stop::Failed(again))) => {
                attempts += 1;
                failure = again;
            }
            (None, _) => return Ok(Delivered::NoSuchContext),
        }
    }
}

/// Apply a dead-lettered event (`item`, kept under `dead_letter` in the dead-letter table)
/// to `context` once more, through the same path as a first delivery (inbox check,
/// handler, one commit), deleting the dead letter in the unit of work of the handler's
/// effects. `Applied` or `Duplicate` (the inbox has the event: applied meanwhile; the dead
/// letter goes too), `DeadLettered` with the new reason when the handler fails again (the
/// dead letter stays, for the caller to update), or `NoSuchContext`.
pub(crate) async fn apply_dead_letter(
    bus: &BusCtx,
    context: &str,
    item: &(u64, Envelope),
    dead_letter: &str,
) -> Result<Delivered, StateError> {
    let table: Table = Arc::from(crate::state::DEAD_LETTERS);
    let mark = Mark::Remove(&table, dead_letter);
    let (mut done, stop) = apply(bus, context, std::slice::from_ref(item), Some(mark)).await?;
    Ok(match (done.pop(), stop) {
        (Some(outcome), _) => outcome,
        (None, Some(Stop::Failed(reason))) => Delivered::DeadLettered(reason),
        (None, _) => Delivered::NoSuchContext,
    })
}

/// Keep `record` in the dead-letter table under `key`, moving `cursor` to the given sequence
/// number in the same commit.
pub(crate) async fn record_dead_letter(
    bus: &BusCtx,
    key: &str,
    record: &serde_json::Value,
    cursor: Option<((&Table, &str), u64)>,
) -> Result<(), StateError> {
    let table: Table = Arc::from(crate::state::DEAD_LETTERS);
    loop {
        let mut unit = UnitOfWork::begin(bus.db())?;
        unit.put(&table, key, Some(record.to_string().into_bytes()));
        if let Some(((cursor_table, cursor_key), seq)) = cursor {
            unit.put(cursor_table, cursor_key, seq_bytes(seq));
        }
        if let CommitOutcome::Committed { .. } = bus.committer().commit(unit).await? {
            return Ok(());
        }
    }
}
