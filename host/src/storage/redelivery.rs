//! Whether a redelivery can be done without applying an event twice. A redelivery sends
//! the events after a position again, and each context's inbox drops those it applied:
//! that holds only while the log still has those events and the inbox still has their
//! ids. So a redelivery is refused when it reaches before the oldest event kept, or when
//! the first event it would send is older than `inbox_retention` (an inbox entry is
//! never older than its event, on a clock that runs only while a host does, so an event
//! younger than the inbox's retention still has its entry wherever it was applied).

use std::time::SystemTime;

use super::Storage;
use crate::bus::Envelope;
use crate::state::StateError;

/// Why a redelivery is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedeliveryRefused {
    #[error(
        "events {from}..{oldest} were removed by retention (event_retention {retention}); the earliest position a redelivery can start from is {earliest}"
    )]
    Pruned {
        from: u64,
        oldest: u64,
        earliest: u64,
        retention: String,
    },
    #[error(
        "event {seq} was published {age_secs} s ago, longer than inbox_retention ({retention}): the inboxes may no longer hold it, so a redelivery could apply it twice; start after the events older than that"
    )]
    BeyondInbox {
        seq: u64,
        age_secs: u64,
        retention: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

impl Storage {
    /// Refuse a redelivery of the events after `from_seq` that could lose events or apply
    /// one twice (see the module's documentation).
    pub(crate) fn check_redelivery(&self, from_seq: u64) -> Result<(), RedeliveryRefused> {
        let db = self.bus.db();
        let head = *self.bus.committer().committed_events().borrow();
        if from_seq >= head {
            return Ok(());
        }
        let extent = db.event_log_extent()?;
        let oldest = extent.map(|(o, _)| o).unwrap_or(head + 1);
        if from_seq + 1 < oldest {
            return Err(RedeliveryRefused::Pruned {
                from: from_seq + 1,
                oldest,
                earliest: oldest - 1,
                retention: self.settings.event_retention.to_string(),
            });
        }
        let Some(retention) = self.settings.inbox_retention.duration() else {
            return Ok(());
        };
        let Some((seq, bytes)) = db.events_after(from_seq, 1)?.into_iter().next() else {
            return Ok(());
        };
        let Ok(event) = Envelope::decode(&bytes) else {
            return Ok(());
        };
        let Some(published) = crate::time::parse_rfc3339(&event.time) else {
            return Ok(());
        };
        let age = SystemTime::now()
            .duration_since(published)
            .unwrap_or_default();
        if age >= retention {
            return Err(RedeliveryRefused::BeyondInbox {
                seq,
                age_secs: age.as_secs(),
                retention: self.settings.inbox_retention.to_string(),
            });
        }
        Ok(())
    }
}
