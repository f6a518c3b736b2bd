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
use crate::bus::backoff::Backoff;
use crate::bus::cursor;
use crate::bus::envelope::Envelope;
use crate::bus::{BusCtx, RetryPolicy};
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

/// Publish the outbox until the channel fails. A failure of state (storage full or failing)
/// does not end it: the relay waits with backoff and goes on from its cursor, keeping the
/// connection.
pub(super) async fn run(
    channel: Channel,
    bus: BusCtx,
    topology: Arc<Topology>,
    link: Arc<Link>,
    policy: RetryPolicy,
) -> Result<(), AmqpError> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let exchange = topology.exchange();
    let mut committed = bus.committer().committed_events();
    let mut backoff = Backoff::new("relay", policy.first_backoff, policy.max_backoff);
    let mut cursor = loop {
        match read_cursor(&bus) {
            Ok(c) => break c,
            Err(e) => tokio::time::sleep(backoff.failed(&e)).await,
        }
    };
    // The cursor as last stored; behind `cursor` while storing it fails.
    let mut saved = cursor;
    let mut nacks = 0u32;
    loop {
        committed.borrow_and_update();
        link.confirmed.store(cursor, Ordering::Relaxed);
        let batch = match bus.db().events_after(cursor, BATCH) {
            Ok(batch) => batch,
            Err(e) => {
                tokio::time::sleep(backoff.failed(&e)).await;
                continue;
            }
        };
        if batch.is_empty() {
            if saved != cursor {
                match cursor::write(&bus, RELAY_CURSOR, cursor).await {
                    Ok(()) => {
                        saved = cursor;
                        backoff.succeeded();
                    }
                    Err(e) => {
                        tokio::time::sleep(backoff.failed(&e)).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = committed.changed() => {}
                // A safety net against a missed wake-up.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let (confirmed, nacked) = publish(&channel, &exchange, &batch, cursor).await?;
        if confirmed > cursor {
            link.published
                .fetch_add(confirmed - cursor, Ordering::Relaxed);
            cursor = confirmed;
            link.confirmed.store(cursor, Ordering::Relaxed);
            match cursor::write(&bus, RELAY_CURSOR, cursor).await {
                Ok(()) => {
                    saved = cursor;
                    backoff.succeeded();
                }
                // Kept in memory and stored later; should the process end first, the events
                // since `saved` are published again (duplicates, which inboxes drop).
                Err(e) => tokio::time::sleep(backoff.failed(&e)).await,
            }
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

/// Publish `batch` and wait for its confirms; the last sequence number confirmed in order
/// from `cursor`, and whether the broker refused one.
async fn publish(
    channel: &Channel,
    exchange: &str,
    batch: &[(u64, Vec<u8>)],
    cursor: u64,
) -> Result<(u64, bool), AmqpError> {
    let mut confirms = Vec::with_capacity(batch.len());
    for (seq, bytes) in batch {
        match Envelope::decode(bytes) {
            Ok(event) => {
                let confirm = channel
                    .basic_publish(
                        exchange.into(),
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
    for (seq, pending) in confirms {
        if let Some((confirm, event_type)) = pending {
            let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
                .await
                .map_err(|_| AmqpError::ConfirmTimeout(CONFIRM_TIMEOUT))??;
            if confirmation.is_nack() {
                return Ok((confirmed, true));
            }
            if let Some(returned) = confirmation.take_message() {
                tracing::debug!(seq, event_type, reply = %returned.reply_text, "no queue is bound to this event type");
            }
        }
        confirmed = seq;
    }
    Ok((confirmed, false))
}
