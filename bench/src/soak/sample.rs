//! One sample of a soak run: the data directory's size, the database's entries per keyspace
//! (`GET /admin/storage`), the host's resident memory and the orders so far; and the CSV of
//! a run's samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// What the host reported on `GET /admin/storage`, field by field; a field the answer lacks
/// stays `None` (or empty), so a partial answer still yields what it has.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Storage {
    /// Events held in the event log (`eventLog.entries`).
    pub event_log: Option<u64>,
    /// Sequence of the oldest event held (`eventLog.oldestSeq`; none when the log is empty).
    pub oldest_seq: Option<u64>,
    /// Sequence of the newest event published (`eventLog.headSeq`).
    pub head_seq: Option<u64>,
    /// Entries of each context's inbox (`inbox.<context>.entries`).
    pub inboxes: BTreeMap<String, u64>,
    /// Dead letters held (`deadLetters.entries`).
    pub dead_letters: Option<u64>,
    /// Entries and bytes of each context's own state (`contexts.<name>`).
    pub contexts: BTreeMap<String, (Option<u64>, Option<u64>)>,
    /// Size of the database file as the host sees it (`file.bytes`).
    pub file_bytes: Option<u64>,
    /// Bytes of the file the host keeps in memory, its page cache (`file.cacheBytes`).
    pub cache_bytes: Option<u64>,
    /// Free space of the disk under the data directory (`disk.freeBytes`).
    pub disk_free: Option<u64>,
}

impl Storage {
    /// Reads the answer of `GET /admin/storage`; `None` when it is not an object with an
    /// `eventLog` or an `inbox` (not the storage report).
    pub(crate) fn parse(v: &serde_json::Value) -> Option<Self> {
        let log = v.get("eventLog");
        let inbox = v.get("inbox").and_then(|i| i.as_object());
        if log.is_none() && inbox.is_none() {
            return None;
        }
        let entries = |v: &serde_json::Value| v.get("entries").and_then(|e| e.as_u64());
        Some(Storage {
            event_log: log.and_then(entries),
            oldest_seq: log
                .and_then(|l| l.get("oldestSeq"))
                .and_then(|s| s.as_u64()),
            head_seq: log.and_then(|l| l.get("headSeq")).and_then(|s| s.as_u64()),
            inboxes: inbox
                .into_iter()
                .flatten()
                .filter_map(|(name, i)| Some((name.clone(), entries(i)?)))
                .collect(),
            dead_letters: v.get("deadLetters").and_then(entries),
            contexts: v
                .get("contexts")
                .and_then(|c| c.as_object())
                .into_iter()
                .flatten()
                .map(|(name, c)| {
                    let bytes = c.get("bytes").and_then(|b| b.as_u64());
                    (name.clone(), (entries(c), bytes))
                })
                .collect(),
            file_bytes: v
                .get("file")
                .and_then(|f| f.get("bytes"))
                .and_then(|b| b.as_u64()),
            cache_bytes: v
                .get("file")
                .and_then(|f| f.get("cacheBytes"))
                .and_then(|b| b.as_u64()),
            disk_free: v
                .get("disk")
                .and_then(|d| d.get("freeBytes"))
                .and_then(|b| b.as_u64()),
        })
    }

    /// Entries of every inbox together.
    pub(crate) fn inbox_total(&self) -> Option<u64> {
        (!self.inboxes.is_empty()).then(|| self.inboxes.values().sum())
    }

    /// Entries of every context's state together.
    pub(crate) fn context_entries(&self) -> Option<u64> {
        sum_some(self.contexts.values().map(|(entries, _)| *entries))
    }

    /// Bytes of every context's state together.
    pub(crate) fn context_bytes(&self) -> Option<u64> {
        sum_some(self.contexts.values().map(|(_, bytes)| *bytes))
    }
}

/// The sum, or `None` when there is nothing to add up.
fn sum_some(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values
        .flatten()
        .fold(None, |acc, v| Some(acc.unwrap_or(0) + v))
}

/// One sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Sample {
    /// Seconds since the load started.
    pub t_s: f64,
    /// Sum of the sizes of the files under the data directory (as the file system reports
    /// them: redb grows its file ahead of use).
    pub data_bytes: u64,
    /// Resident memory of the host, KiB (`VmRSS`).
    pub rss_kib: Option<u64>,
    /// Orders created so far (201 on `POST /orders`).
    pub orders: u64,
    /// Orders settled so far (rented, rejected, or cancelled with the payment cancelled).
    pub settled: u64,
    /// The host's storage report, when it gave one.
    pub storage: Option<Storage>,
}

impl Sample {
    /// Event-log entries, when known.
    pub(crate) fn event_log(&self) -> Option<u64> {
        self.storage.as_ref().and_then(|s| s.event_log)
    }

    /// Entries of every inbox together, when known.
    pub(crate) fn inboxes(&self) -> Option<u64> {
        self.storage.as_ref().and_then(Storage::inbox_total)
    }

    /// Entries of every context's state together, when known.
    pub(crate) fn contexts(&self) -> Option<u64> {
        self.storage.as_ref().and_then(Storage::context_entries)
    }

    /// Bytes of every context's state together, when known.
    pub(crate) fn context_bytes(&self) -> Option<u64> {
        self.storage.as_ref().and_then(Storage::context_bytes)
    }

    /// Dead letters, when known.
    pub(crate) fn dead_letters(&self) -> Option<u64> {
        self.storage.as_ref().and_then(|s| s.dead_letters)
    }
}

/// Sum of the sizes of the regular files under `dir`, recursively; 0 when it does not exist
/// yet. Files that vanish during the walk (a compaction's temporary file) are skipped.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Fixed columns of the CSV, before the ones named after contexts.
const FIXED_COLUMNS: [&str; 15] = [
    "t_s",
    "data_dir_bytes",
    "rss_kib",
    "orders_created",
    "orders_settled",
    "event_log_entries",
    "event_log_oldest_seq",
    "event_log_head_seq",
    "inbox_entries",
    "dead_letter_entries",
    "context_entries",
    "context_bytes",
    "db_file_bytes",
    "disk_free_bytes",
    "db_cache_bytes",
];

/// The samples as CSV: one header line, one line per sample; the fixed columns, then
/// `inbox.<context>`, `context.<name>.entries` and `context.<name>.bytes` for every name any
/// sample reported. An unknown value is an empty cell.
pub(crate) fn csv(samples: &[Sample]) -> String {
    let mut inboxes = std::collections::BTreeSet::new();
    let mut contexts = std::collections::BTreeSet::new();
    for s in samples.iter().filter_map(|s| s.storage.as_ref()) {
        inboxes.extend(s.inboxes.keys().cloned());
        contexts.extend(s.contexts.keys().cloned());
    }
    let mut out = FIXED_COLUMNS.join(",");
    for name in &inboxes {
        let _ = write!(out, ",inbox.{}", csv_field(name));
    }
    for name in &contexts {
        let name = csv_field(name);
        let _ = write!(out, ",context.{name}.entries,context.{name}.bytes");
    }
    out.push('\n');
    let cell = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for s in samples {
        let st = s.storage.as_ref();
        let cells = [
            format!("{:.1}", s.t_s),
            s.data_bytes.to_string(),
            cell(s.rss_kib),
            s.orders.to_string(),
            s.settled.to_string(),
            cell(s.event_log()),
            cell(st.and_then(|s| s.oldest_seq)),
            cell(st.and_then(|s| s.head_seq)),
            cell(s.inboxes()),
            cell(s.dead_letters()),
            cell(s.contexts()),
            cell(s.context_bytes()),
            cell(st.and_then(|s| s.file_bytes)),
            cell(st.and_then(|s| s.disk_free)),
            cell(st.and_then(|s| s.cache_bytes)),
        ];
        out.push_str(&cells.join(","));
        for name in &inboxes {
            let _ = write!(
                out,
                ",{}",
                cell(st.and_then(|s| s.inboxes.get(name).copied()))
            );
        }
        for name in &contexts {
            let (entries, bytes) = st
                .and_then(|s| s.contexts.get(name).copied())
                .unwrap_or_default();
            let _ = write!(out, ",{},{}", cell(entries), cell(bytes));
        }
        out.push('\n');
    }
    out
}

/// A name as one CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(name: &str) -> String {
    if name.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", name.replace('"', "\"\""))
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> serde_json::Value {
        serde_json::json!({
            "eventLog": {"entries": 12, "oldestSeq": 88, "headSeq": 99},
            "inbox": {"car": {"entries": 3}, "view": {"entries": 4}},
            "deadLetters": {"entries": 0},
            "contexts": {"order": {"entries": 10, "bytes": 2000}, "car": {"entries": 1, "bytes": 50}},
            "file": {"bytes": 1048576, "cacheBytes": 65536},
            "disk": {"freeBytes": 5000}
        })
    }

    #[test]
    fn storage_report_is_read_field_by_field() {
        let s = Storage::parse(&report()).unwrap();
        assert_eq!(s.event_log, Some(12));
        assert_eq!(s.oldest_seq, Some(88));
        assert_eq!(s.head_seq, Some(99));
        assert_eq!(s.inbox_total(), Some(7));
        assert_eq!(s.dead_letters, Some(0));
        assert_eq!(s.context_entries(), Some(11));
        assert_eq!(s.context_bytes(), Some(2050));
        assert_eq!(s.file_bytes, Some(1048576));
        assert_eq!(s.cache_bytes, Some(65536));
        assert_eq!(s.disk_free, Some(5000));
    }

    #[test]
    fn an_empty_log_has_no_oldest_sequence_and_other_answers_are_no_report() {
        let s = Storage::parse(&serde_json::json!({
            "eventLog": {"entries": 0, "oldestSeq": null, "headSeq": 7}
        }))
        .unwrap();
        assert_eq!(
            (s.event_log, s.oldest_seq, s.head_seq),
            (Some(0), None, Some(7))
        );
        assert_eq!(s.inbox_total(), None);
        assert_eq!(s.context_bytes(), None);
        assert_eq!(
            Storage::parse(&serde_json::json!({"type": "about:blank"})),
            None
        );
        assert_eq!(Storage::parse(&serde_json::json!([1, 2])), None);
    }

    #[test]
    fn csv_has_a_header_a_line_per_sample_and_empty_cells_for_unknowns() {
        let with = Sample {
            t_s: 10.0,
            data_bytes: 4096,
            rss_kib: Some(50_000),
            orders: 100,
            settled: 90,
            storage: Storage::parse(&report()),
        };
        let without = Sample {
            t_s: 0.0,
            data_bytes: 0,
            rss_kib: None,
            ..Sample::default()
        };
        let text = csv(&[without, with]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let header: Vec<&str> = lines[0].split(',').collect();
        assert_eq!(&header[..FIXED_COLUMNS.len()], FIXED_COLUMNS);
        assert_eq!(
            &header[FIXED_COLUMNS.len()..],
            [
                "inbox.car",
                "inbox.view",
                "context.car.entries",
                "context.car.bytes",
                "context.order.entries",
                "context.order.bytes"
            ]
        );
        for line in &lines[1..] {
            assert_eq!(line.split(',').count(), header.len(), "{line}");
        }
        assert_eq!(lines[1], "0.0,0,,0,0,,,,,,,,,,,,,,,,");
        assert_eq!(
            lines[2],
            "10.0,4096,50000,100,90,12,88,99,7,0,11,2050,1048576,5000,65536,3,4,1,50,10,2000"
        );
    }

    #[test]
    fn dir_bytes_sums_files_recursively() {
        let dir = std::env::temp_dir().join(format!("soak-dir-bytes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), [0u8; 100]).unwrap();
        std::fs::write(dir.join("sub/b"), [0u8; 23]).unwrap();
        assert_eq!(dir_bytes(&dir), 123);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(dir_bytes(&dir), 0);
    }
}
