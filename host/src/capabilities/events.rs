//! `ctxhost:platform/events`: publishing into the unit of work. The host fills in the
//! CloudEvents attributes; the event leaves only with the unit's commit.

use std::sync::Arc;

use super::CapabilityCtx;
use crate::bindings::events::Host;
use crate::bus::Envelope;
use crate::sync::lock;
use crate::telemetry::trace;

/// Largest event payload, in bytes.
pub(super) const MAX_EVENT_DATA: usize = 256 * 1024;

/// Whether `t` can be an event type: 1 to 128 letters, digits, `.`, `-` or `_` (it is a
/// routing key over RabbitMQ, which holds at most 255 bytes).
pub(crate) fn valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// A correlation id travels with the event to every subscriber (over RabbitMQ as a message
/// property and header): at most `max` bytes.
fn check_correlation_id(id: &str, max: usize) -> Result<(), String> {
    if id.len() > max {
        return Err(format!(
            "the correlation id is {} bytes long, over the limit of {max} \
             (limits.correlation_id_bytes)",
            id.len()
        ));
    }
    Ok(())
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
        if let Err(why) = check_correlation_id(&correlation_id, self.limits.correlation_id_bytes) {
            return Ok(Err(why));
        }
        let id = uuid::Uuid::new_v4().to_string();
        // The producer span ends here; its context travels with the event, so each
        // delivery's consumer span becomes its child.
        let producer = trace::producer(&trace::EventAttributes {
            id: &id,
            event_type: &event_type,
            correlation_id: &correlation_id,
            context: &self.context,
        });
        let traceparent = trace::traceparent(&producer)
            .unwrap_or_else(|| trace::unrecorded_parent(&self.trace_id))
            .to_string();
        drop(producer);
        let envelope = Envelope {
            id,
            source: format!("/contexts/{}", self.context),
            event_type,
            time: crate::time::now_rfc3339(),
            correlationid: correlation_id,
            traceid: self.trace_id.to_string(),
            traceparent,
            authid: self
                .principal
                .as_ref()
                .map(|p| p.subject.clone())
                .unwrap_or_default(),
            datacontenttype: "application/json".into(),
            data,
        };
        let limits = self.limits.unit;
        Ok(lock(self.unit()?)
            .publish_bounded(
                crate::state::OutgoingEvent {
                    encoded: envelope.encode(),
                    publisher: self.context.clone(),
                    event_type: Arc::from(envelope.event_type.as_str()),
                },
                &limits,
            )
            .map_err(|e| e.to_string()))
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

    #[test]
    fn correlation_ids_are_checked_against_their_limit() {
        assert!(super::check_correlation_id("", 256).is_ok());
        assert!(super::check_correlation_id(&"c".repeat(256), 256).is_ok());
        let why = super::check_correlation_id(&"c".repeat(257), 256).unwrap_err();
        assert!(why.contains("limits.correlation_id_bytes"), "{why}");
    }
}
