//! The circuit-breaker experiment of the source documents, with numbers: `payment`'s fault
//! injection slows every call; N clients post orders back to back for a fixed time; each
//! scenario runs with the breaker of `payment` enabled and disabled. Prints success rate,
//! throughput and latency percentiles of successful orders (201) and of refusals (503).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::host::BenchHost;
use crate::load::{self, Report};
use crate::read::register_car;
use crate::write::order_request;

/// A slowed `payment`.
struct Scenario {
    name: &'static str,
    latency_ms: u64,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "A: payment 3000 ms > timeout",
        latency_ms: 3000,
    },
    Scenario {
        name: "B: payment 400 ms, slow",
        latency_ms: 400,
    },
];

/// The host configuration: `payment`'s policy (the breaker switched by `breaker`) and its
/// fault injection turned on.
fn config(breaker: bool) -> String {
    format!(
        "[resilience.payment]
timeout_ms = 1000
breaker = {{ enabled = {breaker}, consecutive_failures = 5, failure_rate = 0.5, window = 20, min_calls = 10, slow_call_ms = 250, open_ms = 1000, open_multiplier = 2.0, max_open_ms = 4000, half_open_probes = 3 }}

[plugins.payment.config]
fault-injection = \"true\"
"
    )
}

/// Run every scenario with and without the breaker and print the table.
pub(crate) async fn run(
    bin: &Path,
    plugin_dir: &Path,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for scenario in SCENARIOS {
        for breaker in [true, false] {
            eprintln!(
                "-- {} / breaker {} / {clients} clients / {seconds} s",
                scenario.name,
                if breaker { "on" } else { "off" }
            );
            let host = BenchHost::start(bin, plugin_dir, &config(breaker))?;
            let report = slowed_orders(&host.base, scenario.latency_ms, clients, seconds).await?;
            rows.push((scenario.name, breaker, report));
        }
    }
    println!(
        "\n| scenario | breaker | requests | req/s | success | 201 p50 ms | 201 p99 ms | 503 p50 ms | 503 p99 ms | other | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, breaker, r) in rows {
        let n = r.requests as usize;
        let (ok, refused, errors) = (r.count(201), r.count(503), r.count(0));
        println!(
            "| {name} | {} | {n} | {:.0} | {:.1} % | {:.1} | {:.1} | {:.2} | {:.2} | {} | {} |",
            if breaker { "on" } else { "off" },
            r.throughput(),
            100.0 * ok as f64 / n.max(1) as f64,
            r.status_quantile_ms(201, 0.5),
            r.status_quantile_ms(201, 0.99),
            r.status_quantile_ms(503, 0.5),
            r.status_quantile_ms(503, 0.99),
            n - ok - refused - errors,
            errors,
        );
    }
    Ok(())
}

/// Slow `payment` by `latency_ms`, then a closed-loop order load from the first request
/// (no warm-up: the breaker's reaction is part of what is measured).
async fn slowed_orders(
    base: &str,
    latency_ms: u64,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Report> {
    let (car, _) = register_car(base, 1_000_000_000).await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let r = client
        .put(format!("{base}/payments/faults"))
        .json(&serde_json::json!({ "latencyMs": latency_ms }))
        .send()
        .await
        .context("setting the faults of payment")?;
    anyhow::ensure!(
        r.status().is_success(),
        "cannot set the faults: {}",
        r.status()
    );
    load::run(
        base,
        clients,
        Duration::ZERO,
        Duration::from_secs(seconds),
        move |c, _| order_request(car, c),
    )
    .await
}
