//! The per-target policies and the gateway limits, as read from the configuration file.
//!
//! ```toml
//! [resilience.default]          # every called context, unless overridden
//! timeout_ms = 5000
//!
//! [resilience.payment]          # calls into `payment`
//! timeout_ms = 500
//! breaker = { consecutive_failures = 5, open_ms = 2000 }
//! bulkhead = { max_concurrent = 32, max_queue = 64 }
//!
//! [rate_limit]                  # the gateway
//! client_rate = 50.0            # per client and route, requests per second (0: off)
//! [rate_limit.routes."POST /orders"]
//! rate = 200.0                  # the route, all clients together
//! ```
//!
//! Every field is optional; a target table only names what differs from `default`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// A table of the configuration that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{table}]: {reason}")]
pub struct PolicyError {
    /// The table, as written in the file (`resilience.payment`, `rate_limit`, ...).
    pub table: String,
    pub reason: String,
}

impl PolicyError {
    fn new(table: impl Into<String>, reason: impl Into<String>) -> Self {
        PolicyError {
            table: table.into(),
            reason: reason.into(),
        }
    }
}

/// The `[resilience.*]` tables: `default` and one per called context.
pub(crate) type ResilienceFile = BTreeMap<String, TargetFile>;

/// Key of the table that applies to every target.
pub(super) const DEFAULT_KEY: &str = "default";

/// One `[resilience.<target>]` table; `None`: inherit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    pub timeout_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub breaker: BreakerFile,
    #[serde(default)]
    pub bulkhead: BulkheadFile,
    #[serde(default)]
    pub retry: RetryFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    pub enabled: Option<bool>,
    pub consecutive_failures: Option<u32>,
    pub failure_rate: Option<f64>,
    pub window: Option<u32>,
    pub min_calls: Option<u32>,
    pub slow_call_ms: Option<u64>,
    pub open_ms: Option<u64>,
    pub open_multiplier: Option<f64>,
    pub max_open_ms: Option<u64>,
    pub half_open_probes: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkheadFile {
    pub max_concurrent: Option<u32>,
    pub max_queue: Option<u32>,
    pub max_wait_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    pub max_attempts: Option<u32>,
    pub base_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub budget_ratio: Option<f64>,
    pub budget_min_per_sec: Option<f64>,
}

/// Circuit breaker settings of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// `false`: never opens (calls are still counted).
    pub enabled: bool,
    /// Opens after this many failures in a row (0: off).
    pub consecutive_failures: u32,
    /// Opens when this share of the last `window` calls failed (0.0: off)...
    pub failure_rate: f64,
    /// ... over this many most recent calls ...
    pub window: u32,
    /// ... once at least this many calls are in the window.
    pub min_calls: u32,
    /// A successful call slower than this counts as a failure.
    pub slow_call: Duration,
    /// How long the breaker stays open after its first trip.
    pub open: Duration,
    /// Each further trip without a full recovery multiplies the open interval by this.
    pub open_multiplier: f64,
    /// Upper bound of the open interval.
    pub max_open: Duration,
    /// Calls let through while half-open; all must succeed to close.
    pub half_open_probes: u32,
}

/// Bulkhead settings of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkheadPolicy {
    /// Calls running into the target at once.
    pub max_concurrent: u32,
    /// Calls waiting for a slot; beyond it a call is refused at once.
    pub max_queue: u32,
    /// Longest wait for a slot before the call is refused.
    pub max_wait: Duration,
}

/// Retry settings of one target (applied to idempotent functions only).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1: no retry).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles for each further one, with full jitter.
    pub base_backoff: Duration,
    /// Upper bound of one backoff.
    pub max_backoff: Duration,
    /// Retries may add at most this share of the calls...
    pub budget_ratio: f64,
    /// ... plus this many retries per second.
    pub budget_min_per_sec: f64,
}

/// Everything the host applies to calls into one context.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetPolicy {
    /// Wall-clock limit of one attempt.
    pub timeout: Duration,
    /// CPU (epoch) deadline of the callee when called by another context (its own
    /// `deadline_ms` still applies when lower).
    pub deadline: Duration,
    pub breaker: BreakerPolicy,
    pub bulkhead: BulkheadPolicy,
    pub retry: RetryPolicy,
}

impl TargetPolicy {
    /// The built-in defaults, given the engine's CPU deadline.
    pub fn defaults(engine_deadline: Duration) -> Self {
        TargetPolicy {
            timeout: engine_deadline,
            deadline: engine_deadline,
            breaker: BreakerPolicy {
                enabled: true,
                consecutive_failures: 5,
                failure_rate: 0.5,
                window: 20,
                min_calls: 10,
                slow_call: engine_deadline,
                open: Duration::from_secs(5),
                open_multiplier: 2.0,
                max_open: Duration::from_secs(60),
                half_open_probes: 3,
            },
            bulkhead: BulkheadPolicy {
                max_concurrent: 256,
                max_queue: 512,
                max_wait: Duration::from_secs(1),
            },
            retry: RetryPolicy {
                max_attempts: 3,
                base_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(500),
                budget_ratio: 0.2,
                budget_min_per_sec: 5.0,
            },
        }
    }

    /// `self` with what `f` sets, checked.
    pub fn apply(mut self, f: &TargetFile) -> Result<Self, &'static str> {
        let ms = Duration::from_millis;
        if let Some(v) = f.timeout_ms {
            self.timeout = ms(v);
        }
        if let Some(v) = f.deadline_ms {
            self.deadline = ms(v);
        }
        let b = &f.breaker;
        let p = &mut self.breaker;
        set(&mut p.enabled, b.enabled);
        set(&mut p.consecutive_failures, b.consecutive_failures);
        set(&mut p.failure_rate, b.failure_rate);
        set(&mut p.window, b.window);
        set(&mut p.min_calls, b.min_calls);
        set(&mut p.slow_call, b.slow_call_ms.map(ms));
        set(&mut p.open, b.open_ms.map(ms));
        set(&mut p.open_multiplier, b.open_multiplier);
        set(&mut p.max_open, b.max_open_ms.map(ms));
        set(&mut p.half_open_probes, b.half_open_probes);
        let h = &f.bulkhead;
        let p = &mut self.bulkhead;
        set(&mut p.max_concurrent, h.max_concurrent);
        set(&mut p.max_queue, h.max_queue);
        set(&mut p.max_wait, h.max_wait_ms.map(ms));
        let r = &f.retry;
        let p = &mut self.retry;
        set(&mut p.max_attempts, r.max_attempts);
        set(&mut p.base_backoff, r.base_backoff_ms.map(ms));
        set(&mut p.max_backoff, r.max_backoff_ms.map(ms));
        set(&mut p.budget_ratio, r.budget_ratio);
        set(&mut p.budget_min_per_sec, r.budget_min_per_sec);
        self.check()?;
        Ok(self)
    }

    fn check(&self) -> Result<(), &'static str> {
        let b = &self.breaker;
        let fail = Err;
        if self.timeout.is_zero() {
            return fail("timeout_ms must be at least 1");
        }
        if self.deadline.is_zero() {
            return fail("deadline_ms must be at least 1");
        }
        if !(0.0..=1.0).contains(&b.failure_rate) {
            return fail("breaker.failure_rate must be between 0.0 and 1.0");
        }
        if b.window == 0 || b.window > 10_000 {
            return fail("breaker.window must be between 1 and 10000");
        }
        if b.min_calls > b.window {
            return fail("breaker.min_calls must not exceed breaker.window");
        }
        if b.open.is_zero() || b.max_open < b.open {
            return fail("breaker.open_ms must be at least 1 and at most breaker.max_open_ms");
        }
        if !(b.open_multiplier >= 1.0 && b.open_multiplier <= 100.0) {
            return fail("breaker.open_multiplier must be between 1.0 and 100.0");
        }
        if b.half_open_probes == 0 {
            return fail("breaker.half_open_probes must be at least 1");
        }
        if self.bulkhead.max_concurrent == 0 {
            return fail("bulkhead.max_concurrent must be at least 1");
        }
        let r = &self.retry;
        if r.max_attempts == 0 || r.max_attempts > 10 {
            return fail("retry.max_attempts must be between 1 and 10");
        }
        if r.max_backoff < r.base_backoff {
            return fail("retry.max_backoff_ms must not be below retry.base_backoff_ms");
        }
        // Written so that NaN fails too: a NaN or infinite rate would fill the budget on
        // every refill and so lift the bound on retries.
        let ratio_ok = (0.0..=1.0).contains(&r.budget_ratio);
        let min_ok = r.budget_min_per_sec >= 0.0 && r.budget_min_per_sec.is_finite();
        if !(ratio_ok && min_ok) {
            return fail(
                "retry.budget_ratio must be in 0.0..=1.0 and budget_min_per_sec a finite number >= 0",
            );
        }
        Ok(())
    }
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

/// The resolved policies: one for every target not named, and the named ones.
#[derive(Debug, Clone, PartialEq)]
pub struct ResilienceSettings {
    pub default: TargetPolicy,
    pub targets: BTreeMap<String, TargetPolicy>,
}

impl ResilienceSettings {
    /// Resolve the file's tables over the defaults; `Err` names the offending table.
    pub fn resolve(file: &ResilienceFile, engine_deadline: Duration) -> Result<Self, PolicyError> {
        let base = TargetPolicy::defaults(engine_deadline);
        let default = match file.get(DEFAULT_KEY) {
            Some(f) => base
                .apply(f)
                .map_err(|e| PolicyError::new(format!("resilience.{DEFAULT_KEY}"), e))?,
            None => base,
        };
        let mut targets = BTreeMap::new();
        for (name, f) in file.iter().filter(|(n, _)| *n != DEFAULT_KEY) {
            let p = default
                .clone()
                .apply(f)
                .map_err(|e| PolicyError::new(format!("resilience.{name}"), e))?;
            targets.insert(name.clone(), p);
        }
        Ok(ResilienceSettings { default, targets })
    }

    /// The policy of calls into `target`.
    pub fn policy(&self, target: &str) -> &TargetPolicy {
        self.targets.get(target).unwrap_or(&self.default)
    }
}

/// The `[rate_limit]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Per client and route, requests per second, unless the route says otherwise (0: off).
    pub client_rate: Option<f64>,
    /// Burst of a client on a route (default: one second's worth, at least 1).
    pub client_burst: Option<u32>,
    /// Most distinct clients tracked at once; beyond it the idlest are forgotten.
    pub max_clients: Option<usize>,
    /// A request header that names the client (e.g. `x-client-id`), trusted only when set:
    /// a proxy in front of the host must set it and drop any value the client sent.
    /// Absent (the default): the client is the peer's IP address.
    pub client_header: Option<String>,
    #[serde(default)]
    pub routes: BTreeMap<String, RouteLimitFile>,
}

/// One `[rate_limit.routes."METHOD /path"]` table (`*` as method: every method).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimitFile {
    /// The route, all clients together, requests per second (0 or absent: no route limit).
    pub rate: Option<f64>,
    pub burst: Option<u32>,
    /// Per client on this route (overrides the table-wide `client_rate`).
    pub client_rate: Option<f64>,
    pub client_burst: Option<u32>,
}

/// A token bucket's refill rate and capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: u32,
}

impl Rate {
    /// The rate set by key `key` (named in the refusal) and its burst.
    fn new(key: &str, per_sec: Option<f64>, burst: Option<u32>) -> Result<Option<Rate>, String> {
        match per_sec {
            None => Ok(None),
            Some(0.0) => Ok(None),
            Some(r) if !(r > 0.0 && r.is_finite()) => {
                Err(format!("{key} {r} must be a positive number"))
            }
            Some(r) => Ok(Some(Rate {
                per_sec: r,
                burst: burst.unwrap_or((r.ceil() as u32).max(1)).max(1),
            })),
        }
    }
}

/// Limits of one route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteLimit {
    /// `GET`, `POST`, ... or `*`.
    pub method: String,
    /// A path pattern like `/orders/{id}`.
    pub path: String,
    pub route: Option<Rate>,
    pub client: Option<Rate>,
}

/// The resolved gateway limits.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSettings {
    /// Per client, on every route without its own client limit.
    pub client: Option<Rate>,
    pub max_clients: usize,
    /// The trusted header naming the client (lower case), if any; else the peer address.
    pub client_header: Option<http::HeaderName>,
    pub routes: Vec<RouteLimit>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            client: None,
            max_clients: 100_000,
            client_header: None,
            routes: Vec::new(),
        }
    }
}

impl RateLimitSettings {
    /// Resolve the `[rate_limit]` table; `Err` names the offending table.
    pub fn resolve(f: &RateLimitFile) -> Result<Self, PolicyError> {
        let client = Rate::new("client_rate", f.client_rate, f.client_burst)
            .map_err(|e| PolicyError::new("rate_limit", e))?;
        let mut routes = Vec::new();
        for (key, r) in &f.routes {
            let err = |m: String| PolicyError::new(format!("rate_limit.routes.{key:?}"), m);
            let (method, path) = key
                .split_once(' ')
                .map(|(m, p)| (m.trim().to_ascii_uppercase(), p.trim().to_string()))
                .filter(|(m, p)| !m.is_empty() && p.starts_with('/'))
                .ok_or_else(|| err("the key must look like \"POST /orders\"".into()))?;
            routes.push(RouteLimit {
                method,
                path,
                route: Rate::new("rate", r.rate, r.burst).map_err(err)?,
                client: Rate::new("client_rate", r.client_rate, r.client_burst).map_err(err)?,
            });
        }
        let client_header = match f.client_header.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(h) => Some(http::HeaderName::try_from(h).map_err(|_| {
                PolicyError::new(
                    "rate_limit",
                    format!("client_header {h:?} is not a header name"),
                )
            })?),
        };
        Ok(RateLimitSettings {
            client,
            max_clients: f.max_clients.unwrap_or(100_000).max(1),
            client_header,
            routes,
        })
    }

    /// Whether any limit is configured.
    pub fn enabled(&self) -> bool {
        self.client.is_some()
            || self
                .routes
                .iter()
                .any(|r| r.route.is_some() || r.client.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_inherit_the_default_table_and_are_checked() {
        let file: ResilienceFile = toml::from_str(
            "[default]\ntimeout_ms = 800\n[payment]\nbreaker = { open_ms = 100, max_open_ms = 400 }\nbulkhead = { max_concurrent = 4 }\n",
        )
        .expect("parses");
        let s = ResilienceSettings::resolve(&file, Duration::from_secs(5)).expect("valid");
        let p = s.policy("payment");
        assert_eq!(p.timeout, Duration::from_millis(800));
        assert_eq!(p.breaker.open, Duration::from_millis(100));
        assert_eq!(p.bulkhead.max_concurrent, 4);
        assert_eq!(s.policy("car").bulkhead.max_concurrent, 256);
        assert_eq!(s.policy("car").timeout, Duration::from_millis(800));

        let bad: ResilienceFile = toml::from_str("[payment]\ndeadline_ms = 0\n").expect("parses");
        let e = ResilienceSettings::resolve(&bad, Duration::from_secs(5))
            .expect_err("zero deadline")
            .to_string();
        assert!(
            e.contains("[resilience.payment]") && e.contains("deadline_ms"),
            "{e}"
        );
        assert!(toml::from_str::<ResilienceFile>("[payment]\nbogus = 1\n").is_err());
    }

    #[test]
    fn route_limits_parse() {
        let f: RateLimitFile = toml::from_str(
            "client_rate = 5.0\n[routes.\"post /orders\"]\nrate = 100.0\nburst = 10\n",
        )
        .expect("parses");
        let s = RateLimitSettings::resolve(&f).expect("valid");
        assert!(s.enabled());
        assert!(!RateLimitSettings::default().enabled());
        assert_eq!(
            s.client,
            Some(Rate {
                per_sec: 5.0,
                burst: 5
            })
        );
        assert_eq!(s.routes[0].method, "POST");
        assert_eq!(
            s.routes[0].route,
            Some(Rate {
                per_sec: 100.0,
                burst: 10
            })
        );
        let f: RateLimitFile =
            toml::from_str("[routes.\"/orders\"]\nrate = 1.0\n").expect("parses");
        assert!(RateLimitSettings::resolve(&f).is_err());
    }
}
