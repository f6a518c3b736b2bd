//! Property tests of the `[resilience.*]` and `[rate_limit]` tables, which come from the
//! configuration file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::policy::{
    BreakerFile, BulkheadFile, RateLimitFile, RateLimitSettings, ResilienceSettings, RetryFile,
    RouteLimitFile, TargetFile,
};
use super::rate_limit::RateLimiter;

/// Numbers a hand-written file may hold: ordinary ones, and the edges TOML can spell.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        1 => -2.0..200.0f64,
        1 => prop::sample::select(vec![
            0.0, -0.0, 1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE,
            1e-300, 1e300, f64::MAX,
        ]),
    ]
}

fn millis() -> impl Strategy<Value = u64> {
    prop_oneof![0..10_000u64, Just(i64::MAX as u64), any::<u64>()]
}

fn target_file() -> impl Strategy<Value = TargetFile> {
    let breaker = (
        prop::option::weighted(0.3, any::<bool>()),
        prop::option::weighted(0.3, any::<u32>()),
        prop::option::weighted(0.3, float()),
        prop::option::weighted(0.3, prop_oneof![0..30u32, any::<u32>()]),
        prop::option::weighted(0.3, 0..30u32),
        prop::option::weighted(0.3, millis()),
        prop::option::weighted(0.3, millis()),
        prop::option::weighted(0.3, float()),
        prop::option::weighted(0.3, millis()),
        prop::option::weighted(0.3, 0..4u32),
    )
        .prop_map(|(e, c, f, w, m, s, o, om, mo, h)| BreakerFile {
            enabled: e,
            consecutive_failures: c,
            failure_rate: f,
            window: w,
            min_calls: m,
            slow_call_ms: s,
            open_ms: o,
            open_multiplier: om,
            max_open_ms: mo,
            half_open_probes: h,
        });
    let bulkhead = (
        prop::option::weighted(0.3, 0..4u32),
        prop::option::weighted(0.3, any::<u32>()),
        prop::option::weighted(0.3, millis()),
    )
        .prop_map(|(c, q, w)| BulkheadFile {
            max_concurrent: c,
            max_queue: q,
            max_wait_ms: w,
        });
    let retry = (
        prop::option::weighted(0.3, 0..12u32),
        prop::option::weighted(0.3, millis()),
        prop::option::weighted(0.3, millis()),
        prop::option::weighted(0.3, float()),
        prop::option::weighted(0.3, float()),
    )
        .prop_map(|(a, b, m, r, s)| RetryFile {
            max_attempts: a,
            base_backoff_ms: b,
            max_backoff_ms: m,
            budget_ratio: r,
            budget_min_per_sec: s,
        });
    (
        prop::option::weighted(0.3, millis()),
        prop::option::weighted(0.3, millis()),
        breaker,
        bulkhead,
        retry,
    )
        .prop_map(|(t, d, breaker, bulkhead, retry)| TargetFile {
            timeout_ms: t,
            deadline_ms: d,
            breaker,
            bulkhead,
            retry,
        })
}

/// A `[rate_limit.routes]` key: well formed, or anything.
fn route_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ("[a-zA-Z*]{1,6}", " +", "/[a-z{}*/.%]{0,12}").prop_map(|(m, s, p)| format!("{m}{s}{p}")),
        1 => "\\PC{0,16}",
    ]
}

fn rate_limit_file() -> impl Strategy<Value = RateLimitFile> {
    let route = (
        prop::option::of(float()),
        prop::option::of(any::<u32>()),
        prop::option::of(float()),
        prop::option::of(any::<u32>()),
    )
        .prop_map(|(rate, burst, client_rate, client_burst)| RouteLimitFile {
            rate,
            burst,
            client_rate,
            client_burst,
        });
    (
        prop::option::of(float()),
        prop::option::of(any::<u32>()),
        prop::option::of(prop_oneof![0..4usize, any::<usize>()]),
        prop::option::of("\\PC{0,10}"),
        prop::collection::btree_map(route_key(), route, 0..5),
    )
        .prop_map(
            |(client_rate, client_burst, max_clients, client_header, routes)| RateLimitFile {
                client_rate,
                client_burst,
                max_clients,
                client_header,
                routes,
            },
        )
}

proptest! {
    /// Any `[resilience.*]` tables resolve or are refused naming the table; what resolves
    /// holds only finite numbers within the documented ranges.
    #[test]
    fn resilience_tables_resolve_within_range_or_are_refused_by_name(
        tables in prop::collection::btree_map(
            prop_oneof![Just("default".to_string()), "[a-z]{1,6}"],
            target_file(),
            0..3,
        ),
    ) {
        let tables: BTreeMap<String, TargetFile> = tables;
        match ResilienceSettings::resolve(&tables, Duration::from_secs(5)) {
            Err(e) => {
                prop_assert!(e.table.starts_with("resilience."), "{e}");
                prop_assert!(tables.contains_key(&e.table["resilience.".len()..]), "{e}");
            }
            Ok(s) => {
                for p in std::iter::once(&s.default).chain(s.targets.values()) {
                    prop_assert!(!p.timeout.is_zero() && !p.deadline.is_zero());
                    let b = &p.breaker;
                    prop_assert!((0.0..=1.0).contains(&b.failure_rate));
                    prop_assert!((1.0..=100.0).contains(&b.open_multiplier));
                    prop_assert!(b.open <= b.max_open && b.min_calls <= b.window);
                    let r = &p.retry;
                    prop_assert!((0.0..=1.0).contains(&r.budget_ratio));
                    prop_assert!(
                        r.budget_min_per_sec.is_finite() && r.budget_min_per_sec >= 0.0,
                        "budget_min_per_sec {}", r.budget_min_per_sec
                    );
                    prop_assert!(r.base_backoff <= r.max_backoff);
                }
            }
        }
    }

    /// Any `[rate_limit]` table resolves or is refused naming it (a route's key quoted);
    /// what resolves has upper-case methods, paths from `/`, positive finite rates and
    /// bursts of at least 1, and the limiter built from it checks any request without
    /// panicking.
    #[test]
    fn rate_limit_tables_resolve_or_are_refused_by_name(
        file in rate_limit_file(),
        requests in prop::collection::vec(
            (prop::sample::select(vec!["GET", "POST", "*", "get"]), "/?\\PC{0,16}", 0..3u64),
            0..8,
        ),
    ) {
        let s = match RateLimitSettings::resolve(&file) {
            Err(e) => {
                let named = e.table == "rate_limit"
                    || file.routes.keys().any(|k| e.table == format!("rate_limit.routes.{k:?}"));
                prop_assert!(named, "{e}");
                return Ok(());
            }
            Ok(s) => s,
        };
        let rates = s.routes.iter().flat_map(|r| [r.route, r.client]).chain([s.client]);
        for rate in rates.flatten() {
            prop_assert!(rate.per_sec > 0.0 && rate.per_sec.is_finite() && rate.burst >= 1);
        }
        for r in &s.routes {
            prop_assert!(r.path.starts_with('/'));
            prop_assert!(!r.method.is_empty() && r.method == r.method.to_ascii_uppercase());
        }
        let limiter = match RateLimiter::new(s) {
            Ok(l) => l,
            Err(e) => {
                prop_assert!(e.table == "rate_limit.routes", "{e}");
                return Ok(());
            }
        };
        let t0 = Instant::now();
        for (method, path, secs) in requests {
            let _ = limiter.check(method, &path, "client", t0 + Duration::from_secs(secs));
        }
    }
}

/// Found by the property above: a NaN or infinite `budget_min_per_sec` was accepted and
/// lifted the bound on retries.
#[test]
fn a_retry_budget_rate_that_is_not_finite_is_refused() {
    for v in ["nan", "inf"] {
        let file: BTreeMap<String, TargetFile> = toml::from_str(&format!(
            "[payment]\nretry = {{ budget_min_per_sec = {v} }}\n"
        ))
        .expect("parses");
        let e = ResilienceSettings::resolve(&file, Duration::from_secs(5))
            .expect_err(v)
            .to_string();
        assert!(e.contains("budget_min_per_sec"), "{e}");
    }
}
