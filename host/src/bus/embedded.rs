//! The embedded durable bus: no broker, the event log itself is the queue. Each subscribing
//! context has a worker that reads the log in order from its cursor and applies the events
//! of the types it declared; the cursor moves in the same commit as the effect, so a
//! restart resumes exactly where the context stopped. A failure of state restarts the
//! worker from its cursor after a backoff; only shutdown or unloading the context ends it.

use crate::sync::lock;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot, watch};

use super::backoff::Backoff;
use super::cursor;
use super::delivery::{RetryPolicy, deliver_all};
use super::envelope::Envelope;
use super::{BusError, Consumed, EventTransport, TransportStatus, subscribes};
use crate::bus::BusCtx;
use crate::state::StateError;
use crate::telemetry::metrics;

/// Events read from the log per batch.
const BATCH: usize = 256;

/// A redelivery waiting for the worker: the position to go back to, and who to tell once
/// the cursor is there durably.
struct Rewind {
    from_seq: u64,
    done: oneshot::Sender<Result<(), String>>,
}

/// Control of one subscriber's worker.
struct Subscriber {
    /// Set by `redeliver`, taken by the worker: the worker is the only writer of its cursor,
    /// so a redelivery cannot be overwritten by a batch committing at the same time.
    rewind: Mutex<Option<Rewind>>,
    wake: Notify,
}

/// The workers running, by context.
type Workers = Arc<Mutex<HashMap<String, Arc<Subscriber>>>>;

/// How long a redelivery waits for the worker to take it (it finishes its current batch
/// first); past it the request stays queued and the answer says so.
const REWIND_WAIT: Duration = Duration::from_secs(30);

/// The broker-less transport.
pub(crate) struct EmbeddedBus {
    bus: BusCtx,
    policy: RetryPolicy,
    subscribers: Workers,
}

impl EmbeddedBus {
    pub(crate) fn new(bus: BusCtx, policy: RetryPolicy) -> Self {
        EmbeddedBus {
            bus,
            policy,
            subscribers: Arc::default(),
        }
    }
}

impl EventTransport for EmbeddedBus {
    fn start(&self, contexts: Vec<String>, shutdown: watch::Receiver<bool>) {
        for name in contexts {
            if !subscribes(&self.bus, &name) {
                continue;
            }
            let sub = {
                let mut workers = lock(&self.subscribers);
                // Idempotent: a hot swap calls this again for a context that already runs.
                if workers.contains_key(&name) {
                    continue;
                }
                let sub = Arc::new(Subscriber {
                    rewind: Mutex::new(None),
                    wake: Notify::new(),
                });
                workers.insert(name.clone(), sub.clone());
                sub
            };
            let bus = self.bus.clone();
            let policy = self.policy.clone();
            let shutdown = shutdown.clone();
            let workers = self.subscribers.clone();
            tokio::spawn(async move {
                supervise(bus, name.clone(), sub.clone(), policy, shutdown).await;
                let mut workers = lock(&workers);
                if workers.get(&name).is_some_and(|s| Arc::ptr_eq(s, &sub)) {
                    workers.remove(&name);
                }
            });
        }
    }

    fn redeliver<'a>(
        &'a self,
        context: &'a str,
        from_seq: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Option<u64>, BusError>> + Send + 'a>> {
        Box::pin(async move {
            let sub = lock(&self.subscribers)
                .get(context)
                .cloned()
                .ok_or_else(|| BusError::UnknownSubscriber(context.to_string()))?;
            // A position past the log's end would park the cursor in the future and skip
            // the events published until the log got there.
            let head = *self.bus.committer().committed_events().borrow();
            if from_seq > head {
                return Err(BusError::BeyondHead { from_seq, head });
            }
            let (done, taken) = oneshot::channel();
            // A newer request replaces one the worker has not taken yet.
            *lock(&sub.rewind) = Some(Rewind { from_seq, done });
            sub.wake.notify_one();
            tracing::info!(context, from_seq, "redelivery requested");
            match tokio::time::timeout(REWIND_WAIT, taken).await {
                Ok(Ok(Ok(()))) => Ok(None),
                Ok(Ok(Err(e))) => Err(BusError::Unavailable(format!(
                    "cannot move the cursor: {e}"
                ))),
                Ok(Err(_)) => Err(BusError::Unavailable(
                    "the request was replaced by a newer one, or the worker stopped".into(),
                )),
                Err(_) => Err(BusError::Unavailable(format!(
                    "the worker has not taken the request within {REWIND_WAIT:?}; it stays queued"
                ))),
            }
        })
    }

    /// The lowest cursor of every subscriber the cursor table knows (a context not loaded
    /// now still has the events after its cursor to apply when it comes back) and of every
    /// worker running (one that has not stored a cursor yet holds the whole log).
    fn consumed_through(&self) -> Result<Consumed, BusError> {
        let head = *self.bus.committer().committed_events().borrow();
        let mut low = Consumed {
            seq: head,
            held_by: None,
        };
        let mut take = |name: &str, seq: u64| {
            if low.held_by.is_none() || seq < low.seq {
                low = Consumed {
                    seq: seq.min(head),
                    held_by: Some(name.to_string()),
                };
            }
        };
        let stored = cursor::all(&self.bus)?;
        for (name, seq) in &stored {
            if cursor::is_context(name) {
                take(name, *seq);
            }
        }
        let running: Vec<String> = lock(&self.subscribers).keys().cloned().collect();
        for name in running {
            if !stored.iter().any(|(n, _)| *n == name) {
                take(&name, 0);
            }
        }
        Ok(low)
    }

    fn status(&self) -> TransportStatus {
        TransportStatus {
            transport: "embedded",
            ready: true,
            state: "connected",
            outbox_pending: None,
            detail: "events are delivered from the local event log".into(),
        }
    }
}

/// Run the worker of `context` until shutdown or until the context is unloaded. A failure
/// of state (storage full or failing, ...) never ends it: the worker starts again from its
/// durable cursor after a backoff, so a recovered storage resumes delivery by itself.
async fn supervise(
    bus: BusCtx,
    context: String,
    sub: Arc<Subscriber>,
    policy: RetryPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(
        format!("event worker {context}"),
        policy.first_backoff,
        policy.max_backoff,
    );
    loop {
        match worker(&bus, &context, &sub, &policy, &mut shutdown, &mut backoff).await {
            Ok(()) => break,
            Err(e) => {
                if !backoff.wait(&e, &mut shutdown).await {
                    break;
                }
            }
        }
    }
    tracing::debug!(context = %context, "event worker stopped");
}

async fn worker(
    bus: &BusCtx,
    context: &str,
    sub: &Subscriber,
    policy: &RetryPolicy,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<(), StateError> {
    let mut committed = bus.committer().committed_events();
    let mut cursor = cursor::read(bus, context)?;
    let mut persisted = cursor;
    let cursor_table = cursor::table();
    tracing::debug!(context = %context, cursor, "event worker started");
    'outer: loop {
        if *shutdown.borrow() {
            break;
        }
        let rewind = lock(&sub.rewind).take();
        if let Some(r) = rewind {
            if let Err(e) = cursor::write(bus, context, r.from_seq).await {
                let _ = r.done.send(Err(e.to_string()));
                return Err(e);
            }
            cursor = r.from_seq;
            persisted = r.from_seq;
            let _ = r.done.send(Ok(()));
        }
        let head = *committed.borrow_and_update();
        metrics().subscriber_lag(context, head.saturating_sub(cursor));
        let batch = bus.db().events_after(cursor, BATCH)?;
        if batch.is_empty() {
            if persisted != cursor {
                cursor::write(bus, context, cursor).await?;
                persisted = cursor;
                backoff.succeeded();
            }
            tokio::select! {
                _ = committed.changed() => {}
                _ = sub.wake.notified() => {}
                _ = shutdown.changed() => {}
                // A safety net against a missed wake-up.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let subscriptions = match bus.subscriber(context) {
            Some(c) => c.subscriptions().to_vec(),
            None => break,
        };
        let last = batch.last().map(|(seq, _)| *seq).unwrap_or(cursor);
        let mut run = Vec::new();
        for (seq, bytes) in batch {
            match Envelope::decode(&bytes) {
                Ok(event) if subscriptions.contains(&event.event_type) => run.push((seq, event)),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(context = %context, seq, error = %e, "skipping unreadable event")
                }
            }
        }
        if lock(&sub.rewind).is_some() || *shutdown.borrow() {
            continue 'outer;
        }
        let outcomes =
            deliver_all(bus, context, &run, Some((&cursor_table, context)), policy).await?;
        // Only a commit shows that storage takes changes again.
        if !run.is_empty() {
            backoff.succeeded();
        }
        tracing::debug!(context = %context, events = run.len(), to = last, "events delivered");
        if outcomes.len() < run.len() {
            // The context is no longer loaded.
            break 'outer;
        }
        if let Some((seq, _)) = run.last() {
            persisted = *seq;
        }
        cursor = last;
    }
    Ok(())
}
