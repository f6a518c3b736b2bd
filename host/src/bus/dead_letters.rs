//! Dead letters: the events a context could not apply after every attempt, kept in the
//! dead-letter table under `<context>/<seq, 20 digits>-<event id>` with the reason, and,
//! over RabbitMQ, the messages that are not events (`<context>/foreign/<uuid>`). Operators
//! list them a page at a time, read, delete and retry them (one, or all of a context);
//! retention deletes those older than a bound, a few at a time ([`prune_expired`]).
//!
//! A retry applies the kept event to the context again through the path of a first
//! delivery (inbox check, handler, one commit) and deletes the dead letter in the same unit
//! of work as the handler's effects: the effect and the removal commit together or not at
//! all, and an event the inbox already holds (applied meanwhile) only removes the dead
//! letter. When the handler fails again, the dead letter stays, with the new reason, one
//! more attempt and `lastRetriedAt`.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Value, json};

use super::BusCtx;
use super::delivery::{Delivered, apply_dead_letter};
use super::envelope::Envelope;
use crate::state::{CommitOutcome, DEAD_LETTERS, StateError, Table, UnitOfWork};

/// Dead letters in a page unless the caller asks for another number.
pub(crate) const DEFAULT_PAGE: usize = 50;
/// Most dead letters in one page.
pub(crate) const MAX_PAGE: usize = 500;
/// Dead letters read at once while retrying a context's or looking for expired ones.
const SCAN_CHUNK: usize = 128;
/// Most failures named in the answer of a retry of a whole context.
const MAX_FAILURES_LISTED: usize = 100;

/// One page of dead letters, in key order (per context, in the order of the event log).
#[derive(Debug, Serialize)]
pub(crate) struct Page {
    /// Each stored record with its `id` (its key: what get, delete and retry take).
    pub items: Vec<Value>,
    /// The `after` of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Why a dead letter could not be read, deleted or retried.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeadLetterError {
    #[error("no dead letter {0}")]
    NotFound(String),
    #[error("dead letter {id} is not an event ({why}): it cannot be applied, only deleted")]
    NotAnEvent { id: String, why: String },
    #[error(
        "context {0} is not loaded in this host: retry its dead letters on a host that runs it"
    )]
    NotLoaded(String),
    #[error(
        "context {context} no longer subscribes to {event_type}: dead letter {id} cannot be \
         applied by its current version (deploy one that subscribes, or delete it)"
    )]
    NotSubscribed {
        id: String,
        context: String,
        event_type: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// How the retry of one dead letter ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Retried {
    /// The handler applied the event; its effects and the removal of the dead letter
    /// committed together.
    Applied,
    /// The context's inbox already had the event (it was applied meanwhile, by a
    /// redelivery or another retry): the dead letter was removed, nothing ran.
    AlreadyApplied,
    /// The handler failed again: the dead letter stays, with this reason and attempts.
    StillFailing { reason: String, attempts: u64 },
}

/// What a retry of dead letters did, in counts.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RetrySummary {
    /// Dead letters applied again (each one through its handler or found in the inbox).
    pub retried: u64,
    /// Of those, applied: their dead letters are gone.
    pub applied: u64,
    /// Of the applied, those the inbox already had (nothing ran).
    pub already_applied: u64,
    /// Of those retried, failed again: their dead letters stay, updated.
    pub still_failing: u64,
    /// Dead letters that cannot be applied (not an event, or an event type the context no
    /// longer subscribes to): left as they are.
    pub not_retryable: u64,
    /// The dead letters that failed again or cannot be applied (the first
    /// [`MAX_FAILURES_LISTED`]), with why.
    pub failures: Vec<Failure>,
}

/// A dead letter a retry left in place, and why.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Failure {
    pub id: String,
    pub reason: String,
}

impl RetrySummary {
    fn count(&mut self, id: &str, outcome: &Result<Retried, DeadLetterError>) {
        let failure = match outcome {
            Ok(Retried::Applied) => None,
            Ok(Retried::AlreadyApplied) => {
                self.already_applied += 1;
                None
            }
            Ok(Retried::StillFailing { reason, .. }) => Some(reason.clone()),
            Err(e) => {
                self.not_retryable += 1;
                if self.failures.len() < MAX_FAILURES_LISTED {
                    self.failures.push(Failure {
                        id: id.to_string(),
                        reason: e.to_string(),
                    });
                }
                return;
            }
        };
        self.retried += 1;
        match failure {
            None => self.applied += 1,
            Some(reason) => {
                self.still_failing += 1;
                if self.failures.len() < MAX_FAILURES_LISTED {
                    self.failures.push(Failure {
                        id: id.to_string(),
                        reason,
                    });
                }
            }
        }
    }
}

fn table() -> Table {
    Arc::from(DEAD_LETTERS)
}

/// A stored record as an item of a listing: the record with its `id`; a record that is not
/// a JSON object (a damaged one) is shown as its text, so that it can still be deleted.
fn item(id: String, bytes: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(mut record)) => {
            record.insert("id".into(), Value::String(id));
            Value::Object(record)
        }
        _ => json!({
            "id": id,
            "reason": "unreadable dead-letter record",
            "data": String::from_utf8_lossy(bytes),
        }),
    }
}

/// One page of dead letters: of `context` only when given, after the key `after` (the
/// `next` of the previous page), at most `limit`.
pub(crate) fn list(
    bus: &BusCtx,
    context: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<Page, StateError> {
    let prefix = context.map(|c| format!("{c}/")).unwrap_or_default();
    let mut rows = bus
        .db()
        .read_page(DEAD_LETTERS, &prefix, after, limit.saturating_add(1))?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    let items = rows.into_iter().map(|(k, v)| item(k, &v)).collect();
    Ok(Page { items, next })
}

/// The dead letter `id`, with its `id`.
pub(crate) fn get(bus: &BusCtx, id: &str) -> Result<Option<Value>, StateError> {
    Ok(bus
        .db()
        .read(DEAD_LETTERS, id)?
        .map(|b| item(id.to_string(), &b)))
}

/// Delete the dead letter `id`; false when there is none.
pub(crate) async fn delete(bus: &BusCtx, id: &str) -> Result<bool, StateError> {
    let table = table();
    loop {
        let mut unit = UnitOfWork::begin(bus.db())?;
        if unit.get(&table, id)?.is_none() {
            return Ok(false);
        }
        unit.put(&table, id, None);
        if let CommitOutcome::Committed { .. } = bus.committer().commit(unit).await? {
            tracing::info!(dead_letter = id, "dead letter deleted");
            return Ok(true);
        }
    }
}

/// The context, the position and the event a dead-letter record keeps. The event comes
/// from the event log when the log still holds it at that position (exactly as published),
/// else from the record (its data exactly when the record kept the bytes).
fn event_of(bus: &BusCtx, id: &str, record: &Value) -> Result<(String, u64, Envelope), String> {
    let context = record["context"]
        .as_str()
        .ok_or("the record names no context")?
        .to_string();
    let stored = record
        .get("event")
        .ok_or_else(|| match record["reason"].as_str() {
            Some(reason) => format!("a message dead-lettered because: {reason}"),
            None => "the record holds no event".to_string(),
        })?;
    let seq = record["seq"]
        .as_u64()
        .ok_or("the record has no position in the event log")?;
    let mut event: Envelope = serde_json::from_value(stored.clone())
        .map_err(|e| format!("the record's event is unreadable: {e}"))?;
    if let Some(logged) = logged_event(bus, seq, &event.id) {
        return Ok((context, seq, logged));
    }
    event.data = match record["dataBase64"].as_str() {
        Some(b64) => base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
            .map_err(|e| format!("the record's data is unreadable: {e}"))?,
        None => record["data"]
            .as_str()
            .unwrap_or_default()
            .as_bytes()
            .to_vec(),
    };
    tracing::debug!(
        dead_letter = id,
        seq,
        "the event log no longer holds the event: retrying it from the record"
    );
    Ok((context, seq, event))
}

/// The event at `seq` of this host's event log, when it is the event `id` (over RabbitMQ
/// the position is the publishing host's, whose log may be another's).
fn logged_event(bus: &BusCtx, seq: u64, id: &str) -> Option<Envelope> {
    let (at, bytes) = bus
        .db()
        .events_after(seq.checked_sub(1)?, 1)
        .ok()?
        .into_iter()
        .next()?;
    let event = Envelope::decode(&bytes).ok()?;
    (at == seq && event.id == id).then_some(event)
}

/// Retry the dead letter `id`: apply its event to its context once more (see the module
/// documentation). The context must be loaded in this process and still subscribe to the
/// event's type.
pub(crate) async fn retry(bus: &BusCtx, id: &str) -> Result<Retried, DeadLetterError> {
    let bytes = bus
        .db()
        .read(DEAD_LETTERS, id)?
        .ok_or_else(|| DeadLetterError::NotFound(id.to_string()))?;
    retry_record(bus, id, &bytes).await
}

async fn retry_record(bus: &BusCtx, id: &str, bytes: &[u8]) -> Result<Retried, DeadLetterError> {
    let not_an_event = |why: String| DeadLetterError::NotAnEvent {
        id: id.to_string(),
        why,
    };
    let record: Value = serde_json::from_slice(bytes)
        .map_err(|e| not_an_event(format!("the record is unreadable: {e}")))?;
    let (context, seq, event) = event_of(bus, id, &record).map_err(not_an_event)?;
    let subscriber = bus
        .subscriber(&context)
        .ok_or_else(|| DeadLetterError::NotLoaded(context.clone()))?;
    if !subscriber.subscriptions().contains(&event.event_type) {
        return Err(DeadLetterError::NotSubscribed {
            id: id.to_string(),
            context,
            event_type: event.event_type,
        });
    }
    drop(subscriber);
    let outcome = match apply_dead_letter(bus, &context, &(seq, event.clone()), id).await? {
        Delivered::Applied => Retried::Applied,
        Delivered::Duplicate => Retried::AlreadyApplied,
        Delivered::NoSuchContext => return Err(DeadLetterError::NotLoaded(context)),
        Delivered::DeadLettered(reason) => {
            let attempts = record_failure(bus, id, &reason).await?;
            Retried::StillFailing { reason, attempts }
        }
    };
    match &outcome {
        Retried::StillFailing { reason, attempts } => {
            tracing::warn!(context, dead_letter = id, event_id = %event.id, event_type = %event.event_type, seq, attempts, reason = %reason, "dead letter retried: the handler failed again")
        }
        done => {
            tracing::info!(context, dead_letter = id, event_id = %event.id, event_type = %event.event_type, seq, outcome = ?done, "dead letter retried: applied")
        }
    }
    Ok(outcome)
}

/// Keep the failure of a retry in the dead letter `id`: the new reason, one more attempt,
/// when. Returns the attempts (0 when the dead letter was deleted meanwhile).
async fn record_failure(bus: &BusCtx, id: &str, reason: &str) -> Result<u64, StateError> {
    let table = table();
    loop {
        let mut unit = UnitOfWork::begin(bus.db())?;
        let Some(bytes) = unit.get(&table, id)? else {
            return Ok(0);
        };
        let mut record: Value = serde_json::from_slice(&bytes)
            .map_err(|e| StateError::invalid(format!("dead letter {id} is unreadable: {e}")))?;
        let attempts = record["attempts"].as_u64().unwrap_or(0) + 1;
        record["attempts"] = json!(attempts);
        record["reason"] = json!(reason);
        record["lastRetriedAt"] = json!(crate::time::now_rfc3339());
        unit.put(&table, id, Some(record.to_string().into_bytes()));
        if let CommitOutcome::Committed { .. } = bus.committer().commit(unit).await? {
            return Ok(attempts);
        }
    }
}

/// Retry every dead letter of `context`, in the order of the event log; a dead letter that
/// cannot be applied is counted and left. Stops at the first failure of state, or when the
/// context is no longer loaded.
pub(crate) async fn retry_context(
    bus: &BusCtx,
    context: &str,
) -> Result<RetrySummary, DeadLetterError> {
    if bus.subscriber(context).is_none() {
        return Err(DeadLetterError::NotLoaded(context.to_string()));
    }
    let prefix = format!("{context}/");
    let mut summary = RetrySummary::default();
    let mut after: Option<String> = None;
    loop {
        let rows = bus
            .db()
            .read_page(DEAD_LETTERS, &prefix, after.as_deref(), SCAN_CHUNK)?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        after = Some(last.clone());
        for (id, bytes) in rows {
            let outcome = retry_record(bus, &id, &bytes).await;
            match outcome {
                Err(e @ (DeadLetterError::State(_) | DeadLetterError::NotLoaded(_))) => {
                    return Err(e);
                }
                // Deleted meanwhile.
                Err(DeadLetterError::NotFound(_)) => {}
                outcome => summary.count(&id, &outcome),
            }
        }
    }
    tracing::info!(
        context,
        retried = summary.retried,
        applied = summary.applied,
        still_failing = summary.still_failing,
        not_retryable = summary.not_retryable,
        "dead letters of the context retried"
    );
    Ok(summary)
}

/// When the dead letter was recorded (`deadLetteredAt`), if the record says.
fn dead_lettered_at(bytes: &[u8]) -> Option<SystemTime> {
    let record: Value = serde_json::from_slice(bytes).ok()?;
    let at = record["deadLetteredAt"].as_str()?;
    let at = match time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339) {
        Ok(at) => at,
        // What `now_rfc3339` writes when it cannot format: seconds since the epoch.
        Err(_) => time::OffsetDateTime::from_unix_timestamp(at.parse().ok()?).ok()?,
    };
    Some(at.into())
}

/// Delete up to `max` dead letters recorded before `older_than`, in one unit of work (small,
/// so that pruning never holds the committer long; call again while it returns `max`).
/// Returns how many it deleted. A record without a readable time is never deleted here.
pub(crate) async fn prune_expired(
    bus: &BusCtx,
    older_than: SystemTime,
    max: usize,
) -> Result<usize, StateError> {
    let expired = |bytes: &[u8]| dead_lettered_at(bytes).is_some_and(|at| at < older_than);
    if max == 0 {
        return Ok(0);
    }
    let mut victims = Vec::new();
    let mut after: Option<String> = None;
    'scan: loop {
        let rows = bus
            .db()
            .read_page(DEAD_LETTERS, "", after.as_deref(), SCAN_CHUNK)?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        after = Some(last.clone());
        for (id, bytes) in rows {
            if expired(&bytes) {
                victims.push(id);
                if victims.len() >= max {
                    break 'scan;
                }
            }
        }
    }
    if victims.is_empty() {
        return Ok(0);
    }
    let table = table();
    loop {
        let mut unit = UnitOfWork::begin(bus.db())?;
        let mut deleted = 0;
        // Read again in the unit: a retry or a delete meanwhile is a conflict at commit.
        for id in &victims {
            if unit.get(&table, id)?.is_some_and(|b| expired(&b)) {
                unit.put(&table, id, None);
                deleted += 1;
            }
        }
        if deleted == 0 {
            return Ok(0);
        }
        if let CommitOutcome::Committed { .. } = bus.committer().commit(unit).await? {
            tracing::info!(deleted, "expired dead letters deleted");
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests;
