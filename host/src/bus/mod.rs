//! Event transports. Every event a committed unit of work published is in the event log
//! (the outbox); a transport carries it from there to each subscribed context, which applies
//! it through `delivery` (inbox check, handler, cursor, one commit).
//!
//! The embedded bus is the transport when no broker is configured; `amqp` carries events
//! through RabbitMQ, between the contexts of one process or of several.

pub mod amqp;
mod cursor;
pub(crate) mod delivery;
mod embedded;
pub mod envelope;

use std::future::Future;
use std::pin::Pin;

pub use amqp::{AmqpBus, AmqpSettings};
pub use delivery::{Delivered, MAX_BATCH, RetryPolicy, deliver_all};
pub use embedded::EmbeddedBus;
pub use envelope::Envelope;

/// Whether `context` is loaded and subscribes to any event type (else no transport needs to
/// deliver to it).
fn subscribes(runtime: &crate::runtime::Runtime, context: &str) -> bool {
    runtime
        .registry()
        .get(context)
        .is_some_and(|c| !c.subscriptions.is_empty())
}

/// Failures of a transport's operator commands.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("context {0} is not subscribed to any event in this host")]
    UnknownSubscriber(String),
    #[error("the event transport cannot do this now: {0}")]
    Unavailable(String),
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
}
