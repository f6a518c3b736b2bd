//! An event as an AMQP message: the payload is the event's data, its CloudEvents attributes
//! travel as message properties and `cloudEvents:*` headers (binary content mode), so any
//! AMQP client can read the messages without the host's own encoding.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use crate::bus::envelope::{Envelope, SPEC_VERSION};

/// Header with the publisher's sequence number of the event (its position in the
/// publisher's outbox).
pub(crate) const SEQ_HEADER: &str = "ctxhost-seq";
const SPECVERSION: &str = "cloudEvents:specversion";
const ID: &str = "cloudEvents:id";
const SOURCE: &str = "cloudEvents:source";
const TYPE: &str = "cloudEvents:type";
const TIME: &str = "cloudEvents:time";
const CORRELATION: &str = "cloudEvents:correlationid";
const TRACE: &str = "cloudEvents:traceid";
/// The CloudEvents distributed-tracing extension: the W3C context of the publishing span.
const TRACEPARENT: &str = "cloudEvents:traceparent";
/// The CloudEvents auth context extension: who caused the event (`authid`) and what kind of
/// principal that is (`authtype`).
const AUTHID: &str = "cloudEvents:authid";
const AUTHTYPE: &str = "cloudEvents:authtype";

/// Persistent delivery mode: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// A message that does not carry an event of this host.
#[derive(Debug, thiserror::Error)]
#[error("not an event message: {0}")]
pub(super) struct NotAnEvent(&'static str);

/// The properties of the message carrying `event`, which is number `seq` of its publisher.
pub(super) fn properties(seq: u64, event: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    let mut text = |key: &str, value: &str| {
        headers.insert(key.into(), AMQPValue::LongString(value.into()));
    };
    text(SPECVERSION, SPEC_VERSION);
    text(ID, &event.id);
    text(SOURCE, &event.source);
    text(TYPE, &event.event_type);
    text(TIME, &event.time);
    text(CORRELATION, &event.correlationid);
    text(TRACE, &event.traceid);
    if !event.traceparent.is_empty() {
        text(TRACEPARENT, &event.traceparent);
    }
    if !event.authid.is_empty() {
        text(AUTHID, &event.authid);
        text(AUTHTYPE, "app_user");
    } else {
        text(AUTHTYPE, "unauthenticated");
    }
    headers.insert(SEQ_HEADER.into(), AMQPValue::LongLongInt(seq as i64));
    BasicProperties::default()
        .with_message_id(short(&event.id))
        .with_type(short(&event.event_type))
        .with_correlation_id(short(&event.correlationid))
        .with_content_type(short(&event.datacontenttype))
        .with_app_id(short(event.publisher()))
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers)
}

/// Read back the event (and its publisher's sequence number) from a delivered message.
pub(super) fn decode(
    properties: &BasicProperties,
    body: &[u8],
) -> Result<(u64, Envelope), NotAnEvent> {
    let headers = properties
        .headers()
        .as_ref()
        .ok_or(NotAnEvent("no headers"))?;
    let text = |key: &'static str| -> Result<String, NotAnEvent> {
        match headers.inner().get(key) {
            Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec())
                .map_err(|_| NotAnEvent("attribute is not UTF-8")),
            Some(AMQPValue::ShortString(s)) => Ok(s.as_str().to_string()),
            _ => Err(NotAnEvent(key)),
        }
    };
    let seq = match headers.inner().get(SEQ_HEADER) {
        Some(AMQPValue::LongLongInt(n)) if *n >= 0 => *n as u64,
        Some(AMQPValue::LongUInt(n)) => u64::from(*n),
        _ => return Err(NotAnEvent(SEQ_HEADER)),
    };
    let event = Envelope {
        id: text(ID)?,
        source: text(SOURCE)?,
        event_type: text(TYPE)?,
        time: text(TIME)?,
        correlationid: text(CORRELATION)?,
        traceid: text(TRACE)?,
        // Optional: a message from a publisher that did not trace has none.
        traceparent: match headers.inner().get(TRACEPARENT) {
            None => String::new(),
            Some(_) => text(TRACEPARENT)?,
        },
        // Optional: an anonymous request's events (and older publishers') carry none.
        authid: match headers.inner().get(AUTHID) {
            None => String::new(),
            Some(_) => text(AUTHID)?,
        },
        datacontenttype: properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str().to_string())
            .unwrap_or_else(|| "application/json".into()),
        data: body.to_vec(),
    };
    if event.id.is_empty() || event.event_type.is_empty() {
        return Err(NotAnEvent("empty id or type"));
    }
    Ok((seq, event))
}

/// A short string property; values longer than AMQP allows are cut (the full value is in the
/// headers).
fn short(s: &str) -> ShortString {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::from(&s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::envelope::tests::sample;

    #[test]
    fn an_event_round_trips_through_a_message() {
        let event = sample();
        let props = properties(7, &event);
        assert_eq!(
            props.kind().as_ref().map(|k| k.as_str()),
            Some("OrderPlaced")
        );
        assert_eq!(props.app_id().as_ref().map(|k| k.as_str()), Some("order"));
        assert_eq!(props.delivery_mode(), &Some(PERSISTENT));
        let (seq, back) = decode(&props, &event.data).expect("decodes");
        assert_eq!(seq, 7);
        assert_eq!(back, event);
        let mut by_alice = sample();
        by_alice.authid = "alice".into();
        let props = properties(8, &by_alice);
        let (_, back) = decode(&props, &by_alice.data).expect("decodes");
        assert_eq!(back.authid, "alice");
    }

    #[test]
    fn a_foreign_message_is_refused() {
        assert!(decode(&BasicProperties::default(), b"{}").is_err());
        let mut headers = FieldTable::default();
        headers.insert(ID.into(), AMQPValue::LongString("x".into()));
        let props = BasicProperties::default().with_headers(headers);
        assert!(decode(&props, b"{}").is_err());
    }
}
