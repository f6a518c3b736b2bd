//! Circuit breaker: closed -> open (on consecutive failures or a failure rate over a
//! count-based sliding window, slow calls counting as failures) -> half-open after the open
//! interval (a limited number of probe calls) -> closed when every probe succeeded, open again
//! (for a longer interval) when one failed.
//!
//! The clock is a parameter (`now`), so the state machine is tested without sleeping.

use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::policy::BreakerPolicy;

/// The externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, succeeded: u32 },
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    permitted: u64,
    refused: u64,
    successes: u64,
    failures: u64,
    slow: u64,
    opened: u64,
    half_opened: u64,
    closed: u64,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Most recent outcomes while closed, `true` for a failure.
    window: VecDeque<bool>,
    window_failures: u32,
    consecutive: u32,
    /// Trips since the breaker was last closed by successful probes.
    trips: u32,
    /// Increments on every transition; a ticket from an older generation does not move the
    /// state machine.
    generation: u64,
    counters: Counters,
}

/// A circuit breaker for calls into one context.
#[derive(Debug)]
pub struct Breaker {
    target: Arc<str>,
    policy: BreakerPolicy,
    inner: Arc<Mutex<Inner>>,
}

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub state: BreakerState,
    /// Until the breaker lets a probe through (at least 1 ms).
    pub retry_after: Duration,
}

/// Permission for one call; report its outcome with [`Breaker::record`]. Dropped without a
/// report (the caller was cancelled), a probe slot is released as if the probe failed.
#[derive(Debug)]
pub struct Ticket {
    generation: u64,
    probe: bool,
    inner: Option<Arc<Mutex<Inner>>>,
    target: Arc<str>,
    policy: BreakerPolicy,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take()
            && self.probe
        {
            let mut g = lock(&inner);
            if g.generation == self.generation
                && let State::HalfOpen { in_flight, .. } = &mut g.state
            {
                *in_flight = in_flight.saturating_sub(1);
                trip(
                    &mut g,
                    &self.target,
                    &self.policy,
                    Instant::now(),
                    "probe abandoned",
                );
            }
        }
    }
}

fn transition(g: &mut Inner, target: &str, to: State, reason: &str) {
    let from = public(&g.state);
    g.state = to;
    g.generation += 1;
    let to = public(&g.state);
    crate::telemetry::metrics().breaker_transition(target, to.as_str());
    match to {
        BreakerState::Open => {
            g.counters.opened += 1;
            tracing::warn!(target_context = %target, from = from.as_str(), to = to.as_str(), trips = g.trips, reason, "circuit breaker state change");
        }
        BreakerState::HalfOpen => {
            g.counters.half_opened += 1;
            tracing::info!(target_context = %target, from = from.as_str(), to = to.as_str(), reason, "circuit breaker state change");
        }
        BreakerState::Closed => {
            g.counters.closed += 1;
            tracing::info!(target_context = %target, from = from.as_str(), to = to.as_str(), reason, "circuit breaker state change");
        }
    }
}

fn public(s: &State) -> BreakerState {
    match s {
        State::Closed => BreakerState::Closed,
        State::Open { .. } => BreakerState::Open,
        State::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

/// The open interval after `trips` trips in a row.
fn open_interval(p: &BreakerPolicy, trips: u32) -> Duration {
    let factor = p
        .open_multiplier
        .powi(trips.saturating_sub(1).min(64) as i32);
    let ms = (p.open.as_secs_f64() * factor).min(p.max_open.as_secs_f64());
    Duration::from_secs_f64(ms.max(0.001))
}

fn trip(g: &mut Inner, target: &str, p: &BreakerPolicy, now: Instant, reason: &str) {
    g.trips += 1;
    let until = now + open_interval(p, g.trips);
    g.window.clear();
    g.window_failures = 0;
    g.consecutive = 0;
    transition(g, target, State::Open { until }, reason);
}

impl Breaker {
    pub fn new(target: Arc<str>, policy: BreakerPolicy) -> Self {
        Breaker {
            target,
            policy,
            inner: Arc::new(Mutex::new(Inner {
                state: State::Closed,
                window: VecDeque::new(),
                window_failures: 0,
                consecutive: 0,
                trips: 0,
                generation: 0,
                counters: Counters::default(),
            })),
        }
    }

    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// The state at `now` (an elapsed open interval reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let g = lock(&self.inner);
        match g.state {
            State::Open { until } if now >= until => BreakerState::HalfOpen,
            ref s => public(s),
        }
    }

    /// Let a call through, or refuse it.
    pub fn acquire(&self, now: Instant) -> Result<Ticket, Refused> {
        let mut g = lock(&self.inner);
        let ticket = |g: &Inner, probe: bool| Ticket {
            generation: g.generation,
            probe,
            inner: Some(self.inner.clone()),
            target: self.target.clone(),
            policy: self.policy.clone(),
        };
        if !self.policy.enabled {
            g.counters.permitted += 1;
            return Ok(ticket(&g, false));
        }
        if let State::Open { until } = g.state
            && now >= until
        {
            transition(
                &mut g,
                &self.target,
                State::HalfOpen {
                    in_flight: 0,
                    succeeded: 0,
                },
                "open interval elapsed",
            );
        }
        let probes = self.policy.half_open_probes;
        match &mut g.state {
            State::Closed => {
                g.counters.permitted += 1;
                Ok(ticket(&g, false))
            }
            State::Open { until } => {
                let retry_after = until
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1));
                g.counters.refused += 1;
                Err(Refused {
                    state: BreakerState::Open,
                    retry_after,
                })
            }
            State::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if *in_flight + *succeeded < probes {
                    *in_flight += 1;
                    g.counters.permitted += 1;
                    Ok(ticket(&g, true))
                } else {
                    g.counters.refused += 1;
                    Err(Refused {
                        state: BreakerState::HalfOpen,
                        retry_after: Duration::from_millis(100),
                    })
                }
            }
        }
    }

    /// Report how the call of `ticket` went: `failed` for a trap, timeout or host-side
    /// unavailability (never for the callee's own `err` answers); `elapsed` makes a
    /// successful call over the slow-call threshold count as a failure.
    pub fn record(&self, mut ticket: Ticket, failed: bool, elapsed: Duration, now: Instant) {
        ticket.inner = None;
        let p = &self.policy;
        let slow = !failed && elapsed > p.slow_call;
        let bad = failed || slow;
        let mut g = lock(&self.inner);
        if bad {
            g.counters.failures += 1;
        } else {
            g.counters.successes += 1;
        }
        if slow {
            g.counters.slow += 1;
        }
        if !p.enabled || ticket.generation != g.generation {
            return;
        }
        match &mut g.state {
            State::Closed => {
                g.window.push_back(bad);
                if bad {
                    g.window_failures += 1;
                    g.consecutive += 1;
                } else {
                    g.consecutive = 0;
                }
                while g.window.len() > p.window as usize {
                    if g.window.pop_front() == Some(true) {
                        g.window_failures -= 1;
                    }
                }
                let n = g.window.len() as u32;
                let by_count =
                    p.consecutive_failures > 0 && g.consecutive >= p.consecutive_failures;
                let by_rate = p.failure_rate > 0.0
                    && n >= p.min_calls.max(1)
                    && f64::from(g.window_failures) / f64::from(n) >= p.failure_rate;
                if by_count || by_rate {
                    let reason = if by_count {
                        format!("{} consecutive failures", g.consecutive)
                    } else {
                        format!("{} of the last {n} calls failed", g.window_failures)
                    };
                    trip(&mut g, &self.target, p, now, &reason);
                }
            }
            State::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if !ticket.probe {
                    return;
                }
                *in_flight = in_flight.saturating_sub(1);
                if bad {
                    trip(
                        &mut g,
                        &self.target,
                        p,
                        now,
                        if slow { "slow probe" } else { "probe failed" },
                    );
                } else {
                    *succeeded += 1;
                    if *succeeded >= p.half_open_probes {
                        g.trips = 0;
                        transition(&mut g, &self.target, State::Closed, "probes succeeded");
                    }
                }
            }
            State::Open { .. } => {}
        }
    }

    /// State, counters and settings, for the admin endpoint.
    pub fn snapshot(&self, now: Instant) -> Value {
        let state = self.state(now);
        let g = lock(&self.inner);
        let c = g.counters;
        let open_for_ms = match g.state {
            State::Open { until } => until.saturating_duration_since(now).as_millis() as u64,
            _ => 0,
        };
        let p = &self.policy;
        json!({
            "enabled": p.enabled,
            "state": state.as_str(),
            "openForMs": open_for_ms,
            "trips": g.trips,
            "consecutiveFailures": g.consecutive,
            "windowCalls": g.window.len(),
            "windowFailures": g.window_failures,
            "permitted": c.permitted,
            "refused": c.refused,
            "successes": c.successes,
            "failures": c.failures,
            "slowCalls": c.slow,
            "opened": c.opened,
            "halfOpened": c.half_opened,
            "closed": c.closed,
            "settings": {
                "consecutiveFailures": p.consecutive_failures,
                "failureRate": p.failure_rate,
                "window": p.window,
                "minCalls": p.min_calls,
                "slowCallMs": p.slow_call.as_millis() as u64,
                "openMs": p.open.as_millis() as u64,
                "openMultiplier": p.open_multiplier,
                "maxOpenMs": p.max_open.as_millis() as u64,
                "halfOpenProbes": p.half_open_probes,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            enabled: true,
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: 10,
            min_calls: 6,
            slow_call: Duration::from_millis(100),
            open: Duration::from_secs(1),
            open_multiplier: 2.0,
            max_open: Duration::from_secs(3),
            half_open_probes: 2,
        }
    }

    fn call(b: &Breaker, failed: bool, now: Instant) {
        let t = b.acquire(now).expect("let through");
        b.record(t, failed, Duration::from_millis(1), now);
    }

    #[test]
    fn opens_on_consecutive_failures_and_refuses_until_the_interval_elapsed() {
        let b = Breaker::new("payment".into(), policy());
        let t0 = Instant::now();
        call(&b, true, t0);
        call(&b, true, t0);
        call(&b, false, t0);
        call(&b, true, t0);
        call(&b, true, t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        call(&b, true, t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        let r = b
            .acquire(t0 + Duration::from_millis(400))
            .expect_err("open");
        assert_eq!(r.retry_after, Duration::from_millis(600));
        assert_eq!(b.state(t0 + Duration::from_secs(1)), BreakerState::HalfOpen);
    }

    #[test]
    fn opens_on_the_failure_rate_once_the_window_has_enough_calls() {
        let b = Breaker::new("payment".into(), policy());
        let t0 = Instant::now();
        // f s f s f: 3 of 5 failed, but fewer than min_calls = 6.
        for failed in [true, false, true, false, true] {
            call(&b, failed, t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        call(&b, false, t0); // 3 of 6 = 50 %
        assert_eq!(b.state(t0), BreakerState::Open);
    }

    #[test]
    fn slow_successes_count_as_failures_and_domain_errors_do_not() {
        let b = Breaker::new("payment".into(), policy());
        let t0 = Instant::now();
        for _ in 0..3 {
            let t = b.acquire(t0).expect("closed");
            b.record(t, false, Duration::from_millis(150), t0);
        }
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.snapshot(t0)["slowCalls"], 3);
    }

    #[test]
    fn half_open_lets_a_limited_number_of_probes_through_then_closes() {
        let b = Breaker::new("payment".into(), policy());
        let t0 = Instant::now();
        for _ in 0..3 {
            call(&b, true, t0);
        }
        let t1 = t0 + Duration::from_secs(1);
        let p1 = b.acquire(t1).expect("probe 1");
        let p2 = b.acquire(t1).expect("probe 2");
        assert_eq!(
            b.acquire(t1).expect_err("only 2 probes").state,
            BreakerState::HalfOpen
        );
        b.record(p1, false, Duration::from_millis(1), t1);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        b.record(p2, false, Duration::from_millis(1), t1);
        assert_eq!(b.state(t1), BreakerState::Closed);
        assert_eq!(b.snapshot(t1)["closed"], 1);
    }

    #[test]
    fn a_failed_probe_reopens_for_a_growing_interval_capped_at_the_maximum() {
        let b = Breaker::new("payment".into(), policy());
        let mut now = Instant::now();
        for _ in 0..3 {
            call(&b, true, now);
        }
        // Trips 2, 3, 4: open for 2 s, 3 s (capped), 3 s.
        for expected in [2_000u64, 3_000, 3_000] {
            let gap = b.acquire(now).expect_err("open").retry_after;
            now += gap;
            let probe = b.acquire(now).expect("probe");
            b.record(probe, true, Duration::from_millis(1), now);
            let r = b.acquire(now).expect_err("open again");
            assert_eq!(r.retry_after, Duration::from_millis(expected));
        }
        // Recovery resets the interval.
        now += Duration::from_secs(3);
        call(&b, false, now);
        call(&b, false, now);
        assert_eq!(b.state(now), BreakerState::Closed);
        for _ in 0..3 {
            call(&b, true, now);
        }
        assert_eq!(
            b.acquire(now).expect_err("open").retry_after,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn an_abandoned_probe_reopens_and_a_stale_ticket_is_ignored() {
        let b = Breaker::new("payment".into(), policy());
        let t0 = Instant::now();
        let stale = b.acquire(t0).expect("closed");
        for _ in 0..3 {
            call(&b, true, t0);
        }
        // A call admitted before the trip does not move the state machine.
        b.record(stale, false, Duration::from_millis(1), t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        let t1 = t0 + Duration::from_secs(1);
        drop(b.acquire(t1).expect("probe"));
        assert_eq!(b.state(t1), BreakerState::Open);
    }

    #[test]
    fn a_disabled_breaker_never_refuses() {
        let b = Breaker::new(
            "payment".into(),
            BreakerPolicy {
                enabled: false,
                ..policy()
            },
        );
        let t0 = Instant::now();
        for _ in 0..50 {
            call(&b, true, t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert_eq!(b.snapshot(t0)["failures"], 50);
    }
}
