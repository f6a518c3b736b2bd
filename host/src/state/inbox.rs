//! An inbox entry: the value kept under an applied event's id in `inbox/<context>`. It
//! holds the event's sequence number and when it was applied on the [host
//! clock](super::clock::HostClock), which retention ages entries by. Entries written before the
//! time was kept hold the sequence number alone; they count as applied when the host clock
//! started (0), so retention removes them once the host has run for the inbox's retention.

/// The stored bytes of an entry for the event `seq`, applied at host clock `applied_ms`.
pub(crate) fn encode(seq: u64, applied_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&applied_ms.to_be_bytes());
    v
}

/// The sequence number and host-clock time of application of a stored entry (time 0 for
/// an entry without one; `None` for bytes no host wrote).
pub(crate) fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let word = |b: &[u8]| b.try_into().ok().map(u64::from_be_bytes);
    match bytes.len() {
        8 => Some((word(bytes)?, 0)),
        16 => Some((word(&bytes[..8])?, word(&bytes[8..])?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn entries_round_trip_and_old_ones_count_as_applied_at_the_start() {
        assert_eq!(super::decode(&super::encode(7, 99)), Some((7, 99)));
        assert_eq!(super::decode(&42u64.to_be_bytes()), Some((42, 0)));
        assert_eq!(super::decode(b"abc"), None);
    }
}
