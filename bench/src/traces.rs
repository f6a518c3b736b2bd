//! The cost of traces: the release host with traces off, sampled at 100 % and at 0 %, the
//! last two exporting over OTLP/HTTP to a sink in this process (it answers 200 to every
//! `POST /v1/traces`), on the read path (`GET /cars/{id}`, a fresh instance per request)
//! and the durable write path (`POST /orders` at 64 clients). The three hosts run side by
//! side; rounds are interleaved, and the order of the hosts rotates from round to round, so
//! drift on a noisy machine hits all alike. Medians; ratios to the host with traces off.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::events::{STOCK, caught_up};
use crate::host::BenchHost;
use crate::load::Report;
use crate::read::{Summary, read_load, register_car};
use crate::write::order_load;

/// Clients of the write load (the write suite's target row).
const WRITE_CLIENTS: usize = 64;
/// Largest cost allowed at 100 % sampling, and at 0 %.
const GOAL_FULL: f64 = 0.85;
const GOAL_NONE: f64 = 0.97;

/// What the OTLP sink received.
#[derive(Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// Start the OTLP/HTTP sink on a free port; its base URL.
async fn start_sink(received: Arc<Received>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                received.requests.fetch_add(1, Ordering::Relaxed);
                received
                    .bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                // An empty ExportTraceServiceResponse.
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::new(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("the OTLP sink stopped: {e}");
        }
    });
    Ok(format!("http://{addr}"))
}

/// One host under test, and what it measured.
struct Side {
    name: &'static str,
    host: BenchHost,
    car: u64,
    reads: Vec<Report>,
    writes: Vec<Report>,
}

/// Run the traces benchmark and print its tables.
pub(crate) async fn run(
    bin: &Path,
    plugin_dir: &Path,
    connections: usize,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let received = Arc::new(Received::default());
    let sink = start_sink(received.clone()).await?;
    let traced = |ratio: &str| {
        format!(
            "[telemetry]\nendpoint = {sink:?}\nsampler = \"parentbased_traceidratio\"\nsampler_arg = {ratio}\n"
        )
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut sides = Vec::new();
    for (name, extra) in [
        ("traces off", String::new()),
        ("sampled 100 %", traced("1.0")),
        ("sampled 0 %", traced("0.0")),
    ] {
        let host = BenchHost::start(bin, plugin_dir, &extra)?;
        let (car, _) = register_car(&host.base, STOCK).await?;
        caught_up(&client, &host.base, car).await?;
        sides.push(Side {
            name,
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
            let report = read_load(&side.host.base, side.car, connections, seconds).await?;
            side.reads.push(report);
        }
        for &i in &order {
            let side = &mut sides[i];
            let report = order_load(&side.host.base, side.car, WRITE_CLIENTS, seconds).await?;
            side.writes.push(report);
            caught_up(&client, &side.host.base, side.car).await?;
        }
    }

    let reads: Vec<Summary> = sides.iter().map(|s| Summary::of(&s.reads)).collect();
    let writes: Vec<Summary> = sides.iter().map(|s| Summary::of(&s.writes)).collect();
    println!(
        "\n## Cost of traces ({rounds} interleaved rounds of {seconds} s per load, medians; host {})\n",
        bin.display()
    );
    println!(
        "\n### Read path: `GET /cars/{{id}}`, fresh instance per request, {connections} connections\n"
    );
    println!("| traces | req/s | p50 ms | p99 ms | failed | ratio to off |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (side, summary) in sides.iter().zip(&reads) {
        summary.row(side.name, Some(summary.rps / reads[0].rps));
    }
    println!(
        "\n### Write path: `POST /orders`, durable (fsync before 201), {WRITE_CLIENTS} clients\n"
    );
    println!("| traces | orders/s | p50 ms | p99 ms | failed | ratio to off |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (side, summary) in sides.iter().zip(&writes) {
        summary.row(side.name, Some(summary.rps / writes[0].rps));
    }
    let verdict = |ratio: f64, goal: f64| if ratio >= goal { "met" } else { "not met" };
    let ratio = |s: &[Summary], i: usize| s[i].rps / s[0].rps;
    println!(
        "\nthroughput with traces / without: 100 % reads {:.3}, writes {:.3} (goal >= {GOAL_FULL:.2}: {}, {}); 0 % reads {:.3}, writes {:.3} (goal >= {GOAL_NONE:.2}: {}, {})",
        ratio(&reads, 1),
        ratio(&writes, 1),
        verdict(ratio(&reads, 1), GOAL_FULL),
        verdict(ratio(&writes, 1), GOAL_FULL),
        ratio(&reads, 2),
        ratio(&writes, 2),
        verdict(ratio(&reads, 2), GOAL_NONE),
        verdict(ratio(&writes, 2), GOAL_NONE),
    );
    println!(
        "the OTLP sink received {} export requests, {} bytes",
        received.requests.load(Ordering::Relaxed),
        received.bytes.load(Ordering::Relaxed)
    );
    for summary in reads.iter().chain(&writes) {
        for f in &summary.first_failures {
            println!("  failure: {f}");
        }
    }
    Ok(())
}
