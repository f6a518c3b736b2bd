//! W3C trace context: the `traceparent` header (`00-<trace id>-<parent span id>-<flags>`),
//! parsed from requests and events and written into answers, events and messages.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The flag of a sampled trace (bit 0 of the trace flags).
const SAMPLED: u8 = 1;

/// One `traceparent` value: the trace, the span it was sent from, and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    /// The 128-bit trace id (never 0).
    pub(crate) trace_id: u128,
    /// The 64-bit id of the sending span (never 0).
    pub(crate) span_id: u64,
    /// Trace flags; bit 0: the sender recorded the trace.
    pub(crate) flags: u8,
}

impl TraceParent {
    /// Parse a `traceparent` value. Version `00` must have exactly four fields; a later
    /// version may append fields (the W3C rule); `ff`, all-zero ids and non-hex digits are
    /// refused.
    pub(crate) fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(version, 2) || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A context for a trace the host does not record: `trace_id` (32 hex digits; else a
    /// new one), a new span id, flagged sampled so a recording receiver keeps it.
    pub(crate) fn unrecorded(trace_id: &str) -> TraceParent {
        let trace_id = u128::from_str_radix(trace_id, 16)
            .ok()
            .filter(|t| *t != 0 && trace_id.len() == 32)
            .unwrap_or_else(new_trace_id);
        TraceParent {
            trace_id,
            span_id: new_span_id(),
            flags: SAMPLED,
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub(crate) fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// splitmix64 of a per-process counter from a random start: distinct, never repeating
/// within the process, without a system call per id.
fn next_random() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().1);
    let mut z = start.wrapping_add(
        NEXT.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A new span id (never 0).
pub(crate) fn new_span_id() -> u64 {
    next_random().max(1)
}

/// A new trace id (never 0).
fn new_trace_id() -> u128 {
    (u128::from(next_random()) << 64) | u128::from(next_random().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let text = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let tp = TraceParent::parse(text).expect("parses");
        assert_eq!(tp.trace_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(tp.span_id, 0xb7ad_6b71_6920_3331);
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_string(), text);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        assert!(
            TraceParent::parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x")
                .is_some(),
            "a later version may add fields"
        );
    }

    #[test]
    fn unrecorded_contexts_keep_the_trace_and_get_new_spans() {
        let a = TraceParent::unrecorded("0af7651916cd43dd8448eb211c80319c");
        let b = TraceParent::unrecorded("0af7651916cd43dd8448eb211c80319c");
        assert_eq!(a.trace_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_ne!(a.span_id, b.span_id);
        assert_ne!(TraceParent::unrecorded("nonsense").trace_id, 0);
    }
}
