//! The consumer of one subscribing context: takes the messages of its queue in order (so
//! events of a publisher apply in order), in batches of what the broker has already sent
//! (up to the prefetch), applies them through `deliver_all` (one commit per batch) and
//! acknowledges each only after the unit of work holding its effect and inbox entry has
//! committed. A
//! message the context gives up on is rejected into the dead-letter exchange. Bindings follow
//! the event types the current version of the context declares. A failure of state (storage
//! full or failing) is retried with backoff, keeping the connection and the deliveries.

use crate::bus::BusCtx;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::topology::Topology;
use super::{AmqpError, message};
use crate::bus::backoff::Backoff;
use crate::bus::delivery::{Delivered, MAX_BATCH, RetryPolicy, deliver_all, record_dead_letter};
use crate::telemetry::metrics;

/// How often the bindings are compared with the context's current subscriptions.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// Why a consumer stopped without an error.
#[derive(Debug)]
pub(super) enum Stopped {
    /// The context is no longer loaded; its messages wait in its queue.
    ContextGone(String),
}

/// What a consumer needs.
pub(super) struct ConsumerSpec {
    pub bus: BusCtx,
    pub topology: Arc<Topology>,
    pub context: String,
    pub prefetch: u16,
    pub policy: RetryPolicy,
}

/// Declare the context's queue and bindings, then consume until the channel fails or the
/// context is unloaded.
pub(super) async fn run(conn: Arc<Connection>, spec: ConsumerSpec) -> Result<Stopped, AmqpError> {
    let ConsumerSpec {
        bus,
        topology,
        context,
        prefetch,
        policy,
    } = spec;
    let kind = topology.declare_queue(&conn, &context).await?;
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut bound = BTreeSet::new();
    if !reconcile(&channel, &bus, &topology, &context, &mut bound).await? {
        return Ok(Stopped::ContextGone(context));
    }
    let queue = topology.queue(&context);
    let tag = format!("ctxhost-{context}-{}", std::process::id());
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(context = %context, queue = %queue, kind, prefetch, subscriptions = ?bound, "consuming");
    let mut backoff = Backoff::new(
        format!("consumer {context}"),
        policy.first_backoff,
        policy.max_backoff,
    );
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    loop {
        tokio::select! {
            next = consumer.next() => {
                let mut deliveries = match next {
                    None => return Err(AmqpError::ConsumerEnded(context)),
                    Some(d) => vec![d?],
                };
                // Whatever else the broker has already sent joins the batch.
                while deliveries.len() < MAX_BATCH {
                    match consumer.next().now_or_never() {
                        Some(Some(d)) => deliveries.push(d?),
                        Some(None) => return Err(AmqpError::ConsumerEnded(context)),
                        None => break,
                    }
                }
                if let Some(stopped) = handle(&bus, &context, &policy, deliveries, &mut backoff).await? {
                    return Ok(stopped);
                }
            }
            _ = tick.tick() => {
                if !reconcile(&channel, &bus, &topology, &context, &mut bound).await? {
                    return Ok(Stopped::ContextGone(context));
                }
                // The lag: what waits in the queue (a passive declaration reads its depth).
                let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
                let depth = channel
                    .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                    .await?;
                metrics().subscriber_lag(&context, u64::from(depth.message_count()));
            }
        }
    }
}

/// Bind the event types the context subscribes to now and unbind those it dropped. False
/// when the context is no longer loaded.
async fn reconcile(
    channel: &Channel,
    bus: &BusCtx,
    topology: &Topology,
    context: &str,
    bound: &mut BTreeSet<String>,
) -> Result<bool, AmqpError> {
    let Some(ctx) = bus.subscriber(context) else {
        return Ok(false);
    };
    let wanted: BTreeSet<String> = ctx.subscriptions().iter().cloned().collect();
    for event_type in wanted.difference(bound) {
        topology.bind(channel, context, event_type).await?;
        tracing::debug!(context, event_type, "bound");
    }
    for event_type in bound.difference(&wanted) {
        topology.unbind(channel, context, event_type).await?;
        tracing::info!(context, event_type, "unbound: no longer subscribed");
    }
    *bound = wanted;
    Ok(true)
}

const REJECT: BasicNackOptions = BasicNackOptions {
    requeue: false,
    multiple: false,
};
const REQUEUE: BasicNackOptions = BasicNackOptions {
    requeue: true,
    multiple: false,
};

/// Apply a batch of deliveries, in order, and settle each with the broker.
async fn handle(
    bus: &BusCtx,
    context: &str,
    policy: &RetryPolicy,
    deliveries: Vec<Delivery>,
    backoff: &mut Backoff,
) -> Result<Option<Stopped>, AmqpError> {
    let Some(ctx) = bus.subscriber(context) else {
        for delivery in deliveries {
            delivery.nack(REQUEUE).await?;
        }
        return Ok(Some(Stopped::ContextGone(context.to_string())));
    };
    let mut run = Vec::with_capacity(deliveries.len());
    let mut pending = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match message::decode(&delivery.properties, &delivery.data) {
            Ok((seq, event)) if ctx.subscriptions().contains(&event.event_type) => {
                run.push((seq, event));
                pending.push(delivery);
            }
            // Bound when an earlier version subscribed; this one does not.
            Ok(_) => {
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(e) => foreign(bus, context, delivery, e, backoff).await?,
        }
    }
    drop(ctx);
    // A failure of state keeps the deliveries unacknowledged and the batch is applied again
    // after a backoff (the inbox skips what a commit already holds).
    let outcomes = loop {
        match deliver_all(bus, context, &run, None, policy).await {
            Ok(outcomes) => break outcomes,
            Err(e) => tokio::time::sleep(backoff.failed(&e)).await,
        }
    };
    backoff.succeeded();
    tracing::debug!(context, events = run.len(), "events delivered");
    let settled_all = outcomes.len() == pending.len()
        && outcomes
            .iter()
            .all(|o| matches!(o, Delivered::Applied | Delivered::Duplicate));
    if settled_all && let Some(last) = pending.last() {
        // Everything up to the last delivery is settled (earlier ones were, one by one): one
        // frame acknowledges the batch.
        last.ack(BasicAckOptions { multiple: true }).await?;
        return Ok(None);
    }
    let mut stopped = None;
    for (i, delivery) in pending.into_iter().enumerate() {
        match outcomes.get(i) {
            Some(Delivered::Applied | Delivered::Duplicate) => {
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Some(Delivered::DeadLettered(_)) => {
                delivery.nack(REJECT).await?;
            }
            Some(Delivered::NoSuchContext) | None => {
                delivery.nack(REQUEUE).await?;
                stopped = Some(Stopped::ContextGone(context.to_string()));
            }
        }
    }
    Ok(stopped)
}

/// Record and reject a message that does not carry an event of this host.
async fn foreign(
    bus: &BusCtx,
    context: &str,
    delivery: Delivery,
    error: message::NotAnEvent,
    backoff: &mut Backoff,
) -> Result<(), AmqpError> {
    tracing::error!(context, error = %error, routing_key = %delivery.routing_key, "dead-lettering a message that is not an event");
    let record = serde_json::json!({
        "context": context,
        "reason": error.to_string(),
        "attempts": 0,
        "routingKey": delivery.routing_key.as_str(),
        "data": String::from_utf8_lossy(&delivery.data),
        "deadLetteredAt": crate::time::now_rfc3339(),
    });
    let key = format!("{context}/foreign/{}", uuid::Uuid::new_v4());
    while let Err(e) = record_dead_letter(bus, &key, &record, None).await {
        tokio::time::sleep(backoff.failed(&e)).await;
    }
    backoff.succeeded();
    delivery.nack(REJECT).await?;
    Ok(())
}
