//! The event envelope: CloudEvents 1.0 attributes plus the payload, and its compact binary
//! encoding in the event log (length-prefixed fields behind a version byte).
//!
//! Format 1 has no `traceparent`; format 2 adds it after `traceid`; format 3 adds `authid`
//! (the subject of the request that caused the event) after it. Each event is written in the
//! oldest format that holds it (3 when it has a subject, else 2 when it has a
//! `traceparent`, else 1), so records of every format read back byte for byte, and events
//! stored before a format existed still decode.

use serde::{Deserialize, Serialize};

/// CloudEvents `specversion` of every event.
pub(crate) const SPEC_VERSION: &str = "1.0";
const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;
const FORMAT_V3: u8 = 3;

/// One event, as stored in the log and delivered to subscribers. Its JSON form (without
/// `data`) is how dead letters keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct Envelope {
    pub id: String,
    /// `/contexts/<publisher>`.
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339.
    pub time: String,
    pub correlationid: String,
    /// W3C trace id (32 hex digits) of the request that caused the event.
    pub traceid: String,
    /// W3C `traceparent` of the span that published it (the CloudEvents distributed
    /// tracing extension); empty in events stored before the host wrote it.
    #[serde(default)]
    pub traceparent: String,
    /// The subject (`sub`) of the principal whose request caused the event (the CloudEvents
    /// auth context extension's `authid`); empty for an anonymous request and in events
    /// stored before the host wrote it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub authid: String,
    pub datacontenttype: String,
    #[serde(skip)]
    pub data: Vec<u8>,
}

/// The encoded bytes could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("malformed event record: {0}")]
pub struct DecodeError(&'static str);

impl Envelope {
    /// The publishing context's name.
    pub fn publisher(&self) -> &str {
        self.source
            .strip_prefix("/contexts/")
            .unwrap_or(&self.source)
    }

    /// Encode for the event log.
    pub fn encode(&self) -> Vec<u8> {
        let version = if !self.authid.is_empty() {
            FORMAT_V3
        } else if !self.traceparent.is_empty() {
            FORMAT_V2
        } else {
            FORMAT_V1
        };
        let mut strings = vec![
            &self.id,
            &self.source,
            &self.event_type,
            &self.time,
            &self.correlationid,
            &self.traceid,
        ];
        if version >= FORMAT_V2 {
            strings.push(&self.traceparent);
        }
        if version >= FORMAT_V3 {
            strings.push(&self.authid);
        }
        strings.push(&self.datacontenttype);
        let len = 1 + strings.iter().map(|s| 4 + s.len()).sum::<usize>() + 4 + self.data.len();
        let mut out = Vec::with_capacity(len);
        out.push(version);
        for s in strings {
            put(&mut out, s.as_bytes());
        }
        put(&mut out, &self.data);
        out
    }

    /// Decode a record written by [`Envelope::encode`]; anything else is refused.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError("empty"))?;
        if !(FORMAT_V1..=FORMAT_V3).contains(&version) {
            return Err(DecodeError("unknown format version"));
        }
        bytes = rest;
        let mut s = || -> Result<String, DecodeError> {
            let raw = take(&mut bytes)?;
            String::from_utf8(raw.to_vec()).map_err(|_| DecodeError("attribute is not UTF-8"))
        };
        let id = s()?;
        let source = s()?;
        let event_type = s()?;
        let time = s()?;
        let correlationid = s()?;
        let traceid = s()?;
        let traceparent = if version >= FORMAT_V2 {
            let t = s()?;
            // Format 2 is written only for an event with one.
            if t.is_empty() && version == FORMAT_V2 {
                return Err(DecodeError("empty traceparent in format 2"));
            }
            t
        } else {
            String::new()
        };
        let authid = if version >= FORMAT_V3 {
            let a = s()?;
            // Format 3 is written only for an event with one.
            if a.is_empty() {
                return Err(DecodeError("empty authid in format 3"));
            }
            a
        } else {
            String::new()
        };
        let datacontenttype = s()?;
        let data = take(&mut bytes)?.to_vec();
        // A record is exactly what `encode` wrote: more bytes mean a damaged record.
        if !bytes.is_empty() {
            return Err(DecodeError("bytes after the record"));
        }
        Ok(Envelope {
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
        })
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    // Sizes are bounded by the host's limits far below 4 GiB.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    if bytes.len() < 4 {
        return Err(DecodeError("truncated length"));
    }
    let (len, rest) = bytes.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if rest.len() < len {
        return Err(DecodeError("truncated field"));
    }
    let (field, rest) = rest.split_at(len);
    *bytes = rest;
    Ok(field)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An event for the tests of the bus.
    pub(crate) fn sample() -> Envelope {
        Envelope {
            id: "e-1".into(),
            source: "/contexts/order".into(),
            event_type: "OrderPlaced".into(),
            time: "2026-01-01T00:00:00Z".into(),
            correlationid: "42".into(),
            traceid: "0af7651916cd43dd8448eb211c80319c".into(),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            authid: String::new(),
            datacontenttype: "application/json".into(),
            data: br#"{"orderId":42}"#.to_vec(),
        }
    }

    #[test]
    fn envelope_round_trips_through_its_encoding() {
        let e = sample();
        assert_eq!(Envelope::decode(&e.encode()).expect("decodes"), e);
        assert_eq!(e.publisher(), "order");
    }

    #[test]
    fn events_stored_without_a_traceparent_still_decode() {
        // A record of format 1, as hosts wrote before the traceparent.
        let mut old = vec![1u8];
        for field in [
            "e-1",
            "/contexts/order",
            "OrderPlaced",
            "2026-01-01T00:00:00Z",
            "42",
            "0af7651916cd43dd8448eb211c80319c",
            "application/json",
            "{}",
        ] {
            put(&mut old, field.as_bytes());
        }
        let e = Envelope::decode(&old).expect("format 1 decodes");
        assert_eq!(e.traceparent, "");
        assert_eq!(e.traceid, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(e.data, b"{}");
        assert_eq!(e.encode(), old, "written back in format 1");
        let with = sample();
        assert_eq!(with.encode()[0], 2);
        assert_eq!(Envelope::decode(&with.encode()).expect("format 2"), with);
    }

    #[test]
    fn events_with_a_subject_are_written_in_format_3() {
        let mut with = sample();
        with.authid = "alice".into();
        let bytes = with.encode();
        assert_eq!(bytes[0], 3);
        assert_eq!(Envelope::decode(&bytes).expect("format 3"), with);
        // A subject without a traceparent still round-trips.
        with.traceparent.clear();
        assert_eq!(Envelope::decode(&with.encode()).expect("format 3"), with);
        // Format 3 is written only with a subject: an empty one is a damaged record.
        let mut empty = vec![3u8];
        for field in ["e", "/contexts/o", "T", "t", "c", "x", "", "", "a", "{}"] {
            put(&mut empty, field.as_bytes());
        }
        assert!(Envelope::decode(&empty).is_err());
    }

    #[test]
    fn envelope_decode_refuses_truncated_records() {
        let bytes = sample().encode();
        for cut in [0, 1, 5, bytes.len() - 1] {
            assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(Envelope::decode(&wrong).is_err());
    }
}
