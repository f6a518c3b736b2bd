//! Retries: which functions may be retried (the idempotency convention of the WIT contract),
//! exponential backoff with jitter, and a budget that keeps retries a bounded share of the
//! calls.
//!
//! # The convention
//!
//! Component types carry no doc comments or attributes, so the contract marks a function as
//! idempotent by its name. A function of an interface one context exports to others is
//! idempotent, and the host may run it more than once for one call, when its name starts with
//! one of [`IDEMPOTENT_PREFIXES`]:
//!
//! - `get-`, `list-`, `find-`, `query-`, `count-`, `check-`: reads, no effect at all;
//! - `ensure-`: an effect keyed by its arguments that is applied at most once (calling it
//!   again with the same arguments changes nothing and returns the first answer).
//!
//! Any other function (`authorize`, `create-...`, `cancel-...`) is called at most once per
//! call. Whatever is retried, each failed attempt is rolled back to the savepoint taken
//! before it, so a retry never adds to the effects of an earlier attempt.

use crate::sync::lock;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::policy::RetryPolicy;

/// Name prefixes of functions the host may retry.
pub(super) const IDEMPOTENT_PREFIXES: &[&str] = &[
    "get-", "list-", "find-", "query-", "count-", "check-", "ensure-",
];

/// Whether `func` (a WIT function name, kebab-case) is idempotent by the convention.
pub(crate) fn is_idempotent(func: &str) -> bool {
    IDEMPOTENT_PREFIXES
        .iter()
        .any(|p| func.starts_with(p) && func.len() > p.len())
}

/// The wait before retry number `retry` (1 for the first retry): exponential from the base,
/// capped, with equal jitter given by `unit` (see [`crate::jitter::exponential`]).
pub(super) fn backoff(p: &RetryPolicy, retry: u32, unit: f64) -> Duration {
    crate::jitter::exponential(p.base_backoff, p.max_backoff, retry, unit)
}

/// Tokens for retries: each call deposits `ratio`, time adds `min_per_sec`, a retry takes
/// one. So retries add at most `ratio` of the calls plus a small constant rate, whatever
/// happens to the callee.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    ratio: f64,
    min_per_sec: f64,
    cap: f64,
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    pub(crate) fn new(p: &RetryPolicy, now: Instant) -> Self {
        let cap = (p.budget_min_per_sec + 100.0 * p.budget_ratio).max(1.0);
        RetryBudget {
            ratio: p.budget_ratio,
            min_per_sec: p.budget_min_per_sec,
            cap,
            state: Mutex::new((p.budget_min_per_sec.min(cap), now)),
        }
    }

    fn refill(&self, s: &mut (f64, Instant), now: Instant) {
        let dt = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + dt * self.min_per_sec).min(self.cap);
        s.1 = now.max(s.1);
    }

    /// A first attempt was made.
    pub(crate) fn deposit(&self, now: Instant) {
        let mut s = lock(&self.state);
        self.refill(&mut s, now);
        s.0 = (s.0 + self.ratio).min(self.cap);
    }

    /// Take a token for one retry; `false` when the budget is spent.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        let mut s = lock(&self.state);
        self.refill(&mut s, now);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// Tokens left.
    pub(crate) fn balance(&self, now: Instant) -> f64 {
        let mut s = lock(&self.state);
        self.refill(&mut s, now);
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            budget_ratio: 0.25,
            budget_min_per_sec: 2.0,
        }
    }

    #[test]
    fn the_naming_convention() {
        for f in [
            "get-payment",
            "list-payments",
            "find-car",
            "ensure-refund",
            "count-x",
        ] {
            assert!(is_idempotent(f), "{f}");
        }
        for f in [
            "authorize",
            "get",
            "cancel-payment",
            "target-get-x",
            "getter",
        ] {
            assert!(!is_idempotent(f), "{f}");
        }
    }

    #[test]
    fn backoff_grows_exponentially_is_capped_and_jittered() {
        let p = policy();
        assert_eq!(backoff(&p, 1, 0.0), Duration::from_millis(5));
        assert_eq!(backoff(&p, 1, 1.0), Duration::from_millis(10));
        assert_eq!(backoff(&p, 2, 1.0), Duration::from_millis(20));
        assert_eq!(backoff(&p, 3, 0.5), Duration::from_millis(30));
        assert_eq!(backoff(&p, 9, 1.0), Duration::from_millis(50));
        let j: Vec<f64> = (0..100).map(|_| crate::jitter::unit()).collect();
        assert!(j.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(j.iter().any(|x| *x != j[0]));
    }

    #[test]
    fn the_budget_bounds_retries_to_a_share_of_calls_plus_a_trickle() {
        let p = policy();
        let t0 = Instant::now();
        let b = RetryBudget::new(&p, t0);
        // Starts with one second's worth of the minimum rate.
        assert!(b.withdraw(t0));
        assert!(b.withdraw(t0));
        assert!(!b.withdraw(t0));
        // 40 calls at 25 % allow 10 retries.
        for _ in 0..40 {
            b.deposit(t0);
        }
        let granted = (0..50).filter(|_| b.withdraw(t0)).count();
        assert_eq!(granted, 10);
        // Time alone refills at 2 per second.
        let t1 = t0 + Duration::from_millis(1500);
        assert!((b.balance(t1) - 3.0).abs() < 1e-9);
    }
}
