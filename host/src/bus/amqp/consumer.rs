//! The consumer of one subscribing context: takes the messages of its queue one at a time
//! (so events of a publisher apply in order), applies each through `deliver` and
//! acknowledges only after the unit of work (effect and inbox entry) has committed. A
//! message the context gives up on is rejected into the dead-letter exchange. Bindings follow
//! the event types the current version of the context declares.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::topology::Topology;
use super::{AmqpError, message};
use crate::bus::delivery::{Delivered, RetryPolicy, deliver, record_dead_letter};
use crate::runtime::Runtime;

/// How often the bindings are compared with the context's current subscriptions.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// Why a consumer stopped without an error.
#[derive(Debug)]
pub enum Stopped {
    /// The context is no longer loaded; its messages wait in its queue.
    ContextGone(String),
}

/// What a consumer needs.
pub struct ConsumerSpec {
    pub runtime: Runtime,
    pub topology: Arc<Topology>,
    pub context: String,
    pub prefetch: u16,
    pub policy: RetryPolicy,
}

/// Declare the context's queue and bindings, then consume until the channel fails or the
/// context is unloaded.
pub async fn run(conn: Arc<Connection>, spec: ConsumerSpec) -> Result<Stopped, AmqpError> {
    let ConsumerSpec {
        runtime,
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
    if !reconcile(&channel, &runtime, &topology, &context, &mut bound).await? {
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
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    loop {
        tokio::select! {
            next = consumer.next() => {
                let delivery = match next {
                    None => return Err(AmqpError::ConsumerEnded(context)),
                    Some(d) => d?,
                };
                if let Some(stopped) = handle(&runtime, &context, &policy, delivery).await? {
                    return Ok(stopped);
                }
            }
            _ = tick.tick() => {
                if !reconcile(&channel, &runtime, &topology, &context, &mut bound).await? {
                    return Ok(Stopped::ContextGone(context));
                }
            }
        }
    }
}

/// Bind the event types the context subscribes to now and unbind those it dropped. False
/// when the context is no longer loaded.
async fn reconcile(
    channel: &Channel,
    runtime: &Runtime,
    topology: &Topology,
    context: &str,
    bound: &mut BTreeSet<String>,
) -> Result<bool, AmqpError> {
    let Some(ctx) = runtime.registry().get(context) else {
        return Ok(false);
    };
    let wanted: BTreeSet<String> = ctx.subscriptions.iter().cloned().collect();
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

async fn handle(
    runtime: &Runtime,
    context: &str,
    policy: &RetryPolicy,
    delivery: Delivery,
) -> Result<Option<Stopped>, AmqpError> {
    let reject = BasicNackOptions {
        requeue: false,
        multiple: false,
    };
    let (seq, event) = match message::decode(&delivery.properties, &delivery.data) {
        Ok(decoded) => decoded,
        Err(e) => {
            tracing::error!(context, error = %e, routing_key = %delivery.routing_key, "dead-lettering a message that is not an event");
            let record = serde_json::json!({
                "context": context,
                "reason": e.to_string(),
                "attempts": 0,
                "routingKey": delivery.routing_key.as_str(),
                "data": String::from_utf8_lossy(&delivery.data),
                "deadLetteredAt": crate::time::now_rfc3339(),
            });
            let key = format!("{context}/foreign/{}", uuid::Uuid::new_v4());
            record_dead_letter(runtime, &key, record).await?;
            delivery.nack(reject).await?;
            return Ok(None);
        }
    };
    let subscribed = match runtime.registry().get(context) {
        Some(ctx) => ctx.subscriptions.contains(&event.event_type),
        None => {
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await?;
            return Ok(Some(Stopped::ContextGone(context.to_string())));
        }
    };
    if !subscribed {
        // Bound when an earlier version subscribed; this one does not.
        delivery.ack(BasicAckOptions::default()).await?;
        return Ok(None);
    }
    let outcome = deliver(runtime, context, seq, &event, None, policy).await?;
    tracing::debug!(context, event_id = %event.id, event_type = %event.event_type, seq, redelivered = delivery.redelivered, ?outcome, "event delivered");
    match outcome {
        Delivered::Applied | Delivered::Duplicate => {
            delivery.ack(BasicAckOptions::default()).await?;
            Ok(None)
        }
        Delivered::DeadLettered(_) => {
            delivery.nack(reject).await?;
            Ok(None)
        }
        Delivered::NoSuchContext => {
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await?;
            Ok(Some(Stopped::ContextGone(context.to_string())))
        }
    }
}
