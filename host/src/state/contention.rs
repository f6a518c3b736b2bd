//! The wait before running a unit of work again after its commit conflicted (what it read
//! changed first): exponential from 1 ms, capped at 50 ms, jittered, so writers of one hot
//! key spread out instead of colliding again at once. Used by every path that re-runs on a
//! conflict (the gateway's requests, event deliveries, the host's own bookkeeping).

use std::time::Duration;

use crate::jitter;

/// First wait.
const BASE: Duration = Duration::from_millis(1);
/// Longest wait.
const CAP: Duration = Duration::from_millis(50);

/// The wait before re-run number `rerun` (1 for the first): half fixed, half random, so two
/// writers never come back at the same instant (at most about 1.3 s over 31 re-runs).
pub(crate) fn contention_backoff(rerun: u32) -> Duration {
    jitter::exponential(BASE, CAP, rerun, jitter::unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_is_capped_and_spreads_writers() {
        let first: Vec<Duration> = (0..200).map(|_| contention_backoff(1)).collect();
        assert!(
            first.iter().all(|d| *d <= BASE && *d >= BASE / 2),
            "{first:?}"
        );
        let later: Vec<Duration> = (0..200).map(|_| contention_backoff(30)).collect();
        assert!(later.iter().all(|d| *d <= CAP && *d >= CAP / 2), "capped");
        let distinct: std::collections::HashSet<_> = later.iter().collect();
        assert!(
            distinct.len() > 100,
            "jittered: {} distinct",
            distinct.len()
        );
    }
}
