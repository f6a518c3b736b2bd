//! `ctxhost:platform/events`: publishing into the unit of work. The host fills in the
//! CloudEvents attributes; the event leaves only with the unit's commit.

use super::CapabilityCtx;
use crate::bindings::events::Host;
use crate::bus::Envelope;
use crate::sync::lock;

/// Largest event payload, in bytes.
pub(super) const MAX_EVENT_DATA: usize = 256 * 1024;

fn valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

impl Host for CapabilityCtx {
    fn publish(
        &mut self,
        event_type: String,
        correlation_id: String,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), String>> {
        if !valid_type(&event_type) {
            return Ok(Err(format!(
                "invalid event type {event_type:?}: use 1 to 128 letters, digits, '.', '-' or '_'"
            )));
        }
        if data.len() > MAX_EVENT_DATA {
            return Ok(Err(format!(
                "event data is {} bytes, over the limit of {MAX_EVENT_DATA}",
                data.len()
            )));
        }
        let envelope = Envelope {
            id: uuid::Uuid::new_v4().to_string(),
            source: format!("/contexts/{}", self.context),
            event_type,
            time: crate::time::now_rfc3339(),
            correlationid: correlation_id,
            traceid: self.trace_id.to_string(),
            datacontenttype: "application/json".into(),
            data,
        };
        lock(self.unit()?).publish(crate::state::OutgoingEvent {
            encoded: envelope.encode(),
        });
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_types_are_checked() {
        assert!(super::valid_type("OrderPlaced"));
        assert!(super::valid_type("rental.order-placed_v2"));
        assert!(!super::valid_type(""));
        assert!(!super::valid_type("has space"));
        assert!(!super::valid_type(&"x".repeat(129)));
    }
}
