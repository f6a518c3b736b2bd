//! Live rates for the console's topology: requests each context served, typed calls per
//! caller and target, and event deliveries per publisher, subscriber and type. The metric
//! families are cumulative; a sampler reads these few counters once a second and keeps the
//! last [`WINDOW`] seconds of readings, so [`Ledger::snapshot`] gives rates, error ratios
//! and p99 latencies over that window.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::histogram::{Reading, Timing};
use crate::sync::lock;

/// Seconds of readings the rates are computed over.
pub(crate) const WINDOW: usize = 10;

/// What a flow is between.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum FlowKey {
    /// Requests a context served through the gateway.
    Context(Arc<str>),
    /// Typed calls from a caller to a target.
    Call(Arc<str>, Arc<str>),
    /// Events of one type from a publisher to a subscriber.
    Event {
        publisher: Arc<str>,
        subscriber: Arc<str>,
        event_type: Arc<str>,
    },
}

/// The cumulative counts of one flow.
#[derive(Debug, Default)]
struct Cell {
    errors: AtomicU64,
    timing: Timing,
}

#[derive(Debug, Clone, Default)]
struct CellReading {
    errors: u64,
    timing: Reading,
}

/// A rate over the window.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rate {
    pub per_sec: f64,
    /// Share of the window's operations that failed (0 when there were none).
    pub error_ratio: f64,
    /// 99th percentile latency over the window, in milliseconds (`None`: nothing ran).
    pub p99_ms: Option<f64>,
}

/// Calls from one context to another.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CallFlow {
    pub caller: String,
    pub target: String,
    pub rate: Rate,
}

/// Events of one type from a publisher to a subscriber.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventFlow {
    pub publisher: String,
    pub subscriber: String,
    pub event_type: String,
    pub per_sec: f64,
    pub error_ratio: f64,
    /// Events the subscriber has yet to apply (all types), as last reported by the bus.
    pub lag: u64,
}

/// Every flow's rates over the last window.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FlowSnapshot {
    /// Seconds the rates cover (shorter than [`WINDOW`] just after start).
    pub window_s: f64,
    /// HTTP requests each context served.
    pub contexts: BTreeMap<String, Rate>,
    pub calls: Vec<CallFlow>,
    pub events: Vec<EventFlow>,
}

/// The flows' counters and the sampler's readings.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    cells: RwLock<HashMap<FlowKey, Arc<Cell>>>,
    lag: Mutex<HashMap<Arc<str>, u64>>,
    readings: Mutex<VecDeque<(Instant, HashMap<FlowKey, CellReading>)>>,
}

impl Ledger {
    /// One operation of `key` that took `took`.
    pub(crate) fn record(&self, key: FlowKey, failed: bool, took: Duration) {
        let cell = {
            let cells = self.cells.read().unwrap_or_else(|p| p.into_inner());
            cells.get(&key).cloned()
        };
        let cell = match cell {
            Some(c) => c,
            None => {
                let mut cells = self.cells.write().unwrap_or_else(|p| p.into_inner());
                if cells.len() >= super::MAX_SERIES && !cells.contains_key(&key) {
                    return;
                }
                cells.entry(key).or_default().clone()
            }
        };
        if failed {
            cell.errors.fetch_add(1, Ordering::Relaxed);
        }
        cell.timing.observe(took);
    }

    pub(crate) fn set_lag(&self, subscriber: &str, lag: u64) {
        let mut map = lock(&self.lag);
        match map.get_mut(subscriber) {
            Some(v) => *v = lag,
            None => {
                map.insert(Arc::from(subscriber), lag);
            }
        }
    }

    /// Take a reading of every flow (the sampler calls this once a second).
    pub(crate) fn sample(&self, now: Instant) {
        let reading: HashMap<FlowKey, CellReading> = {
            let cells = self.cells.read().unwrap_or_else(|p| p.into_inner());
            cells
                .iter()
                .map(|(k, c)| {
                    let r = CellReading {
                        errors: c.errors.load(Ordering::Relaxed),
                        timing: c.timing.read(),
                    };
                    (k.clone(), r)
                })
                .collect()
        };
        let mut readings = lock(&self.readings);
        readings.push_back((now, reading));
        while readings.len() > WINDOW + 1 {
            readings.pop_front();
        }
    }

    /// Rates between the oldest and the newest reading.
    pub(crate) fn snapshot(&self) -> FlowSnapshot {
        let readings = lock(&self.readings);
        let (Some((t0, first)), Some((t1, last))) = (readings.front(), readings.back()) else {
            return FlowSnapshot::default();
        };
        let secs = t1.duration_since(*t0).as_secs_f64();
        let mut snap = FlowSnapshot {
            window_s: secs,
            ..FlowSnapshot::default()
        };
        let lag = lock(&self.lag);
        for (key, now) in last {
            let before = first.get(key).cloned().unwrap_or_default();
            let window = now.timing.since(&before.timing);
            let count = window.count();
            let errors = now.errors.saturating_sub(before.errors);
            let rate = Rate {
                per_sec: if secs > 0.0 { count as f64 / secs } else { 0.0 },
                error_ratio: if count > 0 {
                    errors as f64 / count as f64
                } else {
                    0.0
                },
                p99_ms: window.quantile(0.99).map(|s| s * 1000.0),
            };
            match key {
                FlowKey::Context(c) => {
                    snap.contexts.insert(c.to_string(), rate);
                }
                FlowKey::Call(caller, target) => snap.calls.push(CallFlow {
                    caller: caller.to_string(),
                    target: target.to_string(),
                    rate,
                }),
                FlowKey::Event {
                    publisher,
                    subscriber,
                    event_type,
                } => snap.events.push(EventFlow {
                    publisher: publisher.to_string(),
                    subscriber: subscriber.to_string(),
                    event_type: event_type.to_string(),
                    per_sec: rate.per_sec,
                    error_ratio: rate.error_ratio,
                    lag: lag.get(&**subscriber).copied().unwrap_or(0),
                }),
            }
        }
        snap.calls
            .sort_by(|a, b| (&a.caller, &a.target).cmp(&(&b.caller, &b.target)));
        snap.events.sort_by(|a, b| {
            (&a.publisher, &a.subscriber, &a.event_type).cmp(&(
                &b.publisher,
                &b.subscriber,
                &b.event_type,
            ))
        });
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_the_window_between_the_oldest_and_newest_reading() {
        let l = Ledger::default();
        let caller: Arc<str> = Arc::from("a");
        let target: Arc<str> = Arc::from("b");
        let key = FlowKey::Call(caller, target);
        l.record(key.clone(), false, Duration::from_millis(1));
        let t0 = Instant::now();
        l.sample(t0);
        for i in 0..20 {
            l.record(key.clone(), i % 4 == 0, Duration::from_millis(3));
        }
        l.set_lag("b", 7);
        l.sample(t0 + Duration::from_secs(2));
        let snap = l.snapshot();
        assert_eq!(snap.window_s, 2.0);
        let call = &snap.calls[0];
        assert_eq!((call.caller.as_str(), call.target.as_str()), ("a", "b"));
        assert_eq!(call.rate.per_sec, 10.0);
        assert_eq!(call.rate.error_ratio, 0.25);
        assert_eq!(call.rate.p99_ms, Some(5.0));
    }

    #[test]
    fn old_readings_leave_the_window() {
        let l = Ledger::default();
        let t0 = Instant::now();
        for s in 0..30 {
            l.sample(t0 + Duration::from_secs(s));
        }
        assert_eq!(l.snapshot().window_s, WINDOW as f64);
    }
}
