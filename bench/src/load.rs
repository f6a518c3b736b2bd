//! A closed-loop HTTP load generator: N connections, each sending its next request as soon
//! as the previous one answered, for a fixed time, after a warm-up. Reports throughput,
//! latency percentiles and every non-2xx or failed request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One request to send: method, path, body.
#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub method: reqwest::Method,
    pub path: String,
    pub body: Option<Vec<u8>>,
    /// A bearer token sent with the request.
    pub bearer: Option<std::sync::Arc<str>>,
}

impl Req {
    pub(crate) fn get(path: impl Into<String>) -> Self {
        Req {
            method: reqwest::Method::GET,
            path: path.into(),
            body: None,
            bearer: None,
        }
    }

    /// This request with `Authorization: Bearer <token>` when `token` is given.
    pub(crate) fn bearing(mut self, token: Option<&std::sync::Arc<str>>) -> Self {
        self.bearer = token.cloned();
        self
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    pub requests: u64,
    pub failures: u64,
    pub seconds: f64,
    /// Latencies of every measured request, sorted, in microseconds.
    pub latencies_us: Vec<u64>,
    /// The same latencies by HTTP status (0: no answer), each sorted.
    pub by_status: BTreeMap<u16, Vec<u64>>,
    pub first_failures: Vec<String>,
}

impl Report {
    pub(crate) fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    /// The `q` quantile (0..=1) of latency, in milliseconds.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_us, q)
    }

    /// Measured requests answered `status` (0: no answer).
    pub(crate) fn count(&self, status: u16) -> usize {
        self.by_status.get(&status).map_or(0, Vec::len)
    }

    /// The `q` quantile of the latency of requests answered `status`, in milliseconds.
    pub(crate) fn status_quantile_ms(&self, status: u16, q: f64) -> f64 {
        self.by_status
            .get(&status)
            .map_or(f64::NAN, |l| quantile_ms(l, q))
    }
}

fn quantile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() - 1) as f64 * q).round() as usize;
    sorted_us[i] as f64 / 1e3
}

/// Run `connections` loops against `base` for `warmup + duration`; `next(conn, i)` gives
/// each loop's i-th request. Only requests started after the warm-up are measured.
pub(crate) async fn run<F>(
    base: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    next: F,
) -> anyhow::Result<Report>
where
    F: Fn(usize, u64) -> Req + Send + Sync + 'static,
{
    let next = Arc::new(next);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let measure_from = start + warmup;
    let mut tasks = Vec::new();
    for conn in 0..connections {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()?;
        let base = base.to_string();
        let next = next.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failures = 0u64;
            let mut first = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = next(conn, i);
                i += 1;
                let t0 = Instant::now();
                let mut b = client.request(req.method.clone(), format!("{base}{}", req.path));
                if let Some(body) = req.body {
                    b = b.header("content-type", "application/json").body(body);
                }
                if let Some(token) = &req.bearer {
                    b = b.bearer_auth(token);
                }
                let (code, outcome) = match b.send().await {
                    Ok(r) => {
                        let status = r.status();
                        let body = r.bytes().await;
                        let outcome = match (status.is_success(), body) {
                            (true, Ok(_)) => None,
                            (_, Ok(body)) => Some(format!(
                                "{} {}: {status} {}",
                                req.method,
                                req.path,
                                String::from_utf8_lossy(&body)
                            )),
                            (_, Err(e)) => Some(format!("{} {}: {e}", req.method, req.path)),
                        };
                        (status.as_u16(), outcome)
                    }
                    Err(e) => (0, Some(format!("{} {}: {e}", req.method, req.path))),
                };
                if t0 >= measure_from {
                    lat.push((code, t0.elapsed().as_micros() as u64));
                    if let Some(f) = outcome {
                        failures += 1;
                        if first.len() < 3 {
                            first.push(f);
                        }
                    }
                }
            }
            (lat, failures, first)
        }));
    }
    tokio::time::sleep(warmup + duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut report = Report {
        seconds: duration.as_secs_f64(),
        ..Report::default()
    };
    for t in tasks {
        let (lat, failures, first) = t.await?;
        report.requests += lat.len() as u64;
        for (code, us) in lat {
            report.latencies_us.push(us);
            report.by_status.entry(code).or_default().push(us);
        }
        report.failures += failures;
        report.first_failures.extend(first);
    }
    report.latencies_us.sort_unstable();
    for latencies in report.by_status.values_mut() {
        latencies.sort_unstable();
    }
    Ok(report)
}
