//! The host's one way of taking a `std::sync::Mutex` or `RwLock`.
//!
//! Poison policy: a poisoned mutex is taken over, never propagated. Every mutex of the host
//! guards data that host code changes in whole operations (a map insert, a counter, a unit
//! of work between two writes), and guest code never runs while one is held, so a panic in a
//! holder leaves the data as it was before or after one operation. Refusing every later
//! request for that would turn one bug into an outage.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock `m`, taking it over when a panicking holder poisoned it (see the module docs).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Read `l`, under the same poison policy as [`lock`].
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Write `l`, under the same poison policy as [`lock`].
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The value of a mutex no one else holds, under the same poison policy as [`lock`].
pub(crate) fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_poisoned_mutex_is_taken_over_with_its_data() {
        let m = Arc::new(Mutex::new(41));
        let held = m.clone();
        let panicked = std::thread::spawn(move || {
            let mut g = held.lock().unwrap_or_else(|p| p.into_inner());
            *g += 1;
            panic!("holder fails after a whole operation");
        })
        .join();
        assert!(panicked.is_err());
        assert!(m.is_poisoned());
        assert_eq!(*super::lock(&m), 42);
    }
}
