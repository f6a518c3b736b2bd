//! The pruner: a background task that removes, every `prune_interval`, what retention
//! allows. Events every consumer has and older than `event_retention`; inbox entries older
//! than `inbox_retention` on the host clock; dead letters older than
//! `dead_letter_retention`. Every removal is a unit of work of at most `prune_batch`
//! entries committed by the committer inside a group like any other, so it adds no fsync
//! of its own and never holds the writer for longer than one small group.
//!
//! Each inbox is scanned a bounded step per pass, resuming where the last pass stopped, so
//! a pass costs the same however large the inboxes are. A pass also saves the host clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use super::settings::StorageSettings;
use crate::bus::{BusCtx, Envelope, EventTransport, dead_letters};
use crate::state::{CommitOutcome, StateError, Table, UnitOfWork, inbox, inbox_table};

/// Inbox entries read per scan step (several transactions' worth of removals).
const SCAN_PAGES: usize = 8;
/// How often the pruner says what it removed, when it removed anything.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// How often the host clock is saved.
const CLOCK_EVERY: Duration = Duration::from_secs(5);

/// What the pruner has removed since the host started.
#[derive(Debug, Default)]
pub(crate) struct PruneStats {
    pub(crate) events: AtomicU64,
    pub(crate) inbox: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) passes: AtomicU64,
    /// Duration of the last pass, in microseconds.
    pub(crate) last_pass_us: AtomicU64,
}

/// [`PruneStats`] as a value, for the storage report.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Pruned {
    pub(crate) events: u64,
    pub(crate) inbox: u64,
    pub(crate) dead_letters: u64,
    pub(crate) passes: u64,
    pub(crate) last_pass_ms: f64,
}

impl PruneStats {
    pub(crate) fn get(&self) -> Pruned {
        Pruned {
            events: self.events.load(Ordering::Relaxed),
            inbox: self.inbox.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            passes: self.passes.load(Ordering::Relaxed),
            last_pass_ms: self.last_pass_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

/// Counts of one pass.
#[derive(Debug, Default, Clone, Copy)]
struct Pass {
    events: u64,
    inbox: u64,
    dead_letters: u64,
}

impl Pass {
    fn any(&self) -> bool {
        self.events + self.inbox + self.dead_letters > 0
    }
}

/// The background pruner of one host.
pub(crate) struct Pruner {
    pub(crate) bus: BusCtx,
    pub(crate) transport: Arc<dyn EventTransport>,
    pub(crate) settings: StorageSettings,
    pub(crate) stats: Arc<PruneStats>,
    /// Per inbox, the key the next scan step starts after.
    inbox_positions: HashMap<String, Option<String>>,
    clock_saved: Option<Instant>,
}

impl Pruner {
    pub(crate) fn new(
        bus: BusCtx,
        transport: Arc<dyn EventTransport>,
        settings: StorageSettings,
        stats: Arc<PruneStats>,
    ) -> Self {
        Pruner {
            bus,
            transport,
            settings,
            stats,
            inbox_positions: HashMap::new(),
            clock_saved: None,
        }
    }

    /// Prune every `prune_interval` until `shutdown`. A failing pass (storage full or
    /// failing, ...) is logged and tried again at the next interval.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut since_report = Pass::default();
        let mut reported = Instant::now();
        tracing::info!(
            event_retention = %self.settings.event_retention,
            inbox_retention = %self.settings.inbox_retention,
            dead_letter_retention = %self.settings.dead_letter_retention,
            interval = ?self.settings.prune_interval,
            batch = self.settings.prune_batch,
            "retention on"
        );
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.prune_interval) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            let started = Instant::now();
            match self.pass(&shutdown).await {
                Ok(pass) => {
                    let took = started.elapsed();
                    self.stats.passes.fetch_add(1, Ordering::Relaxed);
                    self.stats.last_pass_us.store(
                        u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                    tracing::debug!(
                        events = pass.events,
                        inbox = pass.inbox,
                        dead_letters = pass.dead_letters,
                        ?took,
                        "pruning pass"
                    );
                    since_report.events += pass.events;
                    since_report.inbox += pass.inbox;
                    since_report.dead_letters += pass.dead_letters;
                    if since_report.any() && reported.elapsed() >= REPORT_EVERY {
                        self.report(since_report, reported.elapsed());
                        since_report = Pass::default();
                        reported = Instant::now();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning pass failed; trying again at the next interval")
                }
            }
        }
    }

    /// Log what was removed over `over`, and what the log holds now.
    fn report(&self, pass: Pass, over: Duration) {
        let extent = self.bus.db().event_log_extent().ok().flatten();
        let held_by = self
            .transport
            .consumed_through()
            .ok()
            .and_then(|c| c.held_by);
        tracing::info!(
            events = pass.events,
            inbox_entries = pass.inbox,
            dead_letters = pass.dead_letters,
            over_secs = over.as_secs(),
            oldest_event = extent.map(|e| e.0),
            newest_event = extent.map(|e| e.1),
            held_by = held_by.as_deref().unwrap_or("nobody"),
            "pruned"
        );
    }

    /// One pass over every kind of entry.
    async fn pass(&mut self, shutdown: &watch::Receiver<bool>) -> Result<Pass, StateError> {
        let mut pass = Pass::default();
        if let Some(age) = self.settings.event_retention.duration() {
            pass.events = self.prune_events(age, shutdown).await?;
        }
        if let Some(age) = self.settings.inbox_retention.duration() {
            pass.inbox = self.prune_inboxes(age, shutdown).await?;
        }
        if let Some(age) = self.settings.dead_letter_retention.duration() {
            pass.dead_letters = self.prune_dead_letters(age, shutdown).await?;
        }
        if self.clock_saved.is_none_or(|t| t.elapsed() >= CLOCK_EVERY) {
            let mut unit = UnitOfWork::begin(self.bus.db())?;
            self.bus.db().save_clock(&mut unit);
            self.bus.committer().commit(unit).await?;
            self.clock_saved = Some(Instant::now());
        }
        Ok(pass)
    }

    /// Remove, a batch per transaction, the events every consumer has and older than `age`.
    async fn prune_events(
        &self,
        age: Duration,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<u64, StateError> {
        let mut removed = 0;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let consumed = match self.transport.consumed_through() {
                Ok(c) => c.seq,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot tell how far consumers are; keeping the event log");
                    break;
                }
            };
            let Some((oldest, _)) = self.bus.db().event_log_extent()? else {
                break;
            };
            if oldest > consumed {
                break;
            }
            let cutoff = SystemTime::now().checked_sub(age);
            let batch = self
                .bus
                .db()
                .events_after(oldest - 1, self.settings.prune_batch)?;
            let mut last = None;
            for (seq, bytes) in &batch {
                if *seq > consumed || !old_enough(bytes, age, cutoff) {
                    break;
                }
                last = Some(*seq);
            }
            let Some(last) = last else { break };
            let mut unit = UnitOfWork::begin(self.bus.db())?;
            unit.remove_events(oldest, last);
            self.bus.committer().commit(unit).await?;
            let n = last - oldest + 1;
            removed += n;
            self.stats.events.fetch_add(n, Ordering::Relaxed);
            crate::telemetry::metrics().pruned("events", n);
            if (n as usize) < self.settings.prune_batch {
                break;
            }
            // Let the units waiting behind this one through first.
            tokio::task::yield_now().await;
        }
        Ok(removed)
    }

    /// Remove the dead letters recorded longer than `age` ago, a batch per transaction.
    async fn prune_dead_letters(
        &self,
        age: Duration,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<u64, StateError> {
        let Some(cutoff) = SystemTime::now().checked_sub(age) else {
            return Ok(0);
        };
        let mut removed = 0;
        while !*shutdown.borrow() {
            let n =
                dead_letters::prune_expired(&self.bus, cutoff, self.settings.prune_batch).await?;
            removed += n as u64;
            self.stats
                .dead_letters
                .fetch_add(n as u64, Ordering::Relaxed);
            crate::telemetry::metrics().pruned("dead_letters", n as u64);
            if n < self.settings.prune_batch {
                break;
            }
        }
        Ok(removed)
    }

    /// Remove inbox entries older than `age` on the host clock: one bounded scan step per
    /// inbox and pass.
    async fn prune_inboxes(
        &mut self,
        age: Duration,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<u64, StateError> {
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let mut removed = 0;
        for context in self.bus.db().inbox_contexts()? {
            let table = inbox_table(&context);
            let mut after = self.inbox_positions.get(&context).cloned().flatten();
            for _ in 0..SCAN_PAGES {
                if *shutdown.borrow() {
                    return Ok(removed);
                }
                let page = self.bus.db().read_page(
                    &table,
                    "",
                    after.as_deref(),
                    self.settings.prune_batch,
                )?;
                let now = self.bus.db().clock().now_ms();
                let expired: Vec<&str> = page
                    .iter()
                    .filter(|(_, v)| {
                        inbox::decode(v)
                            .is_some_and(|(_, applied)| now.saturating_sub(applied) >= age_ms)
                    })
                    .map(|(k, _)| k.as_str())
                    .collect();
                if !expired.is_empty() {
                    remove_keys(&self.bus, &table, &expired).await?;
                    let n = expired.len() as u64;
                    removed += n;
                    self.stats.inbox.fetch_add(n, Ordering::Relaxed);
                    crate::telemetry::metrics().pruned("inbox", n);
                }
                let full = page.len() >= self.settings.prune_batch;
                after = if full {
                    page.last().map(|(k, _)| k.clone())
                } else {
                    None
                };
                if !full {
                    break;
                }
                tokio::task::yield_now().await;
            }
            self.inbox_positions.insert(context, after);
        }
        Ok(removed)
    }
}

/// Whether an encoded event is older than `age` (published before `cutoff`). An
/// unreadable one counts as old: no consumer can use it, and every consumer has passed it.
fn old_enough(bytes: &[u8], age: Duration, cutoff: Option<SystemTime>) -> bool {
    if age.is_zero() {
        return true;
    }
    let Some(cutoff) = cutoff else { return false };
    match Envelope::decode(bytes) {
        Ok(ev) => crate::time::parse_rfc3339(&ev.time).is_none_or(|t| t <= cutoff),
        Err(_) => true,
    }
}

/// Remove `keys` from `table` in one unit of work.
async fn remove_keys(bus: &BusCtx, table: &Table, keys: &[&str]) -> Result<(), StateError> {
    let mut unit = UnitOfWork::begin(bus.db())?;
    for k in keys {
        unit.put(table, k, None);
    }
    match bus.committer().commit(unit).await? {
        // Blind removals read nothing, so they cannot conflict.
        CommitOutcome::Committed { .. } | CommitOutcome::Conflict => Ok(()),
    }
}
