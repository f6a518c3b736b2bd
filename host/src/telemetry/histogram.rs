//! A latency histogram without a lock: fixed bucket bounds in seconds, one atomic counter per
//! bucket. It encodes as a Prometheus histogram and can be read back ([`Timing::read`]), which
//! the live flow rates need (a quantile over the last seconds from two readings).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds, in seconds, of the latency buckets: 100 µs to 10 s, about ×2.5 apart, fine
/// enough for a p99 of requests that take from a fraction of a millisecond to seconds.
pub(crate) const LATENCY_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Bucket count including the one above the last bound.
const BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// A histogram of durations; clones share the counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timing(Arc<Cells>);

#[derive(Debug, Default)]
struct Cells {
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

/// The counts of a [`Timing`] at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Reading {
    /// Per bucket (not cumulative), the last one above [`LATENCY_BOUNDS`].
    pub(crate) buckets: [u64; BUCKETS],
    pub(crate) sum_nanos: u64,
}

impl Timing {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS.partition_point(|b| *b < secs);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> Reading {
        let mut r = Reading::default();
        for (out, cell) in r.buckets.iter_mut().zip(&self.0.buckets) {
            *out = cell.load(Ordering::Relaxed);
        }
        r.sum_nanos = self.0.sum_nanos.load(Ordering::Relaxed);
        r
    }
}

impl Reading {
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// What happened between `earlier` and this reading.
    pub(crate) fn since(&self, earlier: &Reading) -> Reading {
        let mut d = Reading::default();
        for i in 0..BUCKETS {
            d.buckets[i] = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        d.sum_nanos = self.sum_nanos.saturating_sub(earlier.sum_nanos);
        d
    }

    /// The `q` quantile (0..=1) in seconds, as the upper bound of the bucket it falls in
    /// (what Prometheus' `histogram_quantile` would interpolate within); `None` when empty.
    /// Past the last bound it is that bound: "over 10 s".
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(LATENCY_BOUNDS[i.min(LATENCY_BOUNDS.len() - 1)]);
            }
        }
        LATENCY_BOUNDS.last().copied()
    }
}

impl TypedMetric for Timing {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Timing {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let r = self.read();
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(r.buckets)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(r.sum_nanos as f64 / 1e9, r.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_of_their_upper_bound() {
        let t = Timing::default();
        t.observe(Duration::from_micros(100)); // exactly a bound: that bucket
        t.observe(Duration::from_micros(101));
        t.observe(Duration::from_secs(60)); // over the last bound
        let r = t.read();
        assert_eq!(r.buckets[0], 1);
        assert_eq!(r.buckets[1], 1);
        assert_eq!(r.buckets[BUCKETS - 1], 1);
        assert_eq!(r.count(), 3);
        assert_eq!(r.sum_nanos, 60_000_201_000);
    }

    #[test]
    fn quantiles_come_from_the_difference_of_two_readings() {
        let t = Timing::default();
        for _ in 0..1000 {
            t.observe(Duration::from_secs(2));
        }
        let before = t.read();
        for _ in 0..99 {
            t.observe(Duration::from_micros(900));
        }
        t.observe(Duration::from_millis(40));
        let window = t.read().since(&before);
        assert_eq!(window.count(), 100);
        assert_eq!(window.quantile(0.5), Some(0.001));
        assert_eq!(window.quantile(0.99), Some(0.001));
        assert_eq!(window.quantile(1.0), Some(0.05));
        assert_eq!(Reading::default().quantile(0.99), None);
    }
}
