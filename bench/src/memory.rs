//! Memory: resident memory of the host idle with the four rental plugins, then sampled every
//! 100 ms under the read load and under the write load, and idle again afterwards.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::host::BenchHost;
use crate::load::Report;
use crate::median;
use crate::read::{read_load, register_car};
use crate::write::order_load;

/// Samples of the host's resident memory (KiB) taken while `load` runs.
async fn sampled<F>(host: &Arc<BenchHost>, load: F) -> anyhow::Result<(Report, Vec<f64>)>
where
    F: std::future::Future<Output = anyhow::Result<Report>>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (host, stop) = (host.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            // Skip the warm-up second of the load generator.
            tokio::time::sleep(Duration::from_secs(1)).await;
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = host.rss_kib() {
                    samples.push(kib as f64);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };
    let report = load.await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    Ok((report?, samples))
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

/// Run the memory benchmark and print its table.
pub(crate) async fn run(
    bin: &Path,
    plugin_dir: &Path,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let host = Arc::new(BenchHost::start(bin, plugin_dir, "")?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = host.rss_kib().map(|k| k as f64).unwrap_or(f64::NAN);
    let (car, _) = register_car(&host.base, 1_000_000_000).await?;
    let (read, read_rss) = sampled(&host, read_load(&host.base, car, connections, seconds)).await?;
    let (write, write_rss) =
        sampled(&host, order_load(&host.base, car, connections, seconds)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = host.rss_kib().map(|k| k as f64).unwrap_or(f64::NAN);
    let peak = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);

    println!(
        "\n## Memory: host resident memory (four plugins; loads of {connections} connections, {seconds} s, sampled every 100 ms)\n"
    );
    println!("| state | median MiB | peak MiB | ratio to idle (median) | load req/s |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| idle after start | {:.1} | {:.1} | 1.00 | |",
        mib(idle),
        mib(idle)
    );
    for (name, samples, r) in [
        ("read load `GET /cars/{id}`", &read_rss, &read),
        ("write load `POST /orders`", &write_rss, &write),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} | {:.0} |",
            mib(median(samples)),
            mib(peak(samples)),
            median(samples) / idle,
            r.throughput()
        );
    }
    println!(
        "| idle after the loads | {:.1} | {:.1} | {:.2} | |",
        mib(after),
        mib(after),
        after / idle
    );
    for f in read.first_failures.iter().chain(&write.first_failures) {
        println!("  failure: {f}");
    }
    Ok(())
}
