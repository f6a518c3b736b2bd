//! Write path: `POST /orders` end to end at 1, 16 and 64 clients. Each 201 is durable: the
//! host answers only after the fsync of the commit that holds the order and its payment
//! (concurrent commits share one fsync). The events an order publishes are handled by `car`
//! and `view` in the background, inside the same host, as in production.

use std::path::Path;
use std::time::Duration;

use crate::host::BenchHost;
use crate::load::{self, Report, Req};
use crate::read::register_car;

/// Target of the mission at 64 clients, orders per second.
const TARGET: f64 = 3000.0;

/// `POST /orders` of one unit of car `car`, as customer `c<client>`.
pub(crate) fn order_request(car: u64, client: usize) -> Req {
    Req {
        method: reqwest::Method::POST,
        path: "/orders".into(),
        body: Some(
            serde_json::json!({"carId": car, "qty": 1, "customerId": format!("c{client}")})
                .to_string()
                .into_bytes(),
        ),
        bearer: None,
    }
}

/// A closed-loop load of `POST /orders` for car `car` (client `c` orders as customer `c<c>`).
pub(crate) async fn order_load(
    base: &str,
    car: u64,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Report> {
    order_load_as(base, car, clients, seconds, None).await
}

/// [`order_load`] with a bearer token on every request.
pub(crate) async fn order_load_as(
    base: &str,
    car: u64,
    clients: usize,
    seconds: u64,
    bearer: Option<std::sync::Arc<str>>,
) -> anyhow::Result<Report> {
    load::run(
        base,
        clients,
        Duration::from_secs(1),
        Duration::from_secs(seconds),
        move |c, _| order_request(car, c).bearing(bearer.as_ref()),
    )
    .await
}

/// Run the write-path benchmark and print its table.
pub(crate) async fn run(
    bin: &Path,
    plugin_dir: &Path,
    clients: &[usize],
    seconds: u64,
) -> anyhow::Result<()> {
    let host = BenchHost::start(bin, plugin_dir, "")?;
    let (car, _) = register_car(&host.base, 1_000_000_000).await?;
    let mut runs = Vec::new();
    for &n in clients {
        runs.push((n, order_load(&host.base, car, n, seconds).await?));
    }
    println!("\n## Write path: `POST /orders`, durable (fsync before 201), {seconds} s per run\n");
    println!(
        "| clients | orders/s | p50 ms | p99 ms | failed | orders/s per client | ratio to 1 client |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let base_rps = runs
        .first()
        .map(|(_, r)| r.throughput())
        .unwrap_or(f64::NAN);
    for (n, r) in &runs {
        println!(
            "| {n} | {:.0} | {:.2} | {:.2} | {} | {:.1} | {:.2} |",
            r.throughput(),
            r.quantile_ms(0.5),
            r.quantile_ms(0.99),
            r.failures,
            r.throughput() / *n as f64,
            r.throughput() / base_rps
        );
    }
    if let Some((n, r)) = runs.last() {
        println!(
            "\nat {n} clients: {:.0} orders/s, {:.2} of the target of {TARGET:.0} orders/s at 64 clients",
            r.throughput(),
            r.throughput() / TARGET
        );
    }
    for (_, r) in &runs {
        for f in &r.first_failures {
            println!("  failure: {f}");
        }
    }
    Ok(())
}
