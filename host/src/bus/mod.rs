//! Event transports. Every event a committed unit of work published is in the event log
//! (the outbox); a transport carries it from there to each subscribed context, which applies
//! it through `delivery` (inbox check, handler, cursor, one commit).
//!
//! The embedded bus is the transport when no broker is configured; `amqp` carries events
//! through RabbitMQ, between the contexts of one process or of several. What a context
//! could not apply waits in `dead_letters`, to be retried or deleted.

pub(crate) mod amqp;
mod backoff;
mod cursor;
pub(crate) mod dead_letters;
pub(crate) mod delivery;
mod embedded;
pub(crate) mod envelope;
#[cfg(test)]
mod proptests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::state::{Committer, Db, SharedUnit};

pub(crate) use amqp::{AmqpBus, AmqpConfigError, AmqpFile, AmqpSettings};
pub(crate) use delivery::RetryPolicy;
pub(crate) use embedded::EmbeddedBus;
pub(crate) use envelope::Envelope;

/// A context as the bus sees it: the event types it subscribes to and its handler. One
/// value stands for one version of the context, so a run of events is applied by one
/// version even while a hot swap happens.
pub(crate) trait Subscriber: Send + Sync {
    /// The event types the context subscribes to.
    fn subscriptions(&self) -> &[String];
    /// Apply `event` inside `unit` (the caller commits it).
    fn handle<'a>(
        &'a self,
        unit: SharedUnit,
        event: &'a Envelope,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;
}

/// The contexts this process runs, for the transports; the runtime provides them.
pub(crate) trait Subscribers: Send + Sync + 'static {
    /// The current version of `context`, when it is loaded here.
    fn subscriber(&self, context: &str) -> Option<Arc<dyn Subscriber>>;
}

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandlerError {
    /// The handler answered that it cannot apply the event.
    #[error("handler refused the event: {0}")]
    Refused(String),
    /// The handler could not run or failed (trap, deadline, ...).
    #[error("{0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What a transport works with: the state (event log, inboxes, cursors, dead letters) and
/// the contexts it delivers to.
#[derive(Clone)]
pub(crate) struct BusCtx {
    db: Db,
    committer: Committer,
    subscribers: Arc<dyn Subscribers>,
}

impl BusCtx {
    pub(crate) fn new(db: Db, committer: Committer, subscribers: Arc<dyn Subscribers>) -> Self {
        BusCtx {
            db,
            committer,
            subscribers,
        }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn committer(&self) -> &Committer {
        &self.committer
    }

    /// The current version of `context`, when it is loaded here.
    pub(crate) fn subscriber(&self, context: &str) -> Option<Arc<dyn Subscriber>> {
        self.subscribers.subscriber(context)
    }
}

/// Whether `context` is loaded and subscribes to any event type (else no transport needs to
/// deliver to it).
fn subscribes(bus: &BusCtx, context: &str) -> bool {
    bus.subscriber(context)
        .is_some_and(|c| !c.subscriptions().is_empty())
}

/// Failures of a transport's operator commands.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("context {0} is not subscribed to any event in this host")]
    UnknownSubscriber(String),
    #[error("the event transport cannot do this now: {0}")]
    Unavailable(String),
    #[error("position {from_seq} is beyond the end of the event log ({head})")]
    BeyondHead { from_seq: u64, head: u64 },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// What a transport reports to readiness checks and operators.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportStatus {
    /// `embedded` or `amqp`.
    pub transport: &'static str,
    /// Events flow now.
    pub ready: bool,
    /// `connected`, `connecting` or `disconnected`.
    pub state: &'static str,
    pub detail: String,
    /// Events committed and not yet handed to the broker (`None`: no broker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox_pending: Option<u64>,
}

/// A way of carrying committed events to subscribers.
pub trait EventTransport: Send + Sync + 'static {
    /// Start delivering to the subscribing contexts among `contexts`, until `shutdown`.
    fn start(&self, contexts: Vec<String>, shutdown: tokio::sync::watch::Receiver<bool>);
    /// Deliver every event after `from_seq` to `context` again; the inbox skips those
    /// already applied. Returns how many messages were sent again, where the transport
    /// re-sends rather than rewinds (`None`: a rewind).
    fn redeliver<'a>(
        &'a self,
        context: &'a str,
        from_seq: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Option<u64>, BusError>> + Send + 'a>>;
    /// Current state, for `/readyz`.
    fn status(&self) -> TransportStatus;
    /// How far every consumer of the local event log has it: the log's events up to
    /// [`Consumed::seq`] may be removed without any consumer missing one.
    fn consumed_through(&self) -> Result<Consumed, BusError>;
}

/// The position every consumer of the event log has passed, and which consumer is there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Consumed {
    pub seq: u64,
    /// The consumer holding the log at `seq` (a context's worker, or the broker relay);
    /// `None` when the log has no consumer.
    pub held_by: Option<String>,
}
