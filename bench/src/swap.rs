//! Hot swap benchmark: time from upload to the new version serving (compiled on upload, and
//! precompiled), and latency and failures of a steady read load with and without repeated
//! swaps.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use ctxhost_tests::with_marker;

use crate::host::{ADMIN_TOKEN, BenchHost};
use crate::load::{self, Req};
use crate::{median, table_row};

struct Admin {
    client: reqwest::Client,
    base: String,
}

impl Admin {
    /// Deploy and return (server-side switch ms, new version id `car@<digest12>`).
    async fn deploy(&self, bytes: Vec<u8>) -> anyhow::Result<(f64, String)> {
        let r = self
            .client
            .put(format!("{}/admin/plugins/car", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .body(bytes)
            .send()
            .await?;
        let status = r.status();
        let v: serde_json::Value = r.json().await?;
        anyhow::ensure!(status.is_success(), "deploy answered {status}: {v}");
        let digest = v["digest"].as_str().context("no digest")?;
        let short = format!("car@{}", &digest.trim_start_matches("sha256:")[..12]);
        Ok((v["elapsedMs"].as_f64().unwrap_or(f64::NAN), short))
    }

    /// Upload, then poll until a read is answered by the new version: client-side ms.
    async fn upload_to_serving(&self, bytes: Vec<u8>, car: u64) -> anyhow::Result<(f64, f64)> {
        let t0 = Instant::now();
        let (server_ms, version) = self.deploy(bytes).await?;
        loop {
            let r = self
                .client
                .get(format!("{}/cars/{car}", self.base))
                .send()
                .await?;
            let served = r
                .headers()
                .get("x-context-version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if served.as_deref() == Some(version.as_str()) {
                return Ok((server_ms, t0.elapsed().as_secs_f64() * 1e3));
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "new version never served"
            );
        }
    }
}

/// Run the hot swap benchmark and print its table.
pub(crate) async fn run(
    bin: &Path,
    plugin_dir: &Path,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let host = BenchHost::start(bin, plugin_dir, "")?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let admin = Admin {
        client: client.clone(),
        base: host.base.clone(),
    };
    let car: serde_json::Value = client
        .post(format!("{}/cars", host.base))
        .json(&serde_json::json!({"name": "Bench", "stock": 10}))
        .send()
        .await?
        .json()
        .await?;
    let car = car["id"].as_u64().context("no car id")?;
    let bytes = std::fs::read(plugin_dir.join("car.wasm"))?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();

    let mut cold = (Vec::new(), Vec::new());
    for i in 0..5 {
        let (s, c) = admin
            .upload_to_serving(with_marker(&bytes, &format!("cold-{nonce}-{i}")), car)
            .await?;
        cold.0.push(s);
        cold.1.push(c);
    }
    let a = with_marker(&bytes, &format!("a-{nonce}"));
    let b = with_marker(&bytes, &format!("b-{nonce}"));
    admin.deploy(a.clone()).await?;
    admin.deploy(b.clone()).await?;
    let mut warm = (Vec::new(), Vec::new());
    for i in 0..10u32 {
        let v = if i.is_multiple_of(2) {
            a.clone()
        } else {
            b.clone()
        };
        let (s, c) = admin.upload_to_serving(v, car).await?;
        warm.0.push(s);
        warm.1.push(c);
    }

    let rss_before = host.rss_kib();
    let path = format!("/cars/{car}");
    let steady = {
        let path = path.clone();
        load::run(
            &host.base,
            connections,
            Duration::from_secs(1),
            Duration::from_secs(seconds),
            move |_, _| Req::get(path.clone()),
        )
        .await?
    };
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        let admin = Admin {
            client: client.clone(),
            base: host.base.clone(),
        };
        tokio::spawn(async move {
            let mut i = 0u64;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            while !stop.load(Ordering::SeqCst) {
                let v = if i.is_multiple_of(2) {
                    a.clone()
                } else {
                    b.clone()
                };
                if admin.deploy(v).await.is_ok() {
                    swaps.fetch_add(1, Ordering::SeqCst);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let swapping = load::run(
        &host.base,
        connections,
        Duration::from_secs(1),
        Duration::from_secs(seconds),
        move |_, _| Req::get(path.clone()),
    )
    .await?;
    stop.store(true, Ordering::SeqCst);
    swapper.await?;

    println!(
        "\n## Hot swap (context `car`, {connections} connections, {seconds} s per load run)\n"
    );
    println!("| measure | median | ratio |");
    println!("| --- | --- | --- |");
    table_row(
        "upload to serving, compiled on upload (client ms)",
        median(&cold.1),
        None,
    );
    table_row(
        "  of which switch inside the host (ms)",
        median(&cold.0),
        None,
    );
    table_row(
        "upload to serving, precompiled (client ms)",
        median(&warm.1),
        Some(median(&warm.1) / median(&cold.1)),
    );
    table_row(
        "  of which switch inside the host (ms)",
        median(&warm.0),
        None,
    );
    println!("\n| load | req/s | p50 ms | p99 ms | failed | swaps |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, r, n) in [
        ("steady", &steady, 0),
        (
            "swapping every 250 ms",
            &swapping,
            swaps.load(Ordering::SeqCst),
        ),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} | {n} |",
            r.throughput(),
            r.quantile_ms(0.5),
            r.quantile_ms(0.99),
            r.failures
        );
    }
    println!(
        "\nratios (swapping / steady): throughput {:.2}, p50 {:.2}, p99 {:.2}; failed requests during swaps: {}",
        swapping.throughput() / steady.throughput(),
        swapping.quantile_ms(0.5) / steady.quantile_ms(0.5),
        swapping.quantile_ms(0.99) / steady.quantile_ms(0.99),
        swapping.failures
    );
    if let (Some(before), Some(after)) = (rss_before, host.rss_kib()) {
        println!(
            "host resident memory: {before} KiB before the load runs, {after} KiB after {} swaps (ratio {:.2})",
            swaps.load(Ordering::SeqCst),
            after as f64 / before as f64
        );
    }
    for f in steady.first_failures.iter().chain(&swapping.first_failures) {
        println!("  failure: {f}");
    }
    Ok(())
}
