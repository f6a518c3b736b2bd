//! Gateway rate limiting with token buckets: per route (all clients together) and per client
//! (on a route with its own client limit, or across every other route). The clock is a
//! parameter.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::policy::{PolicyError, Rate, RateLimitSettings};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate.per_sec).min(f64::from(rate.burst));
        self.last = now.max(self.last);
    }

    /// Time until one token is there (zero when one is).
    fn wait(&self, rate: Rate) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            // A tiny rate can make the wait longer than a Duration holds: wait "forever".
            Duration::try_from_secs_f64((1.0 - self.tokens) / rate.per_sec).unwrap_or(Duration::MAX)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Route(usize),
    Client(Option<usize>, String),
}

/// A refused request.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    /// `route` or `client`.
    pub scope: &'static str,
    /// The limit that refused, for the answer (`POST /orders`, or `*`).
    pub limit: String,
    /// Until the request would be allowed.
    pub retry_after: Duration,
}

/// The gateway's limiter.
#[derive(Debug)]
pub struct RateLimiter {
    settings: RateLimitSettings,
    paths: matchit::Router<Vec<usize>>,
    buckets: Mutex<HashMap<Key, Bucket>>,
    allowed: AtomicU64,
    limited_route: AtomicU64,
    limited_client: AtomicU64,
}

impl RateLimiter {
    /// `Err` when a route pattern is not a valid path pattern.
    pub fn new(settings: RateLimitSettings) -> Result<Self, PolicyError> {
        let mut by_path: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in settings.routes.iter().enumerate() {
            by_path.entry(&r.path).or_default().push(i);
        }
        let mut paths = matchit::Router::new();
        for (path, idx) in by_path {
            paths.insert(path, idx).map_err(|e| PolicyError {
                table: "rate_limit.routes".into(),
                reason: format!("path {path:?}: {e}"),
            })?;
        }
        Ok(RateLimiter {
            settings,
            paths,
            buckets: Mutex::new(HashMap::new()),
            allowed: AtomicU64::new(0),
            limited_route: AtomicU64::new(0),
            limited_client: AtomicU64::new(0),
        })
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled()
    }

    /// The header trusted to name the client, when configured (else: the peer address).
    pub fn client_header(&self) -> Option<&http::HeaderName> {
        self.settings.client_header.as_ref()
    }

    fn route_of(&self, method: &str, path: &str) -> Option<usize> {
        let m = self.paths.at(path).ok()?;
        m.value
            .iter()
            .copied()
            .find(|i| self.settings.routes[*i].method == method)
            .or_else(|| {
                m.value
                    .iter()
                    .copied()
                    .find(|i| self.settings.routes[*i].method == "*")
            })
    }

    /// Let a request of `client` through, taking a token from each bucket that applies, or
    /// refuse it (taking nothing).
    pub fn check(
        &self,
        method: &str,
        path: &str,
        client: &str,
        now: Instant,
    ) -> Result<(), Limited> {
        if !self.enabled() {
            return Ok(());
        }
        let route = self.route_of(method, path);
        let spec = route.map(|i| &self.settings.routes[i]);
        let mut checks: Vec<(Key, Rate, &'static str, String)> = Vec::with_capacity(2);
        if let Some(r) = spec {
            let name = format!("{} {}", r.method, r.path);
            if let Some(rate) = r.route {
                checks.push((Key::Route(route.unwrap_or(0)), rate, "route", name.clone()));
            }
            if let Some(rate) = r.client {
                checks.push((Key::Client(route, client.to_string()), rate, "client", name));
            }
        }
        if spec.is_none_or(|r| r.client.is_none())
            && let Some(rate) = self.settings.client
        {
            checks.push((
                Key::Client(None, client.to_string()),
                rate,
                "client",
                "*".into(),
            ));
        }
        if checks.is_empty() {
            return Ok(());
        }
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= self.settings.max_clients {
            self.evict(&mut buckets, now);
        }
        for (key, rate, scope, limit) in &checks {
            let b = buckets
                .entry(key.clone())
                .or_insert_with(|| Bucket::full(*rate, now));
            b.refill(*rate, now);
            let wait = b.wait(*rate);
            if !wait.is_zero() {
                let counter = if *scope == "route" {
                    &self.limited_route
                } else {
                    &self.limited_client
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return Err(Limited {
                    scope,
                    limit: limit.clone(),
                    retry_after: wait,
                });
            }
        }
        for (key, _, _, _) in &checks {
            if let Some(b) = buckets.get_mut(key) {
                b.tokens -= 1.0;
            }
        }
        self.allowed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Forget clients whose buckets are full again (they are as good as new); if that is
    /// not enough, forget every client bucket.
    fn evict(&self, buckets: &mut HashMap<Key, Bucket>, now: Instant) {
        let settings = &self.settings;
        buckets.retain(|k, b| {
            let rate = match k {
                Key::Route(_) => return true,
                Key::Client(Some(i), _) => settings.routes[*i].client,
                Key::Client(None, _) => settings.client,
            };
            rate.is_some_and(|r| {
                let mut b = *b;
                b.refill(r, now);
                b.tokens < f64::from(r.burst)
            })
        });
        if buckets.len() >= settings.max_clients {
            buckets.retain(|k, _| matches!(k, Key::Route(_)));
        }
    }

    pub fn snapshot(&self) -> Value {
        let s = &self.settings;
        let rate = |r: &Option<Rate>| r.map(|r| json!({ "perSec": r.per_sec, "burst": r.burst }));
        let routes: Vec<Value> = s
            .routes
            .iter()
            .map(|r| {
                json!({
                    "route": format!("{} {}", r.method, r.path),
                    "limit": rate(&r.route),
                    "perClient": rate(&r.client),
                })
            })
            .collect();
        let tracked = lock(&self.buckets).len();
        json!({
            "enabled": self.enabled(),
            "perClient": rate(&s.client),
            "routes": routes,
            "trackedBuckets": tracked,
            "allowed": self.allowed.load(Ordering::Relaxed),
            "limitedByRoute": self.limited_route.load(Ordering::Relaxed),
            "limitedByClient": self.limited_client.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy::RouteLimit;
    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter::new(RateLimitSettings {
            client: Some(Rate {
                per_sec: 1.0,
                burst: 2,
            }),
            max_clients: 4,
            client_header: None,
            routes: vec![RouteLimit {
                method: "POST".into(),
                path: "/orders".into(),
                route: Some(Rate {
                    per_sec: 10.0,
                    burst: 3,
                }),
                client: None,
            }],
        })
        .expect("valid")
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_refill() {
        let l = limiter();
        let t0 = Instant::now();
        assert!(l.check("GET", "/cars", "a", t0).is_ok());
        assert!(l.check("GET", "/cars/7", "a", t0).is_ok());
        let r = l.check("GET", "/cars", "a", t0).expect_err("burst spent");
        assert_eq!(r.scope, "client");
        assert_eq!(r.retry_after, Duration::from_secs(1));
        // Another client is not affected.
        assert!(l.check("GET", "/cars", "b", t0).is_ok());
        assert!(
            l.check("GET", "/cars", "a", t0 + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn a_route_limit_applies_to_all_clients_together() {
        let l = limiter();
        let t0 = Instant::now();
        let ok = ["a", "b", "c", "d", "e"]
            .iter()
            .filter(|c| l.check("POST", "/orders", c, t0).is_ok())
            .count();
        assert_eq!(ok, 3);
        let r = l
            .check("POST", "/orders", "f", t0)
            .expect_err("route spent");
        assert_eq!((r.scope, r.limit.as_str()), ("route", "POST /orders"));
        assert_eq!(r.retry_after, Duration::from_millis(100));
        // Other methods of the path only see the client limit.
        assert!(l.check("GET", "/orders", "a", t0).is_ok());
        assert_eq!(l.snapshot()["limitedByRoute"], 3);
    }

    #[test]
    fn idle_clients_are_forgotten_beyond_the_limit() {
        let l = limiter();
        let t0 = Instant::now();
        for c in ["a", "b", "c", "d", "e", "f"] {
            assert!(l.check("GET", "/cars", c, t0).is_ok());
        }
        let later = t0 + Duration::from_secs(5);
        assert!(l.check("GET", "/cars", "g", later).is_ok());
        assert!(l.snapshot()["trackedBuckets"].as_u64().unwrap_or(99) <= 4);
    }

    #[test]
    fn a_tiny_rate_refuses_without_panicking() {
        let l = RateLimiter::new(RateLimitSettings {
            client: Some(Rate {
                per_sec: 1e-300,
                burst: 1,
            }),
            max_clients: 4,
            client_header: None,
            routes: Vec::new(),
        })
        .expect("valid");
        let t0 = Instant::now();
        assert!(l.check("GET", "/cars", "a", t0).is_ok());
        let refused = l.check("GET", "/cars", "a", t0).expect_err("over the rate");
        assert_eq!(refused.retry_after, Duration::MAX);
    }

    #[test]
    fn no_limits_no_refusal() {
        let l = RateLimiter::new(RateLimitSettings::default()).expect("valid");
        let t0 = Instant::now();
        assert!((0..1000).all(|_| l.check("GET", "/cars", "a", t0).is_ok()));
    }
}
