//! Retrying a loop of the bus (an event worker, the relay, a consumer) after a failure of
//! state, instead of letting it end: capped exponential backoff, and one log line per
//! failure streak (its start and its end), not one per attempt.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::state::StateError;

/// The backoff and failure streak of one loop.
pub(crate) struct Backoff {
    /// What retries, for logs: `event worker order`, `relay`, ...
    task: String,
    first: Duration,
    max: Duration,
    next: Duration,
    /// When the streak began and how many failures it has had.
    streak: Option<(Instant, u32)>,
}

impl Backoff {
    pub(crate) fn new(task: impl Into<String>, first: Duration, max: Duration) -> Self {
        Backoff {
            task: task.into(),
            first,
            max,
            next: first,
            streak: None,
        }
    }

    /// Record a failure; the wait before the next attempt. Logs only the first failure of a
    /// streak (at warn for storage that is unavailable, which recovers by itself; else error).
    pub(crate) fn failed(&mut self, error: &StateError) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        match &mut self.streak {
            Some((_, failures)) => {
                *failures += 1;
                tracing::debug!(task = %self.task, error = %error, retry_in = ?wait, "still failing");
            }
            None => {
                self.streak = Some((Instant::now(), 1));
                if error.is_unavailable() {
                    tracing::warn!(task = %self.task, error = %error, "storage unavailable; retrying with backoff until it recovers");
                } else {
                    tracing::error!(task = %self.task, error = %error, "failed; retrying with backoff");
                }
            }
        }
        wait
    }

    /// Record a success: ends the streak (logged) and resets the backoff.
    pub(crate) fn succeeded(&mut self) {
        if let Some((since, failures)) = self.streak.take() {
            tracing::info!(task = %self.task, failures, after = ?since.elapsed(), "recovered");
        }
        self.next = self.first;
    }

    /// Record a failure and wait before the next attempt; false when `shutdown` came first.
    pub(crate) async fn wait(
        &mut self,
        error: &StateError,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let wait = self.failed(error);
        if *shutdown.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            changed = shutdown.changed() => changed.is_ok() && !*shutdown.borrow(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_the_cap_and_a_success_resets_it() {
        let mut b = Backoff::new("t", Duration::from_millis(10), Duration::from_millis(35));
        let e = StateError::CommitterGone;
        let waits: Vec<u128> = (0..4).map(|_| b.failed(&e).as_millis()).collect();
        assert_eq!(waits, [10, 20, 35, 35]);
        b.succeeded();
        assert_eq!(b.failed(&e), Duration::from_millis(10));
    }
}
