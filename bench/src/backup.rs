//! Online backup: durable `POST /orders` per second while backups run back to back
//! (`GET /admin/backup`, streamed and discarded by the benchmark process) against the same
//! load without them, on one host. Rounds alternate which run comes first, the consumers
//! catch up between runs, and the paired ratio (with / without) is taken per round, then
//! its median reported. Back-to-back backups are the worst case: an operator's nightly
//! backup is running for a fraction of the time only. At the end, `ctxhost backup` and
//! `ctxhost restore` of the final database, timed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::events::{STOCK, caught_up};
use crate::host::{ADMIN_TOKEN, BenchHost};
use crate::load::Report;
use crate::median;
use crate::read::register_car;
use crate::write::order_load;

/// One backup taken during a measured run: seconds and bytes.
type Taken = (f64, u64);

/// Take backups of the host at `base` one after the other until `stop` is set (the one in
/// progress then finishes).
async fn backups_until(base: String, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<Taken>> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut taken = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let mut res = client
            .get(format!("{base}/admin/backup"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()?;
        let mut bytes = 0u64;
        while let Some(chunk) = res.chunk().await.context("the backup was cut short")? {
            bytes += chunk.len() as u64;
        }
        taken.push((t0.elapsed().as_secs_f64(), bytes));
    }
    Ok(taken)
}

/// The write load of one run, with backups running throughout when `backups` is set.
async fn run_once(
    host: &BenchHost,
    car: u64,
    clients: usize,
    seconds: u64,
    backups: bool,
) -> anyhow::Result<(Report, Vec<Taken>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let taker = backups.then(|| tokio::spawn(backups_until(host.base.clone(), stop.clone())));
    let report = order_load(&host.base, car, clients, seconds).await;
    stop.store(true, Ordering::Relaxed);
    let taken = match taker {
        Some(t) => t.await??,
        None => Vec::new(),
    };
    Ok((report?, taken))
}

/// Run the backup benchmark and print its table.
pub(crate) async fn run(
    bin: &Path,
    plugin_dir: &Path,
    clients: usize,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let host = BenchHost::start(bin, plugin_dir, "")?;
    let (car, _) = register_car(&host.base, STOCK).await?;
    // A database that is not empty to begin with.
    order_load(&host.base, car, clients, seconds).await?;
    caught_up(&client, &host.base, car).await?;

    let mut rows = Vec::new();
    for round in 0..rounds {
        let mut without = None;
        let mut with = None;
        for backups in [round % 2 == 1, round % 2 == 0] {
            let (report, taken) = run_once(&host, car, clients, seconds, backups).await?;
            caught_up(&client, &host.base, car).await?;
            if backups {
                with = Some((report, taken));
            } else {
                without = Some(report);
            }
        }
        let (Some(without), Some((with, taken))) = (without, with) else {
            anyhow::bail!("a round without both runs");
        };
        rows.push((without, with, taken));
    }

    println!(
        "\n## Online backup: durable `POST /orders` at {clients} clients, without and with backups running back to back ({rounds} rounds of {seconds} s per run, medians)\n"
    );
    println!("- binary: {}", bin.display());
    println!(
        "\n| round | orders/s without | orders/s with | ratio | p99 ms without | p99 ms with | failed | backups | median backup s | backup MB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut ratios = Vec::new();
    for (i, (without, with, taken)) in rows.iter().enumerate() {
        let ratio = with.throughput() / without.throughput();
        ratios.push(ratio);
        let secs: Vec<f64> = taken.iter().map(|t| t.0).collect();
        let size = taken.last().map_or(0, |t| t.1) as f64 / 1e6;
        println!(
            "| {} | {:.0} | {:.0} | {ratio:.3} | {:.2} | {:.2} | {} | {} | {:.2} | {size:.1} |",
            i + 1,
            without.throughput(),
            with.throughput(),
            without.quantile_ms(0.99),
            with.quantile_ms(0.99),
            without.failures + with.failures,
            taken.len(),
            median(&secs),
        );
    }
    let throughput = |f: fn(&(Report, Report, Vec<Taken>)) -> &Report| -> Vec<f64> {
        rows.iter().map(|r| f(r).throughput()).collect()
    };
    println!(
        "\nmedian: {:.0} orders/s without a backup, {:.0} with backups running; paired ratio with/without {:.3}",
        median(&throughput(|r| &r.0)),
        median(&throughput(|r| &r.1)),
        median(&ratios)
    );
    for (without, with, _) in &rows {
        for f in without.first_failures.iter().chain(&with.first_failures) {
            println!("  failure: {f}");
        }
    }
    command_line_round_trip(bin, &host).await
}

/// `ctxhost backup` of the host (idle now) to a file and `ctxhost restore` of that file into
/// a new directory, each timed, with what they print.
async fn command_line_round_trip(bin: &Path, host: &BenchHost) -> anyhow::Result<()> {
    let file = host.dir.join("final.backup");
    let run = |args: Vec<std::ffi::OsString>| {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(args)
            .env("CTXHOST_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("CTXHOST_URL")
            .env_remove("CTXHOST_DATA_DIR");
        async move {
            let t0 = Instant::now();
            let out = cmd.output().await?;
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            anyhow::ensure!(
                out.status.success(),
                "{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok::<_, anyhow::Error>((t0.elapsed().as_secs_f64(), text))
        }
    };
    let (backup_s, backup_said) = run(vec![
        "backup".into(),
        "--url".into(),
        host.base.clone().into(),
        "--to".into(),
        file.clone().into(),
    ])
    .await?;
    let (restore_s, restore_said) = run(vec![
        "restore".into(),
        "--from".into(),
        file.into(),
        "--data-dir".into(),
        host.dir.join("restored").into(),
    ])
    .await?;
    println!("\nThe final database through the command line, the host idle:\n");
    println!("- `ctxhost backup` (stream, write, check): {backup_s:.2} s: {backup_said}");
    println!("- `ctxhost restore` (check, write, rename): {restore_s:.2} s: {restore_said}");
    Ok(())
}
