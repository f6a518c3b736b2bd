//! The host clock: milliseconds the host has been running over its whole life, kept in the
//! database. It stands still while no host runs, so an age measured on it (an inbox
//! entry's) counts only time in which a duplicate could have been delivered and dropped:
//! a host down for a week and started again does not find its inbox entries a week older.
//!
//! The clock is read at open and saved by retention's passes; after a crash it resumes from
//! the last save, a little behind, which only makes entries look younger (the safe side).

use std::sync::Arc;
use std::time::Instant;

use super::db::META;
use super::{StateError, Table, UnitOfWork};

/// Key of the clock in the meta table.
const KEY: &str = "host-clock-ms";

/// Milliseconds of host running time.
#[derive(Debug)]
pub(crate) struct HostClock {
    /// The clock's value when this process opened the database.
    base_ms: u64,
    opened: Instant,
}

impl HostClock {
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

    /// Buffer the clock's value now into `unit`, so a later start resumes from it.
    pub(crate) fn save(&self, unit: &mut UnitOfWork) {
        let table: Table = Arc::from(META);
        unit.put(&table, KEY, Some(self.now_ms().to_be_bytes().to_vec()));
    }

    /// The key the clock is saved under, for opening.
    pub(super) fn key() -> &'static str {
        KEY
    }
}

/// Read the saved clock of a database being opened.
pub(super) fn saved(txn: &redb::ReadTransaction) -> Result<Option<Vec<u8>>, StateError> {
    let t = match txn.open_table(super::db::kv(META)) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(StateError::storage(e)),
    };
    let v = t.get(HostClock::key()).map_err(StateError::storage)?;
    Ok(v.map(|g| g.value().to_vec()))
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
