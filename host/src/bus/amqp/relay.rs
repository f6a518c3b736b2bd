//! The outbox relay: publishes the events of the local event log, in order, to the
//! exchange, with publisher confirms. Its cursor moves (durably) only past events the broker
//! acknowledged, so a crash or a lost connection at any point re-publishes rather than
//! loses; subscribers' inboxes drop the duplicates.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::Channel;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

use super::link::Link;
use super::topology::Topology;
use super::{AmqpError, message};
use crate::bus::BusCtx;
use crate::bus::cursor;
use crate::bus::envelope::Envelope;
use crate::state::StateError;

/// The relay's cursor in the cursor table (not a valid context name, so no clash).
const RELAY_CURSOR: &str = "amqp:relay";
/// Events published before waiting for their confirms.
const BATCH: usize = 512;
/// How long the broker may take to confirm a publish before the connection is given up.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// The last sequence number the broker confirmed.
pub(super) fn read_cursor(bus: &BusCtx) -> Result<u64, StateError> {
    cursor::read(bus, RELAY_CURSOR)
}

/// Publish the outbox until the channel fails.
pub(super) async fn run(
    channel: Channel,
    bus: BusCtx,
    topology: Arc<Topology>,
    link: Arc<Link>,
) -> Result<(), AmqpError> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let exchange = topology.exchange();
    let mut committed = bus.committer().committed_events();
    let mut cursor = read_cursor(&bus)?;
    let mut nacks = 0u32;
    loop {
        committed.borrow_and_update();
        link.confirmed.store(cursor, Ordering::Relaxed);
        let batch = bus.db().events_after(cursor, BATCH)?;
        if batch.is_empty() {
            tokio::select! {
                _ = committed.changed() => {}
                // A safety net against a missed wake-up.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let mut confirms = Vec::with_capacity(batch.len());
        for (seq, bytes) in &batch {
            match Envelope::decode(bytes) {
                Ok(event) => {
                    let confirm = channel
                        .basic_publish(
                            exchange.as_str().into(),
                            event.event_type.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..BasicPublishOptions::default()
                            },
                            &event.data,
                            message::properties(*seq, &event),
                        )
                        .await?;
                    confirms.push((*seq, Some((confirm, event.event_type))));
                }
                Err(e) => {
                    tracing::error!(seq, error = %e, "skipping an unreadable event of the outbox");
                    confirms.push((*seq, None));
                }
            }
        }
        let mut confirmed = cursor;
        let mut nacked = false;
        for (seq, pending) in confirms {
            if let Some((confirm, event_type)) = pending {
                let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
                    .await
                    .map_err(|_| AmqpError::ConfirmTimeout(CONFIRM_TIMEOUT))??;
                if confirmation.is_nack() {
                    nacked = true;
                    break;
                }
                if let Some(returned) = confirmation.take_message() {
                    tracing::debug!(seq, event_type, reply = %returned.reply_text, "no queue is bound to this event type");
                }
            }
            confirmed = seq;
        }
        if confirmed > cursor {
            cursor::write(&bus, RELAY_CURSOR, confirmed).await?;
            link.published
                .fetch_add(confirmed - cursor, Ordering::Relaxed);
            cursor = confirmed;
            link.confirmed.store(cursor, Ordering::Relaxed);
        }
        if nacked {
            nacks += 1;
            let backoff = Duration::from_millis(100 * u64::from(nacks.min(50)));
            tracing::warn!(
                after = cursor,
                ?backoff,
                "the broker refused a publish; publishing again"
            );
            tokio::time::sleep(backoff).await;
        } else {
            nacks = 0;
        }
    }
}
