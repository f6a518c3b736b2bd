//! Resilience policies and their state: a leaf of the host (no HTTP, no components).
//!
//! Every call from one context into another goes through [`Target::run`]: a circuit breaker
//! (`breaker`), a bulkhead (`bulkhead`), a wall-clock timeout and a lowered CPU deadline
//! per attempt, and retries of idempotent functions within a budget (`retry`). The token
//! buckets of the gateway's rate limits are [`RateLimiter`]; the gateway applies them as a
//! layer. The settings come from the `[resilience.*]` and `[rate_limit]` tables (`policy`).

mod breaker;
mod bulkhead;
mod policy;
mod rate_limit;
mod retry;

#[cfg(test)]
mod proptests;

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) use breaker::Breaker;
pub(crate) use bulkhead::Bulkhead;
pub(crate) use policy::{
    PolicyError, RateLimitFile, RateLimitSettings, ResilienceFile, ResilienceSettings, TargetPolicy,
};
pub(crate) use rate_limit::RateLimiter;
pub(crate) use retry::{RetryBudget, is_idempotent};

/// How an attempt failed, as far as the host is concerned. A callee's own `err` answer is
/// not a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The callee trapped.
    Trapped,
    /// The callee ran past its wall-clock timeout or CPU deadline.
    Timeout,
    /// The host could not run the callee (instantiation failed, ...).
    Unavailable,
}

/// One attempt of a call, run by [`Target::run`]: attempt `n` (1, 2, ...) does the work,
/// undoes it when it fails, and says how it failed, if it did. The future is `Send` so a
/// call can run inside a host function of the runtime.
pub trait Attempt: Send {
    fn run(&mut self, n: u32) -> impl Future<Output = Option<Failure>> + Send;
}

impl<F, Fut> Attempt for F
where
    F: FnMut(u32) -> Fut + Send,
    Fut: Future<Output = Option<Failure>> + Send,
{
    fn run(&mut self, n: u32) -> impl Future<Output = Option<Failure>> + Send {
        self(n)
    }
}

/// Why the host refused a call without running it: answered as `host(rejected)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub message: String,
    pub retry_after: Duration,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    attempts: AtomicU64,
    ok: AtomicU64,
    trapped: AtomicU64,
    timeouts: AtomicU64,
    unavailable: AtomicU64,
    refused_open: AtomicU64,
    refused_bulkhead: AtomicU64,
    retries: AtomicU64,
    retry_budget_exhausted: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The policies and their state for calls into one context.
#[derive(Debug)]
pub struct Target {
    name: Arc<str>,
    policy: TargetPolicy,
    breaker: Breaker,
    bulkhead: Bulkhead,
    budget: RetryBudget,
    counters: Counters,
}

impl Target {
    pub fn new(name: &str, policy: TargetPolicy) -> Self {
        let name: Arc<str> = Arc::from(name);
        Target {
            breaker: Breaker::new(name.clone(), policy.breaker.clone()),
            bulkhead: Bulkhead::new(policy.bulkhead.clone()),
            budget: RetryBudget::new(&policy.retry, Instant::now()),
            name,
            policy,
            counters: Counters::default(),
        }
    }

    pub fn policy(&self) -> &TargetPolicy {
        &self.policy
    }

    /// The target's context name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Admit one call of `func`: refused at once while the breaker is open, or when the
    /// bulkhead has neither a free slot nor room in its wait queue; otherwise the returned
    /// [`Call`] holds a slot until it is dropped and hands out attempts.
    pub async fn begin(&self, func: &str) -> Result<Call<'_>, Refusal> {
        inc(&self.counters.calls);
        let ticket = self.admit(Instant::now())?;
        let slot = match self.bulkhead.enter().await {
            Ok(s) => s,
            Err(full) => {
                inc(&self.counters.refused_bulkhead);
                let b = &self.policy.bulkhead;
                let message = match full {
                    bulkhead::Full::QueueFull => format!(
                        "{} is at its limit of {} concurrent calls and {} waiting",
                        self.name, b.max_concurrent, b.max_queue
                    ),
                    bulkhead::Full::WaitExpired => format!(
                        "{} had no free call slot within {} ms",
                        self.name,
                        b.max_wait.as_millis()
                    ),
                };
                return Err(Refusal {
                    message,
                    retry_after: Duration::from_secs(1),
                });
            }
        };
        self.budget.deposit(Instant::now());
        Ok(Call {
            target: self,
            _slot: slot,
            ticket: Some(ticket),
            started: Instant::now(),
            max: if is_idempotent(func) {
                self.policy.retry.max_attempts
            } else {
                1
            },
            n: 0,
        })
    }

    /// Run one call of `func` with [`Target::begin`] and [`Call`]: `attempt.run(n)` runs
    /// attempt `n` (1, 2, ...) and rolls back whatever it did when it fails; it returns how it
    /// failed, if it did. `Err` when the call was refused before any attempt; otherwise the
    /// outcome of the last attempt. This is the only loop of attempts in the host.
    pub async fn run<A: Attempt>(
        &self,
        func: &str,
        attempt: &mut A,
    ) -> Result<Option<Failure>, Refusal> {
        let mut call = self.begin(func).await?;
        let mut last = None;
        while let Some(n) = call.attempt() {
            last = attempt.run(n).await;
            match call.finish(last) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => break,
            }
        }
        Ok(last)
    }

    fn admit(&self, now: Instant) -> Result<breaker::Ticket, Refusal> {
        self.breaker.acquire(now).map_err(|r| {
            inc(&self.counters.refused_open);
            Refusal {
                message: format!(
                    "circuit breaker for {} is {}; calls resume in {} ms",
                    self.name,
                    r.state.as_str(),
                    r.retry_after.as_millis()
                ),
                retry_after: r.retry_after,
            }
        })
    }

    pub fn snapshot(&self, now: Instant) -> Value {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let p = &self.policy;
        json!({
            "target": &*self.name,
            "timeoutMs": p.timeout.as_millis() as u64,
            "deadlineMs": p.deadline.as_millis() as u64,
            "calls": get(&c.calls),
            "attempts": get(&c.attempts),
            "succeeded": get(&c.ok),
            "trapped": get(&c.trapped),
            "timedOut": get(&c.timeouts),
            "unavailable": get(&c.unavailable),
            "refusedByBreaker": get(&c.refused_open),
            "refusedByBulkhead": get(&c.refused_bulkhead),
            "retries": get(&c.retries),
            "retryBudgetExhausted": get(&c.retry_budget_exhausted),
            "breaker": self.breaker.snapshot(now),
            "bulkhead": self.bulkhead.snapshot(),
            "retry": {
                "maxAttempts": p.retry.max_attempts,
                "baseBackoffMs": p.retry.base_backoff.as_millis() as u64,
                "maxBackoffMs": p.retry.max_backoff.as_millis() as u64,
                "budgetRatio": p.retry.budget_ratio,
                "budgetMinPerSec": p.retry.budget_min_per_sec,
                "budgetTokens": self.budget.balance(now),
            },
        })
    }
}

/// One admitted call: attempts (the first, and retries of an idempotent function) while it
/// holds its bulkhead slot.
#[derive(Debug)]
pub struct Call<'a> {
    target: &'a Target,
    _slot: bulkhead::Slot,
    ticket: Option<breaker::Ticket>,
    started: Instant,
    max: u32,
    n: u32,
}

impl Call<'_> {
    /// Start the next attempt: its number, or `None` when the breaker refuses it (it opened
    /// after an earlier attempt failed, whose outcome then stands).
    pub fn attempt(&mut self) -> Option<u32> {
        if self.ticket.is_none() {
            self.ticket = Some(self.target.admit(Instant::now()).ok()?);
        }
        self.n += 1;
        self.started = Instant::now();
        inc(&self.target.counters.attempts);
        Some(self.n)
    }

    /// Report how the attempt went (`None`: an answer, possibly the callee's own `err`).
    /// Returns the backoff before the next attempt when there should be one: only after a
    /// failure, for an idempotent function, below the maximum and within the retry budget.
    pub fn finish(&mut self, outcome: Option<Failure>) -> Option<Duration> {
        let t = self.target;
        let now = Instant::now();
        if let Some(ticket) = self.ticket.take() {
            t.breaker.record(
                ticket,
                outcome.is_some(),
                now.duration_since(self.started),
                now,
            );
        }
        let f = match outcome {
            None => {
                inc(&t.counters.ok);
                return None;
            }
            Some(f) => f,
        };
        inc(match f {
            Failure::Trapped => &t.counters.trapped,
            Failure::Timeout => &t.counters.timeouts,
            Failure::Unavailable => &t.counters.unavailable,
        });
        if self.n >= self.max {
            return None;
        }
        if !t.budget.withdraw(now) {
            inc(&t.counters.retry_budget_exhausted);
            return None;
        }
        inc(&t.counters.retries);
        crate::telemetry::metrics().retry(&t.name);
        let wait = retry::backoff(&t.policy.retry, self.n, crate::jitter::unit());
        tracing::debug!(target_context = %t.name, attempt = self.n, failure = ?f, wait_ms = wait.as_millis() as u64, "retrying an idempotent call");
        Some(wait)
    }
}

/// The policies of every call target of one host, and their state.
#[derive(Debug)]
pub struct Resilience {
    settings: ResilienceSettings,
    targets: Mutex<HashMap<String, Arc<Target>>>,
}

impl Resilience {
    pub fn new(settings: ResilienceSettings) -> Self {
        Resilience {
            settings,
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// The state of calls into `name` (kept across new versions of the context).
    pub fn target(&self, name: &str) -> Arc<Target> {
        let mut t = lock(&self.targets);
        t.entry(name.to_string())
            .or_insert_with(|| Arc::new(Target::new(name, self.settings.policy(name).clone())))
            .clone()
    }

    /// The state of the circuit breaker of calls into `name` at `now`, without creating the
    /// target's state: `disabled` when its policy turns the breaker off, `closed` before the
    /// first call, else `closed`, `open` or `half-open`.
    pub fn breaker_state(&self, name: &str, now: Instant) -> &'static str {
        let target = lock(&self.targets).get(name).cloned();
        let enabled = match &target {
            Some(t) => t.policy.breaker.enabled,
            None => self.settings.policy(name).breaker.enabled,
        };
        match target {
            _ if !enabled => "disabled",
            Some(t) => t.breaker.state(now).as_str(),
            None => breaker::BreakerState::Closed.as_str(),
        }
    }

    /// Every target called so far (and every configured one).
    /// Every target with a policy or a call so far, by name.
    pub fn targets(&self) -> Vec<Arc<Target>> {
        for name in self.settings.targets.keys() {
            self.target(name);
        }
        let mut targets: Vec<Arc<Target>> = lock(&self.targets).values().cloned().collect();
        targets.sort_by(|a, b| a.name.cmp(&b.name));
        targets
    }

    pub fn snapshot(&self) -> Value {
        for name in self.settings.targets.keys() {
            self.target(name);
        }
        let now = Instant::now();
        let mut targets: Vec<Arc<Target>> = lock(&self.targets).values().cloned().collect();
        targets.sort_by(|a, b| a.name.cmp(&b.name));
        json!({
            "targets": targets.iter().map(|t| t.snapshot(now)).collect::<Vec<_>>(),
            "idempotentPrefixes": retry::IDEMPOTENT_PREFIXES,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::resilience::breaker::BreakerState;

    fn target(max_attempts: u32) -> Target {
        let mut p = TargetPolicy::defaults(Duration::from_secs(5));
        p.retry.max_attempts = max_attempts;
        p.retry.base_backoff = Duration::from_millis(1);
        p.retry.max_backoff = Duration::from_millis(2);
        p.breaker.consecutive_failures = 100;
        p.breaker.failure_rate = 0.0;
        Target::new("payment", p)
    }

    /// A fake callee with a unit of work: each attempt takes a savepoint, writes one effect,
    /// fails the first `fail` times and rolls back to the savepoint when it fails, like
    /// `forward_call` does.
    struct Fake {
        effects: Mutex<Vec<u32>>,
        attempts: AtomicU32,
        fail: u32,
    }

    impl Fake {
        fn new(fail: u32) -> Self {
            Fake {
                effects: Mutex::new(Vec::new()),
                attempts: AtomicU32::new(0),
                fail,
            }
        }

        async fn attempt(&self, n: u32) -> Option<Failure> {
            let savepoint = self.effects.lock().unwrap().len();
            self.attempts.fetch_add(1, Ordering::SeqCst);
            self.effects.lock().unwrap().push(n);
            tokio::task::yield_now().await;
            if n <= self.fail {
                self.effects.lock().unwrap().truncate(savepoint);
                Some(Failure::Trapped)
            } else {
                None
            }
        }
    }

    #[tokio::test]
    async fn an_idempotent_call_is_retried_and_leaves_exactly_one_effect() {
        let t = target(3);
        let fake = Fake::new(2);
        let out = t.run("get-payment", &mut |n| fake.attempt(n)).await;
        assert_eq!(out, Ok(None));
        assert_eq!(fake.attempts.load(Ordering::SeqCst), 3);
        assert_eq!(*fake.effects.lock().unwrap(), vec![3]);
        let s = t.snapshot(Instant::now());
        assert_eq!(
            (s["retries"].as_u64(), s["attempts"].as_u64()),
            (Some(2), Some(3))
        );
    }

    #[tokio::test]
    async fn other_functions_and_domain_errors_are_never_retried() {
        let t = target(3);
        let fake = Fake::new(1);
        let out = t.run("authorize", &mut |n| fake.attempt(n)).await;
        assert_eq!(out, Ok(Some(Failure::Trapped)));
        assert_eq!(fake.attempts.load(Ordering::SeqCst), 1);
        assert!(fake.effects.lock().unwrap().is_empty());
        // `None` is the answer (possibly the callee's own `err`): no retry.
        let calls = AtomicU32::new(0);
        let out = t
            .run("get-payment", &mut |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { None }
            })
            .await;
        assert_eq!((out, calls.load(Ordering::SeqCst)), (Ok(None), 1));
    }

    #[tokio::test]
    async fn attempts_stop_at_the_maximum_and_at_the_budget() {
        let t = target(4);
        let fake = Fake::new(10);
        assert_eq!(
            t.run("get-payment", &mut |n| fake.attempt(n)).await,
            Ok(Some(Failure::Trapped))
        );
        assert_eq!(fake.attempts.load(Ordering::SeqCst), 4);
        // The budget started with 5 tokens (one second of the minimum rate) plus 0.2 per
        // call: 3 were spent; the next call can retry twice at most, then it is exhausted.
        let fake = Fake::new(10);
        let _ = t.run("get-payment", &mut |n| fake.attempt(n)).await;
        assert_eq!(fake.attempts.load(Ordering::SeqCst), 3);
        let s = t.snapshot(Instant::now());
        assert_eq!(s["retryBudgetExhausted"], 1);
        assert!(fake.effects.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_open_breaker_refuses_at_once_and_stops_retries() {
        let mut p = TargetPolicy::defaults(Duration::from_secs(5));
        p.breaker.consecutive_failures = 2;
        p.retry.base_backoff = Duration::from_millis(1);
        p.retry.max_backoff = Duration::from_millis(1);
        let t = Target::new("payment", p);
        let fake = Fake::new(10);
        let out = t.run("get-payment", &mut |n| fake.attempt(n)).await;
        assert_eq!(out, Ok(Some(Failure::Trapped)));
        assert_eq!(fake.attempts.load(Ordering::SeqCst), 2);
        let started = Instant::now();
        let refused = t
            .run("authorize", &mut |_| async { panic!("must not run") })
            .await
            .expect_err("open");
        assert!(refused.message.contains("open"), "{refused}");
        assert!(started.elapsed() < Duration::from_millis(50));
        assert_eq!(t.breaker().state(Instant::now()), BreakerState::Open);
    }

    #[tokio::test]
    async fn the_breaker_state_is_read_without_creating_a_target() {
        let mut quick = TargetPolicy::defaults(Duration::from_secs(5));
        quick.breaker.consecutive_failures = 1;
        let mut off = TargetPolicy::defaults(Duration::from_secs(5));
        off.breaker.enabled = false;
        let r = Resilience::new(ResilienceSettings {
            default: quick,
            targets: [("quiet".to_string(), off)].into_iter().collect(),
        });
        let now = Instant::now();
        assert_eq!(r.breaker_state("payment", now), "closed");
        assert_eq!(r.breaker_state("quiet", now), "disabled");
        assert!(lock(&r.targets).is_empty(), "nothing created by reading");
        let t = r.target("payment");
        let _ = t
            .run("authorize", &mut |_| async { Some(Failure::Trapped) })
            .await;
        assert_eq!(r.breaker_state("payment", Instant::now()), "open");
    }

    #[tokio::test]
    async fn a_full_bulkhead_refuses_with_a_message() {
        let mut p = TargetPolicy::defaults(Duration::from_secs(5));
        p.bulkhead.max_concurrent = 1;
        p.bulkhead.max_queue = 0;
        let t = Target::new("payment", p);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = Mutex::new(Some(rx));
        let mut hold = |_| {
            let r = rx.lock().unwrap().take();
            async move {
                if let Some(r) = r {
                    let _ = r.await;
                }
                None
            }
        };
        let busy = t.run("authorize", &mut hold);
        let other = async {
            while t.bulkhead.in_flight() == 0 {
                tokio::task::yield_now().await;
            }
            let refused = t
                .run("authorize", &mut |_| async { None })
                .await
                .expect_err("full");
            tx.send(()).expect("send");
            refused
        };
        let (busy, refused) = tokio::join!(busy, other);
        assert!(refused.message.contains("concurrent"), "{refused}");
        assert_eq!(busy, Ok(None));
        assert_eq!(t.snapshot(Instant::now())["refusedByBulkhead"], 1);
    }
}
