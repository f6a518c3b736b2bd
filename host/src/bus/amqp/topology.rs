//! The broker objects of one namespace, declared idempotently at every connection:
//!
//! - `<ns>.events`: durable topic exchange; every event is published with its type as the
//!   routing key;
//! - `<ns>.<context>`: durable queue of a subscribing context (quorum where the broker
//!   supports it), bound to each event type the context declares;
//! - `<ns>.dead-letter` (fanout exchange) and `<ns>.dead-letters` (queue): where the queues
//!   send the messages their context gave up on.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

/// A redelivered message is dead-lettered by the broker after this many deliveries, even if
/// no handler ever finished (a host that crashes on it, say).
const DELIVERY_LIMIT: i64 = 20;

/// Names of the broker objects of a namespace.
#[derive(Debug, Clone)]
pub(super) struct Topology {
    namespace: String,
}

impl Topology {
    pub(super) fn new(namespace: &str) -> Self {
        Topology {
            namespace: namespace.to_string(),
        }
    }

    /// The topic exchange every event is published to.
    pub(super) fn exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// The exchange of dead letters.
    pub(super) fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.namespace)
    }

    /// The queue collecting dead letters.
    pub(super) fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letters", self.namespace)
    }

    /// The queue of a subscribing context.
    pub(super) fn queue(&self, context: &str) -> String {
        format!("{}.{context}", self.namespace)
    }

    /// Declare the exchanges and the dead-letter queue.
    pub(super) async fn declare_shared(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.dead_letter_queue().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                self.dead_letter_queue().into(),
                self.dead_letter_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    /// Declare the queue of `context`: a quorum queue, or, where the broker refuses one (an
    /// old broker, or a classic queue of that name from before), a classic durable queue.
    /// Returns the kind declared. Each attempt gets its own channel, since a refused
    /// declaration closes the channel.
    pub(super) async fn declare_queue(
        &self,
        conn: &Connection,
        context: &str,
    ) -> lapin::Result<&'static str> {
        let name = self.queue(context);
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange().as_str().into()),
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut quorum = args.clone();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        quorum.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let attempts = [
            ("quorum", durable, quorum),
            ("classic", durable, args),
            ("existing", passive, FieldTable::default()),
        ];
        let mut last = None;
        for (kind, options, arguments) in attempts {
            if let Some(e) = last.take() {
                tracing::warn!(queue = %name, error = %e, next = kind, "the broker refused the queue declaration; trying the next kind");
            }
            let channel = conn.create_channel().await?;
            match channel
                .queue_declare(name.as_str().into(), options, arguments)
                .await
            {
                Ok(_) => {
                    let _ = channel.close(200, "declared".into()).await;
                    return Ok(kind);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| unreachable!("three attempts were made")))
    }

    /// Bind the queue of `context` to an event type.
    pub(super) async fn bind(
        &self,
        channel: &Channel,
        context: &str,
        event_type: &str,
    ) -> lapin::Result<()> {
        channel
            .queue_bind(
                self.queue(context).into(),
                self.exchange().into(),
                event_type.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    /// Remove the binding of an event type the context no longer subscribes to.
    pub(super) async fn unbind(
        &self,
        channel: &Channel,
        context: &str,
        event_type: &str,
    ) -> lapin::Result<()> {
        channel
            .queue_unbind(
                self.queue(context).into(),
                self.exchange().into(),
                event_type.into(),
                FieldTable::default(),
            )
            .await
    }
}
