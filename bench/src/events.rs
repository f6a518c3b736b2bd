//! Events end to end: orders per second from `POST /orders` (201) until the view shows the
//! availability they caused, and the latency from an order to its row in the view, with the
//! embedded bus and with RabbitMQ, side by side. Each order's events cross three contexts
//! (order -> payment's event -> car -> view) through the transport.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::host::BenchHost;
use crate::read::register_car;
use crate::write::order_load;

/// The broker the RabbitMQ runs use (`CTXHOST_BENCH_AMQP_URL` overrides).
const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Stock of the benchmark car: never runs out, so every order is rented.
pub(crate) const STOCK: u64 = 1_000_000_000;
/// How long the view may take to catch up after the load.
const CATCH_UP: Duration = Duration::from_secs(120);

/// What one transport measured.
struct Run {
    transport: &'static str,
    accepted_per_s: f64,
    end_to_end_per_s: f64,
    /// Time from the end of the load until the view had applied every order.
    drain_s: f64,
    idle: Vec<f64>,
    loaded: Vec<f64>,
    failures: u64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Run the events benchmark and print its table.
pub(crate) async fn run(
    bin: &Path,
    plugin_dir: &Path,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let url = std::env::var("CTXHOST_BENCH_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.into());
    let mut runs = Vec::new();
    runs.push(measure(bin, plugin_dir, "embedded", "", clients, seconds).await?);
    // Its queues and exchanges are deleted from the broker when it is dropped.
    match ctxhost_tests::broker::Namespace::on_broker("ctxhost-bench", &url) {
        Ok(namespace) => {
            let amqp = format!(
                "[amqp]\nurl = {url:?}\nnamespace = {:?}\n",
                namespace.name()
            );
            match measure(bin, plugin_dir, "rabbitmq", &amqp, clients, seconds).await {
                Ok(r) => runs.push(r),
                Err(e) => println!("\nRabbitMQ run skipped: {e:#}"),
            }
        }
        Err(e) => println!("\nRabbitMQ run skipped: no broker: {e}"),
    }

    println!(
        "\n## Events end to end: `POST /orders` until the view shows it, {clients} clients, {seconds} s\n"
    );
    println!(
        "| transport | accepted orders/s | end-to-end orders/s | view drain after load s | order->view p50 ms idle | p99 idle | p50 under load | p99 under load | failed |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &runs {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.transport,
            r.accepted_per_s,
            r.end_to_end_per_s,
            r.drain_s,
            quantile(&r.idle, 0.5),
            quantile(&r.idle, 0.99),
            quantile(&r.loaded, 0.5),
            quantile(&r.loaded, 0.99),
            r.failures,
        );
    }
    if let [embedded, rabbit] = runs.as_slice() {
        println!(
            "\nrabbitmq / embedded: end-to-end orders/s {:.2}, idle p50 latency {:.2}, loaded p50 latency {:.2}",
            rabbit.end_to_end_per_s / embedded.end_to_end_per_s,
            quantile(&rabbit.idle, 0.5) / quantile(&embedded.idle, 0.5),
            quantile(&rabbit.loaded, 0.5) / quantile(&embedded.loaded, 0.5),
        );
    }
    Ok(())
}

async fn measure(
    bin: &Path,
    plugin_dir: &Path,
    transport: &'static str,
    extra: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Run> {
    let host = BenchHost::start(bin, plugin_dir, extra)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    if !extra.is_empty() {
        wait_connected(&client, &host.base).await?;
    }
    let (car, _) = register_car(&host.base, STOCK).await?;
    wait_view(
        &client,
        &host.base,
        car,
        STOCK as i64,
        Duration::from_secs(30),
    )
    .await?;

    // At rest: one order at a time.
    let idle = probe_for(
        &client,
        &host.base,
        car,
        "idle",
        Duration::from_secs(2),
        None,
    )
    .await?;

    // Under load: the probe runs beside `clients` closed-loop order clients.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let client = client.clone();
        let base = host.base.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            probe_for(
                &client,
                &base,
                car,
                "loaded",
                Duration::from_secs(3600),
                Some(stop),
            )
            .await
        })
    };
    let started = Instant::now();
    let report = order_load(&host.base, car, clients, seconds).await?;
    let load_ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let loaded = probe.await??;
    // Every order (the load's, including its warm-up, and the probes') is one unit rented.
    let rented = caught_up(&client, &host.base, car).await?;
    let done = Instant::now();
    let accepted = rented as f64;
    Ok(Run {
        transport,
        accepted_per_s: report.throughput(),
        end_to_end_per_s: accepted / (done - started).as_secs_f64(),
        drain_s: (done - load_ended).as_secs_f64(),
        idle,
        loaded,
        failures: report.failures,
    })
}

/// Place orders one at a time as customers `<tag>-<i>` and time each until its view row
/// says RENTED; for `limit`, or until `stop`.
async fn probe_for(
    client: &reqwest::Client,
    base: &str,
    car: u64,
    tag: &str,
    limit: Duration,
    stop: Option<Arc<AtomicBool>>,
) -> anyhow::Result<Vec<f64>> {
    let began = Instant::now();
    let mut samples = Vec::new();
    let mut i = 0u64;
    while began.elapsed() < limit && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
        i += 1;
        let customer = format!("{tag}-{i}");
        let t0 = Instant::now();
        let r = client
            .post(format!("{base}/orders"))
            .json(&serde_json::json!({"carId": car, "qty": 1, "customerId": customer}))
            .send()
            .await?;
        anyhow::ensure!(
            r.status().as_u16() == 201,
            "probe order answered {}",
            r.status()
        );
        let deadline = t0 + Duration::from_secs(60);
        loop {
            let rows: serde_json::Value = client
                .get(format!("{base}/customers/{customer}/orders"))
                .send()
                .await?
                .json()
                .await
                .unwrap_or_default();
            let rented = rows
                .as_array()
                .is_some_and(|rows| rows.iter().any(|r| r["orderStatus"] == "RENTED"));
            if rented {
                samples.push(t0.elapsed().as_secs_f64() * 1e3);
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the view never showed order of {customer}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    Ok(samples)
}

/// Waits until the car context and the view of the host at `base` have applied the events of
/// every order placed so far for `car` (registered with [`STOCK`] units); the units rented.
pub(crate) async fn caught_up(
    client: &reqwest::Client,
    base: &str,
    car: u64,
) -> anyhow::Result<i64> {
    caught_up_across(client, base, base, car).await
}

/// [`caught_up`] with the car context at `car_base` and the view at `view_base`.
pub(crate) async fn caught_up_across(
    client: &reqwest::Client,
    car_base: &str,
    view_base: &str,
    car: u64,
) -> anyhow::Result<i64> {
    let rented = rented_by_car(client, car_base, car).await?;
    wait_view(client, view_base, car, STOCK as i64 - rented, CATCH_UP).await?;
    Ok(rented)
}

/// Units the car context has rented (stock - available).
async fn rented_by_car(client: &reqwest::Client, base: &str, car: u64) -> anyhow::Result<i64> {
    let deadline = Instant::now() + CATCH_UP;
    let mut last = -1;
    // The car context itself may still be applying payments: wait until it stops moving.
    loop {
        let v: serde_json::Value = client
            .get(format!("{base}/cars/{car}"))
            .send()
            .await?
            .json()
            .await?;
        let available = v["available"]
            .as_i64()
            .context("car without availability")?;
        let rented = STOCK as i64 - available;
        if rented == last {
            return Ok(rented);
        }
        anyhow::ensure!(Instant::now() < deadline, "the car context never settled");
        last = rented;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) async fn wait_view(
    client: &reqwest::Client,
    base: &str,
    car: u64,
    available: i64,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let r = client
            .get(format!("{base}/availability/{car}"))
            .send()
            .await?;
        if r.status().is_success() {
            let v: serde_json::Value = r.json().await?;
            if v["available"].as_i64() == Some(available) {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the view did not reach availability {available} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) async fn wait_connected(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: serde_json::Value = client
            .get(format!("{base}/readyz"))
            // The transport's state is shown to the admin token only.
            .bearer_auth(crate::host::ADMIN_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        if v["transport"]["state"] == "connected" {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the host did not connect to the broker: {}",
            v["transport"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
