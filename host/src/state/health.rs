//! The health of storage, as the committer sees it: healthy, or failing since when and why,
//! whether the database is open, and whether the committer thread still runs. Read by the
//! probes (`/readyz`, `/healthz`) and by callers that must not mistake a storage outage for
//! a failure of their own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::{StateError, StorageFault, chain};
use crate::sync::lock;

/// How long storage may stay unrecoverable before the host reports itself not alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// `/healthz` fails once reopening the database has failed for this long without a
    /// success (`None`: never). A full disk whose database opens does not count: restarting
    /// would not free space.
    pub unhealthy_after: Option<Duration>,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            unhealthy_after: Some(Duration::from_secs(300)),
        }
    }
}

const HEALTHY: u8 = 0;
const FULL: u8 = 1;
const FAILING: u8 = 2;

/// The current failure streak.
#[derive(Default)]
struct Streak {
    since: Option<Instant>,
    /// Since when reopening the database has failed (the database is closed).
    closed_since: Option<Instant>,
    /// The last error, with its chain, for operators.
    last_error: String,
    attempts: u64,
}

/// Shared health of storage.
pub(crate) struct StorageHealth {
    /// `HEALTHY`, `FULL` or `FAILING`: read on error paths, no lock.
    fault: AtomicU8,
    streak: Mutex<Streak>,
    /// Set while the committer thread runs.
    writer_alive: AtomicBool,
    /// Recoveries since start.
    recoveries: AtomicU64,
    policy: RecoveryPolicy,
}

/// What the probes show of storage.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// `ok`, `full` or `failing`.
    pub state: &'static str,
    /// Changes are accepted.
    pub ready: bool,
    /// The host can still recover by itself (see [`RecoveryPolicy`]).
    pub live: bool,
    /// A non-secret reason when not ready or not live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The last storage error with its causes (for operators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_for_ms: Option<u64>,
    /// How long reopening the database has been failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_for_ms: Option<u64>,
    /// Attempts to recover in the current streak.
    pub attempts: u64,
    /// Recoveries since start.
    pub recoveries: u64,
}

impl StorageHealth {
    pub(crate) fn new(policy: RecoveryPolicy) -> Self {
        StorageHealth {
            fault: AtomicU8::new(HEALTHY),
            streak: Mutex::new(Streak::default()),
            writer_alive: AtomicBool::new(false),
            recoveries: AtomicU64::new(0),
            policy,
        }
    }

    /// The current fault, if any.
    pub(crate) fn fault(&self) -> Option<StorageFault> {
        match self.fault.load(Ordering::Acquire) {
            FULL => Some(StorageFault::Full),
            FAILING => Some(StorageFault::Failing),
            _ => None,
        }
    }

    /// The error for a caller while storage is failing (or closed for reopening).
    pub(crate) fn unavailable(&self) -> StateError {
        StateError::Unavailable {
            fault: self.fault().unwrap_or(StorageFault::Failing),
            source: None,
        }
    }

    /// Record a failure; `closed` when the database could not be opened. A failure that only
    /// follows an earlier one (`Failing` while `Full`) keeps the first fault. True when this
    /// begins a streak.
    pub(super) fn failed(&self, error: &StateError, closed: bool) -> bool {
        let fault = error.fault().unwrap_or(StorageFault::Failing);
        let mut streak = lock(&self.streak);
        let began = streak.since.is_none();
        let now = Instant::now();
        streak.since.get_or_insert(now);
        if closed {
            streak.closed_since.get_or_insert(now);
        } else {
            streak.closed_since = None;
        }
        streak.last_error = chain(error);
        streak.attempts += u64::from(!began);
        let keep_full = fault == StorageFault::Failing && self.fault() == Some(StorageFault::Full);
        if !keep_full {
            let code = match fault {
                StorageFault::Full => FULL,
                StorageFault::Failing => FAILING,
            };
            self.fault.store(code, Ordering::Release);
        }
        began
    }

    /// Storage takes changes again; how long the streak lasted.
    pub(super) fn recovered(&self) -> Option<Duration> {
        let mut streak = lock(&self.streak);
        self.fault.store(HEALTHY, Ordering::Release);
        let lasted = streak.since.map(|s| s.elapsed());
        *streak = Streak::default();
        if lasted.is_some() {
            self.recoveries.fetch_add(1, Ordering::Relaxed);
        }
        lasted
    }

    pub(super) fn writer_started(&self) {
        self.writer_alive.store(true, Ordering::Release);
    }

    pub(super) fn writer_stopped(&self) {
        self.writer_alive.store(false, Ordering::Release);
    }

    /// The state of storage for the probes.
    pub(crate) fn status(&self) -> StorageStatus {
        let streak = lock(&self.streak);
        let fault = self.fault();
        let writer = self.writer_alive.load(Ordering::Acquire);
        let closed_for = streak.closed_since.map(|s| s.elapsed());
        let stuck = match (closed_for, self.policy.unhealthy_after) {
            (Some(closed), Some(limit)) => closed >= limit,
            _ => false,
        };
        let live = writer && !stuck;
        let reason = if !writer {
            Some("the host's storage writer has stopped; restart the host")
        } else if stuck {
            Some("the host cannot reopen its database; restart the host")
        } else {
            fault.map(StorageFault::reason)
        };
        StorageStatus {
            state: fault.map_or("ok", StorageFault::as_str),
            ready: fault.is_none() && writer,
            live,
            reason,
            last_error: fault.map(|_| streak.last_error.clone()),
            failing_for_ms: streak.since.map(|s| millis(s.elapsed())),
            closed_for_ms: closed_for.map(millis),
            attempts: streak.attempts,
            recoveries: self.recoveries.load(Ordering::Relaxed),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
