//! Health of one context version: the outcomes of its recent invocations. A version whose
//! invocations keep failing (traps, deadlines) is marked unhealthy and reported once, so the
//! host can roll it back.

use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// When a version counts as unhealthy.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    /// Outcomes remembered.
    pub window: usize,
    /// Fewest outcomes in the window before judging.
    pub min_calls: usize,
    /// Failure share (0..=1) at or above which the version is unhealthy.
    pub max_failure_rate: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            window: 20,
            min_calls: 10,
            max_failure_rate: 0.5,
        }
    }
}

/// Recent outcomes of one context version.
#[derive(Debug)]
pub struct Health {
    policy: HealthPolicy,
    window: Mutex<VecDeque<bool>>,
    unhealthy: AtomicBool,
    failures: AtomicU64,
}

impl Health {
    pub fn new(policy: HealthPolicy) -> Self {
        Health {
            policy,
            window: Mutex::new(VecDeque::with_capacity(policy.window)),
            unhealthy: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        }
    }

    /// Record one outcome; true exactly once, when the version becomes unhealthy.
    pub fn record(&self, failed: bool) -> bool {
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let mut w = lock(&self.window);
        if w.len() == self.policy.window {
            w.pop_front();
        }
        w.push_back(failed);
        let fails = w.iter().filter(|f| **f).count();
        let bad = w.len() >= self.policy.min_calls
            && fails as f64 >= self.policy.max_failure_rate * w.len() as f64;
        bad && !self.unhealthy.swap(true, Ordering::SeqCst)
    }

    pub fn is_unhealthy(&self) -> bool {
        self.unhealthy.load(Ordering::SeqCst)
    }

    /// Failed invocations since the version was loaded.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Failures and outcomes in the current window.
    pub fn window(&self) -> (usize, usize) {
        let w = lock(&self.window);
        (w.iter().filter(|f| **f).count(), w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_becomes_unhealthy_once_when_failures_dominate_the_window() {
        let h = Health::new(HealthPolicy {
            window: 10,
            min_calls: 4,
            max_failure_rate: 0.5,
        });
        assert!(!h.record(true));
        assert!(!h.record(true));
        assert!(!h.record(false), "too few calls to judge");
        assert!(h.record(true), "3 of 4 failed");
        assert!(!h.record(true), "reported once");
        assert!(h.is_unhealthy());
        assert_eq!(h.failures(), 4);
    }

    #[test]
    fn occasional_failures_keep_a_version_healthy() {
        let h = Health::new(HealthPolicy::default());
        for i in 0..100 {
            assert!(!h.record(i % 5 == 0));
        }
        assert!(!h.is_unhealthy());
    }
}
