//! What a soak run's samples say: least-squares slopes over the second half, peaks of the
//! first and second halves, and a verdict per target, each computed from the numbers alone.

use super::sample::Sample;

/// Slope of the least-squares line through `points` (x, y); `None` with fewer than two
/// points or when every x is the same.
pub(crate) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// A growing peak is one whose second-half peak passes its first-half peak by more than this
/// factor (plus [`PEAK_SLACK`] entries, for counts that wander around a few entries).
pub(crate) const PEAK_FACTOR: f64 = 1.25;
/// See [`PEAK_FACTOR`].
pub(crate) const PEAK_SLACK: f64 = 100.0;
/// Resident memory is flat when its fitted change over the second half stays under this
/// share of its mean there.
pub(crate) const FLAT_MEMORY: f64 = 0.05;
/// The data directory grows only with business state when the event log and the inboxes are
/// bounded and the directory grows by at most this many times the contexts' own bytes per
/// settled order (redb's pages are not full, and it grows its file ahead of use).
pub(crate) const BUSINESS_FACTOR: f64 = 4.0;

/// Whether a target was met, and why.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Met.
    Met(String),
    /// Not met.
    Missed(String),
    /// The samples cannot tell (no storage report, too few samples).
    Unknown(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Met(why) => write!(f, "{why}"),
            Verdict::Missed(why) => write!(f, "{why}"),
            Verdict::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// The samples of the second half of the run (from half the last sample's time on).
pub(crate) fn second_half(samples: &[Sample]) -> &[Sample] {
    let half = samples.last().map_or(0.0, |s| s.t_s / 2.0);
    let from = samples.partition_point(|s| s.t_s < half);
    &samples[from..]
}

/// How a count (event log, inboxes) behaved over the run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Boundedness {
    /// Its value at the last sample.
    pub end: u64,
    /// Its largest value, and the time of that sample.
    pub max: (u64, f64),
    /// Largest value before and from half the run.
    pub first_peak: u64,
    pub second_peak: u64,
    /// Least-squares slope against settled orders over the second half (entries per
    /// settled order).
    pub per_order: Option<f64>,
}

impl Boundedness {
    /// `value` of each sample that has it; `None` when no sample has it, or only one half.
    pub(crate) fn of(samples: &[Sample], value: impl Fn(&Sample) -> Option<u64>) -> Option<Self> {
        let known: Vec<(&Sample, u64)> = samples
            .iter()
            .filter_map(|s| Some((s, value(s)?)))
            .collect();
        let (last, end) = *known.last()?;
        let half = last.t_s / 2.0;
        let peak = |second: bool| {
            known
                .iter()
                .filter(|(s, _)| (s.t_s >= half) == second)
                .map(|(_, v)| *v)
                .max()
        };
        let max = known
            .iter()
            .fold((0, 0.0), |m, (s, v)| if *v > m.0 { (*v, s.t_s) } else { m });
        let fit: Vec<(f64, f64)> = known
            .iter()
            .filter(|(s, _)| s.t_s >= half)
            .map(|(s, v)| (s.settled as f64, *v as f64))
            .collect();
        Some(Boundedness {
            end,
            max,
            first_peak: peak(false)?,
            second_peak: peak(true)?,
            per_order: slope(&fit),
        })
    }

    /// Bounded when the second half's peak stays within [`PEAK_FACTOR`] (plus
    /// [`PEAK_SLACK`]) of the first half's.
    pub(crate) fn verdict(&self) -> Verdict {
        let limit = self.first_peak as f64 * PEAK_FACTOR + PEAK_SLACK;
        let why = format!(
            "second-half peak {} against first-half peak {} (limit {limit:.0})",
            self.second_peak, self.first_peak
        );
        if self.second_peak as f64 <= limit {
            Verdict::Met(format!("bounded: {why}"))
        } else {
            Verdict::Missed(format!("growing: {why}"))
        }
    }
}

/// Least-squares slope of resident memory against time over the second half, KiB per
/// minute, with the number of samples it used and their mean (KiB).
pub(crate) fn memory_slope(samples: &[Sample]) -> Option<(f64, usize, f64)> {
    kib_slope(samples, |s| s.rss_kib)
}

/// [`memory_slope`] of the resident memory less the database's page cache: what grows
/// besides the cache, which fills up to its configured size with the file.
pub(crate) fn memory_less_cache_slope(samples: &[Sample]) -> Option<(f64, usize, f64)> {
    kib_slope(samples, |s| {
        let cache = s.storage.as_ref()?.cache_bytes? / 1024;
        Some(s.rss_kib?.saturating_sub(cache))
    })
}

/// Least-squares slope of `kib` over the second half, KiB per minute; with the number of
/// points and their mean.
fn kib_slope(
    samples: &[Sample],
    kib: impl Fn(&Sample) -> Option<u64>,
) -> Option<(f64, usize, f64)> {
    let points: Vec<(f64, f64)> = second_half(samples)
        .iter()
        .filter_map(|s| Some((s.t_s / 60.0, kib(s)? as f64)))
        .collect();
    let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len().max(1) as f64;
    Some((slope(&points)?, points.len(), mean))
}

/// Flat when the fitted change over the second half stays under [`FLAT_MEMORY`] of its mean.
pub(crate) fn memory_verdict(samples: &[Sample]) -> Verdict {
    let half = second_half(samples);
    let (Some(first), Some(last)) = (half.first(), half.last()) else {
        return Verdict::Unknown("no samples".into());
    };
    let Some((per_min, n, mean)) = memory_slope(samples) else {
        return Verdict::Unknown("fewer than two memory samples in the second half".into());
    };
    let change = per_min * (last.t_s - first.t_s) / 60.0;
    let why = format!(
        "fitted change over the second half {:+.0} KiB ({:+.1} % of its mean {:.1} MiB, {n} samples; limit {:.0} %)",
        change,
        100.0 * change / mean,
        mean / 1024.0,
        100.0 * FLAT_MEMORY
    );
    if change.abs() <= FLAT_MEMORY * mean {
        Verdict::Met(format!("flat: {why}"))
    } else if change > 0.0 {
        Verdict::Missed(format!("growing: {why}"))
    } else {
        Verdict::Missed(format!("shrinking: {why}"))
    }
}

/// Least-squares slope of `bytes` against settled orders over the second half (bytes per
/// settled order).
pub(crate) fn bytes_per_order(
    samples: &[Sample],
    bytes: impl Fn(&Sample) -> Option<u64>,
) -> Option<f64> {
    let points: Vec<(f64, f64)> = second_half(samples)
        .iter()
        .filter_map(|s| Some((s.settled as f64, bytes(s)? as f64)))
        .collect();
    slope(&points)
}

/// Whether the data directory grew only with business state: the history (event log,
/// inboxes) bounded, and the directory's growth per settled order within
/// [`BUSINESS_FACTOR`] of the contexts' own bytes per settled order.
pub(crate) fn data_verdict(
    samples: &[Sample],
    event_log: Option<&Verdict>,
    inboxes: Option<&Verdict>,
) -> Verdict {
    let dir = bytes_per_order(samples, |s| Some(s.data_bytes));
    let state = bytes_per_order(samples, Sample::context_bytes);
    let history_bounded = match (event_log, inboxes) {
        (Some(Verdict::Met(_)), Some(Verdict::Met(_))) => true,
        (Some(Verdict::Missed(_)), _) | (_, Some(Verdict::Missed(_))) => {
            return Verdict::Missed(
                "grows with history: the event log or the inboxes grow with the orders".into(),
            );
        }
        _ => false,
    };
    match (dir, state) {
        (Some(dir), Some(state)) if history_bounded => {
            let ratio = dir / state.max(1.0);
            let why = format!(
                "second half: data dir {dir:.0} bytes per settled order, contexts' state {state:.0}, ratio {ratio:.2} (limit {BUSINESS_FACTOR:.0})"
            );
            if ratio <= BUSINESS_FACTOR {
                Verdict::Met(format!("only with business state: {why}"))
            } else {
                Verdict::Missed(format!("more than business state: {why}"))
            }
        }
        (None, _) => Verdict::Unknown("too few samples in the second half".into()),
        _ => Verdict::Unknown("the host gave no storage report".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample::Storage;
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn slope_of_a_line_is_its_gradient_and_a_step_is_spread_over_the_range() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 7.0)).collect();
        assert!(close(slope(&line).unwrap(), 3.0));
        // A step up halfway: the fit spreads it over the whole range.
        let noisy = [(0.0, 1.0), (1.0, 1.0), (2.0, 5.0), (3.0, 5.0)];
        assert!(close(slope(&noisy).unwrap(), 1.6));
        assert!(close(slope(&[(0.0, 5.0), (4.0, 5.0)]).unwrap(), 0.0));
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
        assert_eq!(slope(&[]), None);
    }

    fn samples(values: &[(f64, u64, u64)]) -> Vec<Sample> {
        // (t, settled, event-log entries); resident memory grows 1 MiB per minute.
        values
            .iter()
            .map(|&(t_s, settled, log)| Sample {
                t_s,
                settled,
                data_bytes: 1000 + 500 * settled,
                rss_kib: Some(50_000 + (t_s / 60.0 * 1024.0) as u64),
                storage: Some(Storage {
                    event_log: Some(log),
                    inboxes: [("view".to_owned(), 10)].into(),
                    contexts: [("order".to_owned(), (Some(settled), Some(200 * settled)))].into(),
                    ..Storage::default()
                }),
                ..Sample::default()
            })
            .collect()
    }

    #[test]
    fn a_log_growing_with_the_orders_is_growing_and_a_plateau_is_bounded() {
        let growing = samples(&[
            (0.0, 0, 0),
            (60.0, 1000, 5000),
            (120.0, 2000, 10000),
            (180.0, 3000, 15000),
        ]);
        let b = Boundedness::of(&growing, Sample::event_log).unwrap();
        assert_eq!(
            (b.end, b.max, b.first_peak, b.second_peak),
            (15000, (15000, 180.0), 5000, 15000)
        );
        assert!(close(b.per_order.unwrap(), 5.0));
        assert!(matches!(b.verdict(), Verdict::Missed(_)));

        let plateau = samples(&[
            (0.0, 0, 0),
            (60.0, 1000, 480),
            (120.0, 2000, 530),
            (180.0, 3000, 450),
        ]);
        let b = Boundedness::of(&plateau, Sample::event_log).unwrap();
        assert_eq!((b.first_peak, b.second_peak, b.end), (480, 530, 450));
        assert!(matches!(b.verdict(), Verdict::Met(_)), "{:?}", b.verdict());
        assert!(Boundedness::of(&plateau, |_| None).is_none());
    }

    #[test]
    fn memory_slope_is_kib_per_minute_over_the_second_half() {
        let s = samples(&[
            (0.0, 0, 0),
            (60.0, 1, 0),
            (120.0, 2, 0),
            (180.0, 3, 0),
            (240.0, 4, 0),
        ]);
        let (per_min, n, _) = memory_slope(&s).unwrap();
        assert_eq!(n, 3);
        assert!((per_min - 1024.0).abs() < 1.0, "{per_min}");
        // 2 MiB over 2 minutes of a ~52 MiB host: under 5 %.
        assert!(matches!(memory_verdict(&s), Verdict::Met(_)));
        let mut leaking = s.clone();
        for x in &mut leaking {
            x.rss_kib = Some(50_000 + (x.t_s * 100.0) as u64);
        }
        assert!(matches!(memory_verdict(&leaking), Verdict::Missed(_)));
    }

    #[test]
    fn the_memory_less_the_page_cache_leaves_out_the_cache_filling_up() {
        let mut s = samples(&[
            (0.0, 0, 0),
            (60.0, 1, 0),
            (120.0, 2, 0),
            (180.0, 3, 0),
            (240.0, 4, 0),
        ]);
        assert!(memory_less_cache_slope(&s).is_none(), "no cache figure yet");
        // The cache grows 1 MiB per minute, as the resident memory does.
        for x in &mut s {
            if let Some(st) = x.storage.as_mut() {
                st.cache_bytes = Some((x.t_s / 60.0 * 1024.0 * 1024.0) as u64);
            }
        }
        let (per_min, n, _) = memory_less_cache_slope(&s).unwrap();
        assert_eq!(n, 3);
        assert!(per_min.abs() < 1.0, "{per_min}");
        assert!((memory_slope(&s).unwrap().0 - 1024.0).abs() < 1.0);
    }

    #[test]
    fn data_grows_with_business_state_only_when_history_is_bounded() {
        let s = samples(&[
            (0.0, 0, 0),
            (60.0, 1000, 400),
            (120.0, 2000, 420),
            (180.0, 3000, 410),
        ]);
        assert!(close(
            bytes_per_order(&s, |s| Some(s.data_bytes)).unwrap(),
            500.0
        ));
        let met = Verdict::Met(String::new());
        let missed = Verdict::Missed(String::new());
        assert!(matches!(
            data_verdict(&s, Some(&met), Some(&met)),
            Verdict::Met(_)
        ));
        assert!(matches!(
            data_verdict(&s, Some(&missed), Some(&met)),
            Verdict::Missed(_)
        ));
        assert!(matches!(data_verdict(&s, None, None), Verdict::Unknown(_)));
        let mut bloated = s.clone();
        for x in &mut bloated {
            x.data_bytes = 5000 * x.settled;
        }
        assert!(matches!(
            data_verdict(&bloated, Some(&met), Some(&met)),
            Verdict::Missed(_)
        ));
    }
}
