//! Property tests of the event log's record encoding: records are read back after crashes
//! and from files, so decoding must take any bytes.

use proptest::prelude::*;

use super::envelope::Envelope;

pub(super) fn envelope() -> impl Strategy<Value = Envelope> {
    (
        ("\\PC{0,40}", "\\PC{0,40}", "\\PC{0,40}", "\\PC{0,40}"),
        ("\\PC{0,40}", "\\PC{0,40}", "\\PC{0,60}", "\\PC{0,40}"),
        prop::collection::vec(any::<u8>(), 0..256),
        "\\PC{0,20}",
    )
        .prop_map(
            |(
                (id, source, event_type, time),
                (correlationid, traceid, traceparent, datacontenttype),
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

proptest! {
    /// Decoding an encoded envelope gives it back, whatever its text and data.
    #[test]
    fn envelopes_round_trip(e in envelope()) {
        prop_assert_eq!(Envelope::decode(&e.encode()).expect("decodes"), e);
    }

    /// Any bytes decode or are refused without panic; what decodes is exactly the record
    /// its encoding writes (no trailing bytes are ignored).
    #[test]
    fn any_bytes_decode_to_their_own_record_or_are_refused(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            // Mostly well-formed: a version byte and small lengths.
            prop::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..64)
                .prop_map(|mut v| { if let Some(b) = v.first_mut() { *b = 1; } v }),
            prop::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..80)
                .prop_map(|mut v| { if let Some(b) = v.first_mut() { *b = 2; } v }),
        ],
    ) {
        if let Ok(e) = Envelope::decode(&bytes) {
            prop_assert_eq!(e.encode(), bytes);
        }
    }

    /// A record cut short, or with bytes added after it, is refused.
    #[test]
    fn damaged_records_are_refused(
        e in envelope(),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..8),
    ) {
        let bytes = e.encode();
        let cut = cut.index(bytes.len());
        prop_assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        let mut longer = bytes.clone();
        longer.extend(extra);
        prop_assert!(Envelope::decode(&longer).is_err());
    }
}

/// Found by the property above: bytes after a record were ignored.
#[test]
fn a_record_with_bytes_after_it_is_refused() {
    let mut bytes = super::envelope::tests::sample().encode();
    bytes.push(0);
    assert!(Envelope::decode(&bytes).is_err());
}
