//! Applying one event to one context exactly once: in a single unit of work the host checks
//! the context's inbox for the event id, runs the handler, records the id and (for the
//! embedded bus) moves the context's cursor. A failing handler is retried with backoff, then
//! dead-lettered with the reason, and the stream moves on.

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
/// set to `seq` in the same commit.
pub async fn deliver(
    runtime: &Runtime,
    context: &str,
    seq: u64,
    event: &Envelope,
    cursor: Option<(&Table, &str)>,
    policy: &RetryPolicy,
) -> Result<Delivered, StateError> {
    let inbox = inbox_table(context);
    let mut attempts = 0u32;
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
