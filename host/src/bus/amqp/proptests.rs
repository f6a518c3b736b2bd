//! Property tests of events as AMQP messages: what the host sends must come back whole, and
//! whatever arrives from the broker (any client may publish to the exchange) must be read or
//! refused without panic.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use proptest::prelude::*;

use super::message::{SEQ_HEADER, decode, properties};
use crate::bus::envelope::Envelope;

/// An event as the host publishes it: a non-empty id, a valid event type, and any text
/// elsewhere (long and non-ASCII included); the content type fits a message property.
fn host_event() -> impl Strategy<Value = Envelope> {
    (
        (
            "\\PC{1,300}",
            "/contexts/[a-z0-9_-]{1,64}|\\PC{0,20}",
            "[A-Za-z0-9._-]{1,128}",
        ),
        (
            "\\PC{0,40}",
            "\\PC{0,300}",
            "[0-9a-f]{32}|\\PC{0,10}",
            "(00-[0-9a-f]{32}-[0-9a-f]{16}-0[01])?",
            "\\PC{0,60}",
        ),
        prop::collection::vec(any::<u8>(), 0..128),
        "\\PC{0,20}",
    )
        .prop_map(
            |(
                (id, source, event_type),
                (time, correlationid, traceid, traceparent, datacontenttype),
                data,
                authid,
            )| {
                Envelope {
                    id,
                    source,
                    event_type,
                    time,
                    correlationid,
                    traceid,
                    traceparent,
                    authid,
                    datacontenttype,
                    data,
                }
            },
        )
}

/// A header value of any kind a foreign client may send.
fn value() -> impl Strategy<Value = AMQPValue> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..12)
            .prop_map(|b| AMQPValue::LongString(LongString::from(b))),
        "\\PC{0,12}".prop_map(|s| AMQPValue::LongString(s.as_str().into())),
        "[a-z]{0,12}".prop_map(|s| AMQPValue::ShortString(s.as_str().into())),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<bool>().prop_map(AMQPValue::Boolean),
        Just(AMQPValue::Void),
    ]
}

/// Headers of a foreign message: the host's keys and others, with values of any kind.
fn headers() -> impl Strategy<Value = Option<FieldTable>> {
    let key = prop::sample::select(vec![
        "cloudEvents:specversion",
        "cloudEvents:id",
        "cloudEvents:source",
        "cloudEvents:type",
        "cloudEvents:time",
        "cloudEvents:correlationid",
        "cloudEvents:traceid",
        "cloudEvents:traceparent",
        SEQ_HEADER,
        "x-other",
    ]);
    prop::option::weighted(
        0.9,
        prop::collection::btree_map(key, value(), 0..10).prop_map(|m| {
            let mut t = FieldTable::default();
            for (k, v) in m {
                t.insert(ShortString::from(k), v);
            }
            t
        }),
    )
}

proptest! {
    /// An event the host sends comes back whole from its message, with its sequence
    /// number; the message's short properties hold at most 255 bytes, cut on a character
    /// boundary from the full values carried in the headers.
    #[test]
    fn host_events_round_trip_through_messages(e in host_event(), seq in 0..=i64::MAX as u64) {
        let props = properties(seq, &e);
        let id = props.message_id().as_ref().map(|s| s.as_str().to_string()).unwrap_or_default();
        prop_assert!(id.len() <= 255 && e.id.starts_with(&id));
        prop_assert!(id.len() == e.id.len() || id.len() + 4 > 255);
        let (back_seq, back) = decode(&props, &e.data).expect("decodes");
        prop_assert_eq!(back_seq, seq);
        prop_assert_eq!(back, e);
    }

    /// Any message read from a queue is an event with a non-empty id and type, or is
    /// refused; never a panic.
    #[test]
    fn foreign_messages_are_read_or_refused(
        headers in headers(),
        content_type in prop::option::of("\\PC{0,20}"),
        body in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut props = BasicProperties::default();
        if let Some(h) = headers {
            props = props.with_headers(h);
        }
        if let Some(c) = content_type {
            props = props.with_content_type(c.as_str().into());
        }
        if let Ok((_, e)) = decode(&props, &body) {
            prop_assert!(!e.id.is_empty() && !e.event_type.is_empty());
            prop_assert_eq!(e.data, body);
        }
    }
}
