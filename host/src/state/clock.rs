//! The host clock: milliseconds the host has been running over its whole life, kept in the
//! database. It stands still while no host runs, so an age measured on it (an inbox
//! entry's) counts only time in which a duplicate could have been delivered and dropped:
//! a host down for a week and started again does not find its inbox entries a week older.
//!
//! The database reads the clock at open and retention's passes save it; after a crash it resumes from
//! the last save, a little behind, which only makes entries look younger (the safe side).

use std::time::Instant;

/// Milliseconds of host running time.
#[derive(Debug)]
pub(crate) struct HostClock {
    /// The clock's value when this process opened the database.
    base_ms: u64,
    opened: Instant,
}

impl HostClock {
    /// The key the clock is saved under in the meta table.
    pub(super) const KEY: &'static str = "host-clock-ms";

    /// A clock resuming from a saved value (`None`: a new database, or one from before the
    /// clock existed, whose clock starts now).
    pub(super) fn resume(saved: Option<&[u8]>) -> Self {
        let base_ms = saved
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        HostClock {
            base_ms,
            opened: Instant::now(),
        }
    }

    /// The clock's value now.
    pub(crate) fn now_ms(&self) -> u64 {
        let ran = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(ran)
    }
}

#[cfg(test)]
mod tests {
    use super::HostClock;

    #[test]
    fn the_clock_resumes_from_its_saved_value_and_runs() {
        let c = HostClock::resume(Some(&5_000u64.to_be_bytes()));
        let a = c.now_ms();
        assert!(a >= 5_000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(c.now_ms() >= a + 20);
        assert!(HostClock::resume(None).now_ms() < 1_000);
        assert!(HostClock::resume(Some(b"junk")).now_ms() < 1_000);
    }
}
