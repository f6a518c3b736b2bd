//! Applying one event to one context exactly once: in a single unit of work the host checks
//! the context's inbox for the event id, runs the handler, records the id and (for the
//! embedded bus) moves the context's cursor. A failing handler is retried with backoff, then
//! dead-lettered with the reason, and the stream moves on.
//!
//! `deliver_batch` applies a run of events in one unit of work (one commit, one fsync), each
//! in a savepoint, so a backlog drains at many events per fsync instead of one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::envelope::Envelope;
use crate::runtime::Runtime;
use crate::state::{CommitOutcome, StateError, Table, UnitOfWork, inbox_table};

/// How often and how patiently a failing handler is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
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
pub enum Delivered {
    /// The handler ran and its unit of work committed.
    Applied,
    /// The inbox already had the event id: nothing ran.
    Duplicate,
    /// Every attempt failed; the event is in the dead-letter table with this reason.
    DeadLettered(String),
    /// The context is not loaded here.
    NoSuchContext,
}

/// Apply `event` (sequence `seq`) to `context`. `cursor`: the table and key whose value is
/// set to `seq` in the same commit. `failed`: attempts already made (and failed) elsewhere,
/// counted against the policy.
pub async fn deliver(
    runtime: &Runtime,
    context: &str,
    (seq, event): (u64, &Envelope),
    cursor: Option<(&Table, &str)>,
    policy: &RetryPolicy,
    failed: u32,
) -> Result<Delivered, StateError> {
    let inbox = inbox_table(context);
    let mut attempts = failed;
    loop {
        let Some(ctx) = runtime.registry().get(context) else {
            return Ok(Delivered::NoSuchContext);
        };
        let mut unit = UnitOfWork::begin(runtime.db())?;
        if let Some((table, key)) = cursor {
            unit.put(table, key, Some(seq.to_be_bytes().to_vec()));
        }
        if unit.get(&inbox, &event.id)?.is_some() {
            match runtime.committer().commit(unit).await? {
                CommitOutcome::Committed { .. } => return Ok(Delivered::Duplicate),
                CommitOutcome::Conflict => continue,
            }
        }
        unit.put(&inbox, &event.id, Some(seq.to_be_bytes().to_vec()));
        let shared = Arc::new(Mutex::new(unit));
        let result = runtime.invoke_handler(ctx, shared.clone(), event).await;
        let failure = match result {
            Ok(Ok(())) => {
                let unit = Arc::try_unwrap(shared)
                    .map_err(|_| StateError::Storage("unit of work still shared".into()))?
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner());
                match runtime.committer().commit(unit).await? {
                    CommitOutcome::Committed { .. } => return Ok(Delivered::Applied),
                    CommitOutcome::Conflict => continue,
                }
            }
            Ok(Err(reason)) => format!("handler refused the event: {reason}"),
            Err(e) => e.to_string(),
        };
        attempts += 1;
        tracing::warn!(context, event_id = %event.id, event_type = %event.event_type, seq, attempts, error = %failure, "event delivery failed");
        if attempts >= policy.max_attempts {
            dead_letter(runtime, context, seq, event, cursor, &failure, attempts).await?;
            return Ok(Delivered::DeadLettered(failure));
        }
        let backoff = policy
            .first_backoff
            .saturating_mul(1 << (attempts - 1).min(16))
            .min(policy.max_backoff);
        tokio::time::sleep(backoff).await;
    }
}

/// Most events applied in one unit of work by [`deliver_batch`].
pub const MAX_BATCH: usize = 64;

fn seq_bytes(seq: u64) -> Option<Vec<u8>> {
    Some(seq.to_be_bytes().to_vec())
}

fn locked(unit: &SharedUnitOfWork) -> std::sync::MutexGuard<'_, UnitOfWork> {
    unit.lock().unwrap_or_else(|p| p.into_inner())
}

type SharedUnitOfWork = Arc<Mutex<UnitOfWork>>;

/// Apply the events of `run` (in order) to `context` in one unit of work, each handler in its
/// own savepoint, and commit once. Stops before the first event whose handler fails (its
/// effects undone), leaving it and the rest to the caller, which hands it to [`deliver`] for
/// the retries. Returns the outcomes (`Applied` or `Duplicate`) of the events it committed,
/// from the start of `run`; none when the context is not loaded. A conflict at commit runs
/// the batch again on fresh state.
pub async fn deliver_batch(
    runtime: &Runtime,
    context: &str,
    run: &[(u64, Envelope)],
    cursor: Option<(&Table, &str)>,
) -> Result<Vec<Delivered>, StateError> {
    let inbox = inbox_table(context);
    loop {
        let Some(ctx) = runtime.registry().get(context) else {
            return Ok(Vec::new());
        };
        let shared: SharedUnitOfWork = Arc::new(Mutex::new(UnitOfWork::begin(runtime.db())?));
        let mut done = Vec::with_capacity(run.len());
        for (seq, event) in run {
            let savepoint = {
                let mut unit = locked(&shared);
                if unit.get(&inbox, &event.id)?.is_some() {
                    if let Some((table, key)) = cursor {
                        unit.put(table, key, seq_bytes(*seq));
                    }
                    done.push(Delivered::Duplicate);
                    continue;
                }
                let savepoint = unit.savepoint();
                unit.put(&inbox, &event.id, seq_bytes(*seq));
                savepoint
            };
            match runtime
                .invoke_handler(ctx.clone(), shared.clone(), event)
                .await
            {
                Ok(Ok(())) => {
                    if let Some((table, key)) = cursor {
                        locked(&shared).put(table, key, seq_bytes(*seq));
                    }
                    done.push(Delivered::Applied);
                }
                _ => {
                    locked(&shared).rollback_to(savepoint);
                    break;
                }
            }
        }
        if done.is_empty() {
            return Ok(done);
        }
        let unit = Arc::try_unwrap(shared)
            .map_err(|_| StateError::Storage("unit of work still shared".into()))?
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        match runtime.committer().commit(unit).await? {
            CommitOutcome::Committed { .. } => return Ok(done),
            CommitOutcome::Conflict => continue,
        }
    }
}

/// Apply every event of `run` in order: batches through [`deliver_batch`], and each event a
/// batch stops at through [`deliver`] (retries, then the dead-letter table). Returns the
/// outcome of each event, or fewer outcomes when the context is gone (the rest untouched).
pub async fn deliver_all(
    runtime: &Runtime,
    context: &str,
    run: &[(u64, Envelope)],
    cursor: Option<(&Table, &str)>,
    policy: &RetryPolicy,
) -> Result<Vec<Delivered>, StateError> {
    let mut outcomes = Vec::with_capacity(run.len());
    while outcomes.len() < run.len() {
        let rest = &run[outcomes.len()..];
        let batch = &rest[..rest.len().min(MAX_BATCH)];
        outcomes.extend(deliver_batch(runtime, context, batch, cursor).await?);
        if let Some((seq, event)) = run.get(outcomes.len()) {
            // The batch stopped here because the handler failed once already.
            match deliver(runtime, context, (*seq, event), cursor, policy, 1).await? {
                Delivered::NoSuchContext => break,
                outcome => outcomes.push(outcome),
            }
        }
    }
    Ok(outcomes)
}

async fn dead_letter(
    runtime: &Runtime,
    context: &str,
    seq: u64,
    event: &Envelope,
    cursor: Option<(&Table, &str)>,
    reason: &str,
    attempts: u32,
) -> Result<(), StateError> {
    let record = serde_json::json!({
        "context": context,
        "seq": seq,
        "event": event,
        "data": String::from_utf8_lossy(&event.data),
        "reason": reason,
        "attempts": attempts,
        "deadLetteredAt": crate::time::now_rfc3339(),
    });
    let key = format!("{context}/{seq:020}-{}", event.id);
    let table: Table = Arc::from(crate::state::DEAD_LETTERS);
    loop {
        let mut unit = UnitOfWork::begin(runtime.db())?;
        unit.put(&table, &key, Some(record.to_string().into_bytes()));
        if let Some((t, k)) = cursor {
            unit.put(t, k, Some(seq.to_be_bytes().to_vec()));
        }
        match runtime.committer().commit(unit).await? {
            CommitOutcome::Committed { .. } => break,
            CommitOutcome::Conflict => continue,
        }
    }
    tracing::error!(context, event_id = %event.id, event_type = %event.event_type, seq, attempts, reason, "event dead-lettered");
    Ok(())
}

/// Keep `record` in the dead-letter table under `key` (for messages that never became an
/// event delivery, such as foreign messages on a broker queue).
pub async fn record_dead_letter(
    runtime: &Runtime,
    key: &str,
    record: serde_json::Value,
) -> Result<(), StateError> {
    let table: Table = Arc::from(crate::state::DEAD_LETTERS);
    loop {
        let mut unit = UnitOfWork::begin(runtime.db())?;
        unit.put(&table, key, Some(record.to_string().into_bytes()));
        if let CommitOutcome::Committed { .. } = runtime.committer().commit(unit).await? {
            return Ok(());
        }
    }
}
