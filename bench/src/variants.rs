//! One release binary under several configurations, side by side: the cost of a feature is
//! the throughput with it against without it. Every variant runs its own host at once;
//! rounds are interleaved and the order of the variants rotates from round to round, so
//! drift on a noisy machine hits them alike. Each round measures the read path
//! (`GET /cars/{id}`, a fresh instance per request) and the durable write path
//! (`POST /orders`, 64 clients), and the ratio to the baseline (the first variant) is
//! taken per round, then the median of those paired ratios is reported.

use std::path::Path;
use std::time::Duration;

use crate::events::{STOCK, caught_up};
use crate::host::BenchHost;
use crate::load::Report;
use crate::median;
use crate::read::{Summary, read_load_as, register_car};
use crate::write::order_load_as;

/// Clients of the write load (the write suite's target row).
const WRITE_CLIENTS: usize = 64;

/// A configuration under test: its name, the configuration lines it adds, and its target
/// (the largest throughput cost against the baseline, as a fraction).
pub(crate) struct Variant {
    pub name: &'static str,
    pub config: String,
    pub env: Vec<(String, String)>,
    pub max_cost: Option<f64>,
    /// A bearer token every measured request carries.
    pub bearer: Option<std::sync::Arc<str>>,
}

struct Side {
    variant: Variant,
    host: BenchHost,
    car: u64,
    reads: Vec<Report>,
    writes: Vec<Report>,
}

/// The runs of one path of a side.
type RunsOf = fn(&Side) -> &Vec<Report>;

fn reads_of(s: &Side) -> &Vec<Report> {
    &s.reads
}

fn writes_of(s: &Side) -> &Vec<Report> {
    &s.writes
}

/// Run `variants` (the first is the baseline) and print the tables under `title`.
pub(crate) async fn run(
    title: &str,
    bin: &Path,
    plugin_dir: &Path,
    variants: Vec<Variant>,
    connections: usize,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut sides = Vec::new();
    for variant in variants {
        let host = BenchHost::start_with_env(bin, plugin_dir, &variant.config, &variant.env)?;
        let (car, _) = register_car(&host.base, STOCK).await?;
        caught_up(&client, &host.base, car).await?;
        sides.push(Side {
            variant,
            host,
            car,
            reads: Vec::new(),
            writes: Vec::new(),
        });
    }
    let n = sides.len();
    for round in 0..rounds {
        let order: Vec<usize> = (0..n).map(|i| (i + round) % n).collect();
        for &i in &order {
            let side = &mut sides[i];
            let bearer = side.variant.bearer.clone();
            let report =
                read_load_as(&side.host.base, side.car, connections, seconds, bearer).await?;
            side.reads.push(report);
        }
        for &i in &order {
            let side = &mut sides[i];
            let bearer = side.variant.bearer.clone();
            let report =
                order_load_as(&side.host.base, side.car, WRITE_CLIENTS, seconds, bearer).await?;
            side.writes.push(report);
            caught_up(&client, &side.host.base, side.car).await?;
        }
    }

    println!("\n## {title} ({rounds} interleaved rounds of {seconds} s per load, medians)\n");
    println!("- binary: {}", bin.display());
    let mut verdicts = Vec::new();
    let paths: [(String, RunsOf, &str); 2] = [
        (
            format!(
                "Read path: `GET /cars/{{id}}`, fresh instance per request, {connections} connections"
            ),
            reads_of,
            "req/s",
        ),
        (
            format!(
                "Write path: `POST /orders`, durable (fsync before 201), {WRITE_CLIENTS} clients"
            ),
            writes_of,
            "orders/s",
        ),
    ];
    for (label, runs, unit) in paths {
        println!("\n### {label}\n");
        println!(
            "| variant | {unit} | p50 ms | p99 ms | failed | ratio to baseline (paired median) |"
        );
        println!("| --- | --- | --- | --- | --- | --- |");
        let base = runs(&sides[0]);
        for (i, side) in sides.iter().enumerate() {
            let ratios: Vec<f64> = runs(side)
                .iter()
                .zip(base)
                .map(|(r, b)| r.throughput() / b.throughput())
                .collect();
            let ratio = median(&ratios);
            Summary::of(runs(side)).row(side.variant.name, Some(ratio));
            if i > 0 {
                verdicts.push((
                    side.variant.name,
                    label.clone(),
                    ratio,
                    side.variant.max_cost,
                ));
            }
        }
    }
    println!();
    for (name, label, ratio, max_cost) in verdicts {
        let path = label.split(':').next().unwrap_or("");
        let cost = (1.0 - ratio) * 100.0;
        match max_cost {
            Some(max) => println!(
                "{name}, {path}: ratio {ratio:.3}, cost {cost:.1} % (target under {:.0} %: {})",
                max * 100.0,
                if 1.0 - ratio < max { "met" } else { "not met" }
            ),
            None => println!("{name}, {path}: ratio {ratio:.3}, cost {cost:.1} %"),
        }
    }
    for side in &sides {
        for summary in [Summary::of(&side.reads), Summary::of(&side.writes)] {
            for f in &summary.first_failures {
                println!("  failure ({}): {f}", side.variant.name);
            }
        }
    }
    Ok(())
}

/// Metrics recorded and served (the default) against metrics off.
pub(crate) async fn metrics(
    bin: &Path,
    plugin_dir: &Path,
    connections: usize,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let variants = vec![
        Variant {
            name: "metrics off",
            config: "[telemetry]\nmetrics = false".into(),
            env: Vec::new(),
            max_cost: None,
            bearer: None,
        },
        Variant {
            name: "metrics on (default)",
            config: String::new(),
            env: Vec::new(),
            max_cost: Some(0.03),
            bearer: None,
        },
    ];
    run(
        "Cost of the metrics: on against off",
        bin,
        plugin_dir,
        variants,
        connections,
        seconds,
        rounds,
    )
    .await
}
