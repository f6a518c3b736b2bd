//! The storage report: what the database holds (the event log's extent and who holds it,
//! the inboxes, the dead letters, each context's keyspace), the file and the disk, the
//! retention in force and what pruning removed. `GET /admin/storage` answers it as JSON;
//! `/metrics` exposes the same figures as `ctxhost_storage_*` gauges.

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::Storage;
use super::pruner::Pruned;
use crate::bus::Consumed;
use crate::state::{DEAD_LETTERS, StateError, TableUsage};

/// The answer of `GET /admin/storage`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StorageReport {
    pub(crate) event_log: EventLogReport,
    pub(crate) inbox: BTreeMap<String, TableUsage>,
    pub(crate) dead_letters: Entries,
    pub(crate) contexts: BTreeMap<String, TableUsage>,
    pub(crate) file: FileReport,
    pub(crate) disk: DiskReport,
    pub(crate) retention: RetentionReport,
    pub(crate) pruned: Pruned,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventLogReport {
    pub(crate) entries: u64,
    /// Oldest event kept (`None`: the log is empty).
    pub(crate) oldest_seq: Option<u64>,
    /// Sequence number of the last event committed (kept or already removed).
    pub(crate) head_seq: u64,
    pub(crate) bytes: u64,
    /// How far every consumer has the log, and which consumer is there (`None` when the
    /// transport cannot tell now).
    pub(crate) consumed: Option<Consumed>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Entries {
    pub(crate) entries: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileReport {
    pub(crate) bytes: u64,
    /// Bytes of the file the host keeps in memory (the page cache, bounded by
    /// `db_cache_mb`): resident memory grows with it until the cache is full.
    pub(crate) cache_bytes: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DiskReport {
    pub(crate) free_bytes: Option<u64>,
    pub(crate) total_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RetentionReport {
    pub(crate) event: String,
    pub(crate) inbox: String,
    pub(crate) dead_letter: String,
    pub(crate) prune_interval: String,
    pub(crate) prune_batch: usize,
    pub(crate) db_cache_mb: usize,
}

impl Storage {
    /// The report as of now. Walks every table's pages for its size: for operators and
    /// scrapes, not for a hot path.
    pub(crate) fn report(&self) -> Result<StorageReport, StateError> {
        let db = self.bus.db();
        let usage = db.usage(&self.data_dir)?;
        let head_seq = *self.bus.committer().committed_events().borrow();
        let s = &self.settings;
        Ok(StorageReport {
            event_log: EventLogReport {
                entries: usage.event_log.entries,
                oldest_seq: usage.event_log.oldest_seq,
                head_seq: head_seq.max(usage.event_log.newest_seq.unwrap_or(0)),
                bytes: usage.event_log.bytes,
                consumed: self.transport.consumed_through().ok(),
            },
            inbox: usage.inboxes.clone(),
            dead_letters: Entries {
                entries: usage.host_entries(DEAD_LETTERS),
            },
            contexts: usage.contexts.clone(),
            file: FileReport {
                bytes: usage.file_bytes,
                cache_bytes: db.cache_used_bytes(),
            },
            disk: DiskReport {
                free_bytes: usage.disk_free_bytes,
                total_bytes: usage.disk_total_bytes,
            },
            retention: RetentionReport {
                event: s.event_retention.to_string(),
                inbox: s.inbox_retention.to_string(),
                dead_letter: s.dead_letter_retention.to_string(),
                prune_interval: super::format_duration(s.prune_interval),
                prune_batch: s.prune_batch,
                db_cache_mb: s.db_cache_bytes / (1024 * 1024),
            },
            pruned: self.stats.get(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ContextLabels {
    context: String,
}

fn gauge(v: u64) -> Gauge {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

impl StorageReport {
    /// Register the report's figures as gauges (prefix `storage_`) in `r`.
    pub(crate) fn register(&self, r: &mut Registry) {
        let e = &self.event_log;
        r.register(
            "storage_event_log_entries",
            "Events kept in the event log",
            gauge(e.entries),
        );
        r.register(
            "storage_event_log_head_seq",
            "Sequence number of the last event committed",
            gauge(e.head_seq),
        );
        if let Some(oldest) = e.oldest_seq {
            r.register(
                "storage_event_log_oldest_seq",
                "Sequence number of the oldest event kept",
                gauge(oldest),
            );
        }
        if let Some(c) = &e.consumed {
            r.register(
                "storage_event_log_consumed_seq",
                "Position every consumer of the event log has passed",
                gauge(c.seq),
            );
        }
        let inbox = Family::<ContextLabels, Gauge>::default();
        for (context, n) in &self.inbox {
            inbox
                .get_or_create(&ContextLabels {
                    context: context.clone(),
                })
                .set(i64::try_from(n.entries).unwrap_or(i64::MAX));
        }
        r.register(
            "storage_inbox_entries",
            "Entries of a context's inbox (ids of events it applied)",
            inbox,
        );
        let entries = Family::<ContextLabels, Gauge>::default();
        let bytes = Family::<ContextLabels, Gauge>::default();
        for (context, u) in &self.contexts {
            let labels = ContextLabels {
                context: context.clone(),
            };
            entries
                .get_or_create(&labels)
                .set(i64::try_from(u.entries).unwrap_or(i64::MAX));
            bytes
                .get_or_create(&labels)
                .set(i64::try_from(u.bytes).unwrap_or(i64::MAX));
        }
        r.register(
            "storage_context_entries",
            "Entries of a context's own keyspace",
            entries,
        );
        r.register(
            "storage_context_bytes",
            "Bytes a context's keyspace takes in the database file",
            bytes,
        );
        r.register(
            "storage_dead_letter_entries",
            "Dead letters kept",
            gauge(self.dead_letters.entries),
        );
        r.register(
            "storage_file_bytes",
            "Size of the database file",
            gauge(self.file.bytes),
        );
        r.register(
            "storage_cache_bytes",
            "Bytes of the database file kept in memory (page cache, bounded by db_cache_mb)",
            gauge(self.file.cache_bytes),
        );
        if let Some(free) = self.disk.free_bytes {
            r.register(
                "storage_disk_free_bytes",
                "Room left on the data directory's filesystem",
                gauge(free),
            );
        }
    }
}
