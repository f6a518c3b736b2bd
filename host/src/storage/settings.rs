//! The `[storage]` table: how long the event log, the inboxes and the dead letters keep
//! their entries, and how pruning paces itself. Each key has a `CTXHOST_*` variable, which
//! wins over the file.

use std::time::Duration;

use serde::Deserialize;

use super::duration::{Span, parse_span};

/// The `[storage]` table as the file spells it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StorageFile {
    pub(crate) event_retention: Option<String>,
    pub(crate) inbox_retention: Option<String>,
    pub(crate) dead_letter_retention: Option<String>,
    pub(crate) prune_interval: Option<String>,
    pub(crate) prune_batch: Option<usize>,
    pub(crate) db_cache_mb: Option<usize>,
}

/// A `[storage]` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct StorageConfigError {
    /// `storage.<key>` or the variable's name.
    pub key: String,
    pub reason: String,
}

/// Retention and pruning, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageSettings {
    /// An event every consumer has is removed from the log once it is this old.
    pub event_retention: Span,
    /// An inbox entry is removed once it is this old on the host clock.
    pub inbox_retention: Span,
    /// A dead letter is removed once it is this old.
    pub dead_letter_retention: Span,
    /// Pause between pruning passes.
    pub prune_interval: Duration,
    /// Most entries removed per transaction.
    pub prune_batch: usize,
    /// Memory the database keeps as its page cache, in bytes.
    pub db_cache_bytes: usize,
}

/// Defaults: a week of events, so a redelivery after an incident found on a Monday still
/// has the weekend's events; inbox entries a day longer, so every event the log still
/// keeps by age can be redelivered without applying it twice; a month of dead letters.
impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            event_retention: Span::Of(Duration::from_secs(7 * 86_400)),
            inbox_retention: Span::Of(Duration::from_secs(8 * 86_400)),
            dead_letter_retention: Span::Of(Duration::from_secs(30 * 86_400)),
            prune_interval: Duration::from_secs(10),
            prune_batch: 1_000,
            db_cache_bytes: crate::state::DEFAULT_CACHE_BYTES,
        }
    }
}

const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3_600);
const MAX_BATCH: usize = 100_000;
const MAX_CACHE_MB: usize = 1024 * 1024;

impl StorageSettings {
    /// The settings from the process's variables over `file`.
    pub(crate) fn resolve(file: &StorageFile) -> Result<Self, StorageConfigError> {
        Self::resolve_with(file, |name| std::env::var(name).ok())
    }

    /// The settings from the variables `var` looks up over `file`.
    pub(crate) fn resolve_with(
        file: &StorageFile,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, StorageConfigError> {
        let d = StorageSettings::default();
        let pick = |name: &str, key: &str, v: &Option<String>| -> Option<(String, String)> {
            match var(name).filter(|v| !v.trim().is_empty()) {
                Some(v) => Some((name.to_string(), v)),
                None => v.clone().map(|v| (format!("storage.{key}"), v)),
            }
        };
        let span =
            |name: &str, key: &str, v: &Option<String>, default: Span| match pick(name, key, v) {
                None => Ok(default),
                Some((key, text)) => {
                    parse_span(&text).map_err(|reason| StorageConfigError { key, reason })
                }
            };
        let event_retention = span(
            "CTXHOST_EVENT_RETENTION",
            "event_retention",
            &file.event_retention,
            d.event_retention,
        )?;
        let inbox_retention = span(
            "CTXHOST_INBOX_RETENTION",
            "inbox_retention",
            &file.inbox_retention,
            d.inbox_retention,
        )?;
        let dead_letter_retention = span(
            "CTXHOST_DEAD_LETTER_RETENTION",
            "dead_letter_retention",
            &file.dead_letter_retention,
            d.dead_letter_retention,
        )?;
        let prune_interval = match pick(
            "CTXHOST_PRUNE_INTERVAL",
            "prune_interval",
            &file.prune_interval,
        ) {
            None => d.prune_interval,
            Some((key, text)) => match parse_span(&text) {
                Ok(Span::Of(i)) if (MIN_INTERVAL..=MAX_INTERVAL).contains(&i) => i,
                Ok(_) => {
                    return Err(StorageConfigError {
                        key,
                        reason: format!("{text:?} is not between 100ms and 1h"),
                    });
                }
                Err(reason) => return Err(StorageConfigError { key, reason }),
            },
        };
        let number = |name: &str, key: &str, v: Option<usize>| match var(name)
            .filter(|v| !v.trim().is_empty())
        {
            Some(text) => text
                .trim()
                .parse::<usize>()
                .map(|n| Some((name.to_string(), n)))
                .map_err(|_| StorageConfigError {
                    key: name.to_string(),
                    reason: format!("{text:?} is not a whole number"),
                }),
            None => Ok(v.map(|n| (format!("storage.{key}"), n))),
        };
        let db_cache_bytes = match number("CTXHOST_DB_CACHE_MB", "db_cache_mb", file.db_cache_mb)? {
            None => d.db_cache_bytes,
            Some((key, mb)) => match mb.checked_mul(1024 * 1024) {
                Some(b) if (1..=MAX_CACHE_MB).contains(&mb) => b,
                _ => {
                    return Err(StorageConfigError {
                        key,
                        reason: format!("{mb} is not between 1 and {MAX_CACHE_MB} (MiB)"),
                    });
                }
            },
        };
        let batch = match var("CTXHOST_PRUNE_BATCH").filter(|v| !v.trim().is_empty()) {
            Some(v) => Some((
                "CTXHOST_PRUNE_BATCH".to_string(),
                v.trim().parse::<usize>().map_err(|_| StorageConfigError {
                    key: "CTXHOST_PRUNE_BATCH".into(),
                    reason: format!("{v:?} is not a whole number"),
                })?,
            )),
            None => file
                .prune_batch
                .map(|b| ("storage.prune_batch".to_string(), b)),
        };
        let prune_batch = match batch {
            None => d.prune_batch,
            Some((_, b)) if (1..=MAX_BATCH).contains(&b) => b,
            Some((key, b)) => {
                return Err(StorageConfigError {
                    key,
                    reason: format!("{b} is not between 1 and {MAX_BATCH}"),
                });
            }
        };
        Ok(StorageSettings {
            event_retention,
            inbox_retention,
            dead_letter_retention,
            prune_interval,
            prune_batch,
            db_cache_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(event: Option<&str>, batch: Option<usize>) -> StorageFile {
        StorageFile {
            event_retention: event.map(str::to_string),
            prune_batch: batch,
            ..StorageFile::default()
        }
    }

    #[test]
    fn variables_win_over_the_file_and_defaults_fill_the_rest() {
        let s = StorageSettings::resolve_with(&file(Some("1h"), Some(50)), |n| {
            (n == "CTXHOST_EVENT_RETENTION").then(|| "0s".to_string())
        })
        .expect("valid");
        assert_eq!(s.event_retention, Span::Of(Duration::ZERO));
        assert_eq!(s.prune_batch, 50);
        assert_eq!(
            s.inbox_retention,
            StorageSettings::default().inbox_retention
        );
    }

    #[test]
    fn bad_values_are_refused_by_their_name() {
        let err = StorageSettings::resolve_with(&file(Some("7 days"), None), |_| None)
            .expect_err("refused");
        assert_eq!(err.key, "storage.event_retention");
        let err =
            StorageSettings::resolve_with(&file(None, Some(0)), |_| None).expect_err("refused");
        assert_eq!(err.key, "storage.prune_batch");
        let err = StorageSettings::resolve_with(&file(None, None), |n| {
            (n == "CTXHOST_PRUNE_INTERVAL").then(|| "1ms".to_string())
        })
        .expect_err("refused");
        assert_eq!(err.key, "CTXHOST_PRUNE_INTERVAL");
    }
}
