//! Exponential waits with jitter, shared by the retries of calls between contexts
//! (`resilience`) and the re-runs of a unit of work after a commit conflict (`state`).

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// The wait before attempt number `n` after the first (1 for the first retry): `base`
/// doubled per attempt, capped at `max`, with "equal jitter" (half fixed, half uniform in
/// `[0, 1)` given by `unit`) so concurrent waiters spread out but never come back at once.
pub(crate) fn exponential(base: Duration, max: Duration, n: u32, unit: f64) -> Duration {
    let exp = base.as_secs_f64() * 2f64.powi(n.saturating_sub(1).min(30) as i32);
    let cap = exp.min(max.as_secs_f64());
    Duration::from_secs_f64(cap / 2.0 + cap / 2.0 * unit.clamp(0.0, 1.0))
}

/// A uniform number in `[0, 1)`, good enough for jitter.
pub(crate) fn unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
