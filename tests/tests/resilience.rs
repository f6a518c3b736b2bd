//! Resilience of calls between contexts and at the gateway, end to end: `payment` is made
//! slow or failing at runtime (its opt-in fault injection) while bounded concurrent load
//! hits `POST /orders`; the breaker opens and orders are refused fast with 503, nothing
//! inconsistent is stored, the other contexts keep serving, and everything recovers. Also
//! the bulkhead and retries of idempotent calls (the gateway's rate limits are tested in
//! process, `host/tests/gateway.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ctxhost_tests::{ADMIN_TOKEN, Api, Host, HostOptions, eventually, id};
use serde_json::{Value, json};

/// Fault injection on, and a quickly tripping breaker with short open intervals.
fn options(resilience: &str) -> HostOptions {
    HostOptions::new()
        .plugin_config("payment", "fault-injection", "true")
        .host_config(resilience)
}

async fn set_faults(api: &Api, faults: Value) {
    let r = api
        .send(
            reqwest::Method::PUT,
            "/payments/faults",
            Some((faults.to_string().into_bytes(), "application/json")),
        )
        .await;
    r.expect(200);
}

/// `GET /admin/resilience`, the target `payment`.
async fn payment_target(api: &Api) -> Value {
    let r = reqwest::Client::new()
        .get(api.url("/admin/resilience"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin request");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    v["targets"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["target"] == "payment").cloned())
        .unwrap_or_else(|| panic!("no target payment in {v}"))
}

/// One answer of the load loop.
#[derive(Debug, Clone)]
struct Sample {
    status: u16,
    latency: Duration,
    retry_after: Option<String>,
    body: String,
}

/// `clients` concurrent clients posting orders for `car` back to back, for `duration` and at
/// most `per_client` orders each.
async fn order_load(
    api: &Api,
    car: u64,
    clients: usize,
    duration: Duration,
    per_client: usize,
) -> Vec<Sample> {
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..per_client {
                if Instant::now() >= end {
                    break;
                }
                let started = Instant::now();
                let r = api
                    .post_json(
                        "/orders",
                        &json!({"carId": car, "qty": 1, "customerId": format!("c{c}")}),
                    )
                    .await;
                out.push(Sample {
                    status: r.status,
                    latency: started.elapsed(),
                    retry_after: r.retry_after.clone(),
                    body: r.body.clone(),
                });
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    all
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// Every stored order has exactly one payment and every payment its order.
async fn assert_consistent(api: &Api) -> usize {
    let orders = api.orders().await;
    let payments = api.payments().await;
    let mut by_order: HashMap<u64, Vec<&Value>> = HashMap::new();
    for p in &payments {
        by_order.entry(id(p, "orderId")).or_default().push(p);
    }
    for o in &orders {
        let oid = id(o, "id");
        let ps = by_order.get(&oid).map(Vec::len).unwrap_or(0);
        assert_eq!(ps, 1, "order {oid} has {ps} payments: {o}");
        assert_eq!(id(by_order[&oid][0], "id"), id(o, "paymentId"), "{o}");
    }
    assert_eq!(
        payments.len(),
        orders.len(),
        "a payment without its order: {} payments, {} orders",
        payments.len(),
        orders.len()
    );
    orders.len()
}

/// Refused orders answer 503 problem+json with `Retry-After`, and those refused by the open
/// breaker within a few milliseconds.
fn assert_fast_503s(samples: &[Sample]) {
    let refused: Vec<&Sample> = samples.iter().filter(|s| s.status == 503).collect();
    assert!(!refused.is_empty(), "no order was refused");
    for s in &refused {
        assert!(
            s.retry_after.is_some(),
            "503 without Retry-After: {}",
            s.body
        );
    }
    let fast: Vec<Duration> = refused
        .iter()
        .filter(|s| s.body.contains("circuit breaker"))
        .map(|s| s.latency)
        .collect();
    assert!(
        fast.len() * 2 >= refused.len(),
        "most refusals should come from the open breaker: {} of {}",
        fast.len(),
        refused.len()
    );
    let p50 = percentile(fast.clone(), 0.5);
    assert!(
        p50 < Duration::from_millis(50),
        "fast-fail p50 {p50:?} over 50 ms"
    );
}

/// Clears the faults, then waits until orders succeed again and the breaker is closed.
async fn recover(api: &Api, car: u64) {
    set_faults(api, json!({})).await;
    eventually(Duration::from_secs(15), || async {
        let r = api
            .post_json(
                "/orders",
                &json!({"carId": car, "qty": 1, "customerId": "probe"}),
            )
            .await;
        ctxhost_tests::ensure_that!(r.status == 201, "order answered {}", r.status);
        let t = payment_target(api).await;
        ctxhost_tests::ensure_that!(
            t["breaker"]["state"] == "closed",
            "breaker {}",
            t["breaker"]["state"]
        );
        Ok(t)
    })
    .await;
}

const BREAKER: &str = "[resilience.payment]
timeout_ms = 300
breaker = { consecutive_failures = 3, failure_rate = 0.5, window = 10, min_calls = 5, slow_call_ms = 250, open_ms = 700, max_open_ms = 1500, half_open_probes = 2 }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_payment_opens_the_breaker_orders_fail_fast_and_it_recovers() {
    let host = Host::start(options(BREAKER));
    let car = host.create_car("Model S", 100_000).await;
    host.place_order(car, 1, "warmup").await;
    set_faults(&host, json!({"latencyMs": 1000})).await;

    let samples = order_load(&host, car, 20, Duration::from_secs(3), 400).await;
    let statuses: Vec<u16> = samples.iter().map(|s| s.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 503),
        "unexpected statuses: {statuses:?}"
    );
    assert_fast_503s(&samples);
    let t = payment_target(&host).await;
    assert!(t["breaker"]["opened"].as_u64() >= Some(1), "{t}");
    assert!(t["timedOut"].as_u64() >= Some(1), "{t}");
    assert!(t["refusedByBreaker"].as_u64() >= Some(1), "{t}");

    recover(&host, car).await;
    let t = payment_target(&host).await;
    assert!(t["breaker"]["halfOpened"].as_u64() >= Some(1), "{t}");
    assert!(t["breaker"]["closed"].as_u64() >= Some(1), "{t}");
    let accepted = samples.iter().filter(|s| s.status == 201).count();
    let stored = assert_consistent(&host).await;
    // warmup + accepted under load + the recovery probes.
    assert!(stored > accepted, "{stored} stored, {accepted} accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trapping_payment_is_isolated_and_the_other_contexts_keep_serving() {
    let host = Host::start(options(BREAKER));
    let car = host.create_car("Model 3", 100_000).await;
    host.place_order(car, 1, "warmup").await;
    eventually(Duration::from_secs(10), || async {
        match host.availability(car).await {
            Some(_) => Ok(()),
            None => Err("view does not know the car yet".to_string()),
        }
    })
    .await;
    let before = host.orders().await.len();
    set_faults(&host, json!({"trap": true})).await;

    let readers = {
        let api = host.api();
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(2);
            let mut n = 0;
            while Instant::now() < end && n < 600 {
                for path in [
                    "/cars".to_string(),
                    format!("/availability/{car}"),
                    "/orders".into(),
                ] {
                    let r = api.get(&path).await;
                    assert_eq!(
                        r.status, 200,
                        "GET {path} during the payment outage: {}",
                        r.body
                    );
                    n += 1;
                }
            }
            n
        })
    };
    let samples = order_load(&host, car, 10, Duration::from_secs(2), 400).await;
    let reads = readers.await.expect("readers");
    assert!(reads >= 30, "only {reads} reads");
    assert!(
        samples.iter().all(|s| s.status == 503),
        "an order succeeded while payment traps"
    );
    assert_fast_503s(&samples);
    assert_eq!(host.orders().await.len(), before, "an order was stored");
    let t = payment_target(&host).await;
    assert!(t["trapped"].as_u64() >= Some(3), "{t}");

    recover(&host, car).await;
    assert_consistent(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bulkhead_refuses_the_excess_and_serves_the_rest() {
    let host = Host::start(options(
        "[resilience.payment]
timeout_ms = 5000
breaker = { enabled = false }
bulkhead = { max_concurrent = 2, max_queue = 2, max_wait_ms = 3000 }
",
    ));
    let car = host.create_car("Model X", 1_000).await;
    set_faults(&host, json!({"latencyMs": 400})).await;
    let samples = order_load(&host, car, 12, Duration::from_secs(10), 1).await;
    let ok = samples.iter().filter(|s| s.status == 201).count();
    let refused: Vec<&Sample> = samples.iter().filter(|s| s.status == 503).collect();
    assert_eq!(ok + refused.len(), 12, "{samples:?}");
    assert!(ok >= 2, "only {ok} served");
    assert!(refused.len() >= 4, "only {} refused", refused.len());
    for s in &refused {
        assert!(s.body.contains("limit of 2 concurrent"), "{}", s.body);
        assert!(
            s.latency < Duration::from_millis(300),
            "slow refusal {:?}",
            s.latency
        );
    }
    let t = payment_target(&host).await;
    assert_eq!(
        t["refusedByBulkhead"].as_u64(),
        Some(refused.len() as u64),
        "{t}"
    );
    set_faults(&host, json!({})).await;
    assert_eq!(assert_consistent(&host).await, ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_of_an_idempotent_call_never_duplicate_an_effect() {
    let host = Host::start(
        options(
            "[resilience.payment]
retry = { max_attempts = 10, base_backoff_ms = 1, max_backoff_ms = 4, budget_ratio = 1.0, budget_min_per_sec = 1000.0 }
breaker = { consecutive_failures = 0, failure_rate = 0.0 }
",
        )
        .with_chaos(),
    );
    let car = host.create_car("Model Y", 1_000).await;
    let order = host.place_order(car, 1, "alice").await;
    let (oid, pid) = (id(&order, "id"), id(&order, "paymentId"));
    set_faults(&host, json!({"trapRate": 0.5})).await;

    // The read is retried: (almost) every call gets its answer despite 50 % traps.
    let mut ok = 0;
    for _ in 0..30 {
        let r = host.get(&format!("/chaos/payment-of/{oid}")).await;
        if r.status == 200 {
            assert_eq!(r.json()["paymentId"], json!(pid));
            ok += 1;
        }
    }
    assert!(ok >= 29, "only {ok} of 30 reads answered");
    let t = payment_target(&host).await;
    assert!(t["retries"].as_u64() >= Some(5), "{t}");

    // `authorize` is not idempotent: never retried, and each order has exactly one payment
    // even though half the attempts trapped after writing and publishing.
    let calls_before = t["calls"].as_u64().unwrap_or(0);
    let attempts_before = t["attempts"].as_u64().unwrap_or(0);
    let mut placed = 1;
    for i in 0..20 {
        let r = host
            .post_json(
                "/orders",
                &json!({"carId": car, "qty": 1, "customerId": format!("c{i}")}),
            )
            .await;
        assert!(r.status == 201 || r.status == 503, "{}", r.body);
        placed += usize::from(r.status == 201);
    }
    let t = payment_target(&host).await;
    let calls = t["calls"].as_u64().unwrap_or(0) - calls_before;
    let attempts = t["attempts"].as_u64().unwrap_or(0) - attempts_before;
    assert_eq!(calls, attempts, "authorize was retried: {t}");
    set_faults(&host, json!({})).await;
    assert_eq!(assert_consistent(&host).await, placed);
}
