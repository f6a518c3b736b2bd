//! The cost of traces: the release host with traces off, sampled at 100 % and at 0 %, the
//! last two exporting over OTLP/HTTP to a sink in this process (it answers 200 to every
//! `POST /v1/traces`), on the read path (`GET /cars/{id}`, a fresh instance per request)
//! and the durable write path (`POST /orders` at 64 clients), through the side-by-side
//! runner of [`crate::variants`]: paired ratios to the host with traces off.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::variants::{self, Variant};

/// Largest throughput cost allowed at 100 % sampling, and at 0 %.
const MAX_COST_FULL: f64 = 0.15;
const MAX_COST_NONE: f64 = 0.03;

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
    let variant = |name, config, max_cost| Variant {
        name,
        config,
        env: Vec::new(),
        max_cost,
        bearer: None,
    };
    let list = vec![
        variant("traces off", String::new(), None),
        variant("sampled 100 %", traced("1.0"), Some(MAX_COST_FULL)),
        variant("sampled 0 %", traced("0.0"), Some(MAX_COST_NONE)),
    ];
    variants::run(
        "Cost of traces: off, sampled at 100 % and at 0 %",
        bin,
        plugin_dir,
        list,
        connections,
        seconds,
        rounds,
    )
    .await?;
    println!(
        "the OTLP sink received {} export requests, {} bytes",
        received.requests.load(Ordering::Relaxed),
        received.bytes.load(Ordering::Relaxed)
    );
    Ok(())
}
