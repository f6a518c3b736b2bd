//! Idle instances of one context version, kept for reuse when its `instance_reuse` lets an
//! instance serve more than one invocation. An instance comes back here only after a clean
//! invocation (no trap, no deadline, every host resource dropped) and while it has uses
//! left; a replaced version's pool is closed, so its instances go with its last invocation.

use crate::sync::lock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Store;
use wasmtime::component::Instance;

use super::store_data::Invocation;

/// Most idle instances one context version keeps. Only invocations running at the same
/// moment need an instance each, and each idle one holds a pool slot and its memory.
pub(crate) const MAX_IDLE: usize = 16;

/// An instantiated component in its own `Store`, between invocations or inside one.
pub(crate) struct Warm {
    pub(crate) store: Store<Invocation>,
    pub(crate) instance: Instance,
    /// Invocations this instance has served.
    pub(crate) uses: u32,
}

/// The idle instances of one context version (`None` once the version is retired).
pub(crate) struct WarmPool<T = Warm> {
    idle: Mutex<Option<Vec<T>>>,
    /// Instances created for this version so far.
    created: AtomicU64,
}

impl<T> Default for WarmPool<T> {
    fn default() -> Self {
        WarmPool {
            idle: Mutex::new(Some(Vec::new())),
            created: AtomicU64::new(0),
        }
    }
}

impl<T> WarmPool<T> {
    fn idle(&self) -> std::sync::MutexGuard<'_, Option<Vec<T>>> {
        // Only pushes and pops run under the lock: a poisoned pool is still consistent.
        lock(&self.idle)
    }

    /// An idle instance, most recently used first (its pages are the likeliest resident).
    pub(crate) fn take(&self) -> Option<T> {
        self.idle().as_mut()?.pop()
    }

    /// Keep `warm` for a later invocation; it is dropped when the pool is full or retired.
    pub(crate) fn put(&self, warm: T) {
        let mut idle = self.idle();
        if let Some(v) = idle.as_mut().filter(|v| v.len() < MAX_IDLE) {
            v.push(warm);
            return;
        }
        // Dropping a store frees its pool slot: do it after the lock is released.
        drop(idle);
        drop(warm);
    }

    /// Stop keeping instances and drop the idle ones. Their stores refer to the version
    /// that owns this pool, so without this a replaced version would never be freed.
    pub(crate) fn retire(&self) {
        let idle = self.idle().take();
        drop(idle);
    }

    /// Count an instance created for this version.
    pub(crate) fn created_one(&self) {
        self.created.fetch_add(1, Ordering::Relaxed);
    }

    /// Instances created for this version so far (fresh or kept).
    pub(crate) fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// How many instances are idle now.
    pub(crate) fn len(&self) -> usize {
        self.idle().as_ref().map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_IDLE, WarmPool};

    #[test]
    fn keeps_at_most_max_idle_and_hands_back_the_most_recent_first() {
        let pool = WarmPool::<usize>::default();
        for n in 0..MAX_IDLE + 3 {
            pool.put(n);
        }
        assert_eq!(pool.len(), MAX_IDLE);
        assert_eq!(pool.take(), Some(MAX_IDLE - 1));
        assert_eq!(pool.len(), MAX_IDLE - 1);
    }

    #[test]
    fn a_retired_pool_drops_what_it_held_and_what_comes_back() {
        let held = std::sync::Arc::new(());
        let pool = WarmPool::default();
        pool.put(held.clone());
        pool.put(held.clone());
        assert_eq!(std::sync::Arc::strong_count(&held), 3);
        pool.retire();
        assert_eq!(std::sync::Arc::strong_count(&held), 1);
        pool.put(held.clone());
        assert_eq!(std::sync::Arc::strong_count(&held), 1);
        assert_eq!((pool.len(), pool.take()), (0, None));
    }
}
