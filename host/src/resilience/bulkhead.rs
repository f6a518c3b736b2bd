//! Bulkhead: at most `max_concurrent` calls run into a context; up to `max_queue` more wait
//! (at most `max_wait`) for a slot; any further call is refused at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::policy::BulkheadPolicy;

/// Why a call got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// Every slot was taken and the wait queue was full.
    QueueFull,
    /// No slot freed up within the longest wait.
    WaitExpired,
}

/// The concurrency limit of calls into one context.
#[derive(Debug)]
pub(crate) struct Bulkhead {
    policy: BulkheadPolicy,
    slots: Arc<Semaphore>,
    waiting: AtomicU32,
    admitted: AtomicU64,
    queued: AtomicU64,
    refused_full: AtomicU64,
    refused_wait: AtomicU64,
}

/// A held slot; released when dropped.
#[derive(Debug)]
pub(crate) struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    pub(crate) fn new(policy: BulkheadPolicy) -> Self {
        Bulkhead {
            slots: Arc::new(Semaphore::new(policy.max_concurrent as usize)),
            policy,
            waiting: AtomicU32::new(0),
            admitted: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            refused_wait: AtomicU64::new(0),
        }
    }

    /// Take a slot: at once when one is free, after a bounded wait in the queue otherwise.
    pub(crate) async fn enter(&self) -> Result<Slot, Full> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            self.admitted.fetch_add(1, Ordering::Relaxed);
            return Ok(Slot(p));
        }
        let queued = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.policy.max_queue).then_some(n + 1)
            });
        if queued.is_err() {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(Full::QueueFull);
        }
        let _waiting = Waiting(&self.waiting);
        self.queued.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.policy.max_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => {
                self.admitted.fetch_add(1, Ordering::Relaxed);
                Ok(Slot(p))
            }
            _ => {
                self.refused_wait.fetch_add(1, Ordering::Relaxed);
                Err(Full::WaitExpired)
            }
        }
    }

    /// Calls running now.
    pub(crate) fn in_flight(&self) -> u32 {
        self.policy.max_concurrent - self.slots.available_permits() as u32
    }

    /// Calls waiting for a slot now.
    pub(crate) fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Acquire) as u64
    }

    pub(crate) fn snapshot(&self) -> Value {
        let p = &self.policy;
        json!({
            "inFlight": self.in_flight(),
            "waiting": self.waiting.load(Ordering::Acquire),
            "admitted": self.admitted.load(Ordering::Relaxed),
            "queued": self.queued.load(Ordering::Relaxed),
            "refusedQueueFull": self.refused_full.load(Ordering::Relaxed),
            "refusedWaitExpired": self.refused_wait.load(Ordering::Relaxed),
            "settings": {
                "maxConcurrent": p.max_concurrent,
                "maxQueue": p.max_queue,
                "maxWaitMs": p.max_wait.as_millis() as u64,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bulkhead(max_concurrent: u32, max_queue: u32) -> Arc<Bulkhead> {
        Arc::new(Bulkhead::new(BulkheadPolicy {
            max_concurrent,
            max_queue,
            max_wait: Duration::from_millis(200),
        }))
    }

    #[tokio::test]
    async fn refuses_beyond_slots_and_queue_and_serves_the_rest() {
        let b = bulkhead(2, 1);
        let s1 = b.enter().await.expect("slot 1");
        let _s2 = b.enter().await.expect("slot 2");
        assert_eq!(b.in_flight(), 2);
        // The third waits in the queue; the fourth finds the queue full.
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.enter().await.map(|_| ()) })
        };
        while b.snapshot()["waiting"] == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(b.enter().await.expect_err("queue full"), Full::QueueFull);
        drop(s1);
        assert_eq!(waiter.await.expect("joined"), Ok(()));
        let snap = b.snapshot();
        assert_eq!(snap["admitted"], 3);
        assert_eq!(snap["refusedQueueFull"], 1);
        assert_eq!(snap["waiting"], 0);
    }

    #[tokio::test]
    async fn a_queued_call_gives_up_after_the_longest_wait() {
        let b = bulkhead(1, 4);
        let _s = b.enter().await.expect("slot");
        let started = std::time::Instant::now();
        assert_eq!(b.enter().await.expect_err("no slot"), Full::WaitExpired);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        assert_eq!(b.snapshot()["waiting"], 0);
    }
}
