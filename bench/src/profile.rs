//! The run command's host against the release host: the host that `cargo xtask run` serves
//! (the dev profile, which the workspace's Cargo.toml compiles optimised) and the release
//! build, on the read path (`GET /cars/{id}`, a fresh instance per request, as in the read
//! suite) and the durable write path (`POST /orders` at 64 clients, as in the write suite).
//! Both hosts run side by side; rounds are interleaved, and which binary goes first
//! alternates from round to round, so drift on a noisy machine hits both alike. After each
//! write load the host is left to apply the events of its orders, so its background work
//! does not run into the next measurement.

use std::path::Path;
use std::time::Duration;

use crate::events::{STOCK, caught_up};
use crate::host::BenchHost;
use crate::load::Report;
use crate::read::{Summary, read_load, register_car};
use crate::write::order_load;

/// Clients of the write load (the write suite's target row).
const WRITE_CLIENTS: usize = 64;
/// The goal: the run command's host within 10 % of the release host.
const GOAL: f64 = 0.90;

/// One binary under test, and what it measured.
struct Side {
    name: &'static str,
    host: BenchHost,
    /// A car registered with [`STOCK`] units: read by the read load, ordered by the write load.
    car: u64,
    reads: Vec<Report>,
    writes: Vec<Report>,
}

/// Run the profile benchmark and print its tables.
pub(crate) async fn run(
    release_bin: &Path,
    run_bin: &Path,
    plugin_dir: &Path,
    connections: usize,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    if let (Ok(a), Ok(b)) = (release_bin.canonicalize(), run_bin.canonicalize()) {
        anyhow::ensure!(
            a != b,
            "--bin and --run-bin are the same file ({}): the suite compares two builds",
            a.display()
        );
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut sides = Vec::new();
    for (name, bin) in [
        ("release host (`--bin`)", release_bin),
        ("run command's host (`--run-bin`)", run_bin),
    ] {
        let host = BenchHost::start(bin, plugin_dir, "")?;
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

    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let side = &mut sides[i];
            let report = read_load(&side.host.base, side.car, connections, seconds).await?;
            side.reads.push(report);
        }
        for i in order {
            let side = &mut sides[i];
            let report = order_load(&side.host.base, side.car, WRITE_CLIENTS, seconds).await?;
            side.writes.push(report);
            caught_up(&client, &side.host.base, side.car).await?;
        }
    }

    let [release, dev] = sides.as_slice() else {
        anyhow::bail!("expected two hosts");
    };
    let (release_reads, dev_reads) = (Summary::of(&release.reads), Summary::of(&dev.reads));
    let (release_writes, dev_writes) = (Summary::of(&release.writes), Summary::of(&dev.writes));

    println!(
        "\n## Run command's host against the release host ({rounds} interleaved rounds of {seconds} s per load, medians)\n"
    );
    println!("- release host: {}", release_bin.display());
    println!("- run command's host: {}", run_bin.display());
    println!(
        "\n### Read path: `GET /cars/{{id}}`, fresh instance per request, {connections} connections\n"
    );
    println!("| host | req/s | p50 ms | p99 ms | failed | ratio to release |");
    println!("| --- | --- | --- | --- | --- | --- |");
    release_reads.row(release.name, Some(1.0));
    dev_reads.row(dev.name, Some(dev_reads.rps / release_reads.rps));
    println!(
        "\n### Write path: `POST /orders`, durable (fsync before 201), {WRITE_CLIENTS} clients\n"
    );
    println!("| host | orders/s | p50 ms | p99 ms | failed | ratio to release |");
    println!("| --- | --- | --- | --- | --- | --- |");
    release_writes.row(release.name, Some(1.0));
    dev_writes.row(dev.name, Some(dev_writes.rps / release_writes.rps));

    let read_ratio = dev_reads.rps / release_reads.rps;
    let write_ratio = dev_writes.rps / release_writes.rps;
    let verdict = |ratio: f64| if ratio >= GOAL { "met" } else { "not met" };
    println!(
        "\nrun command's host / release host, throughput (goal >= {GOAL:.2}): reads {read_ratio:.2} ({}), writes {write_ratio:.2} ({}); p50 {:.2}x / {:.2}x, p99 {:.2}x / {:.2}x",
        verdict(read_ratio),
        verdict(write_ratio),
        dev_reads.p50 / release_reads.p50,
        dev_writes.p50 / release_writes.p50,
        dev_reads.p99 / release_reads.p99,
        dev_writes.p99 / release_writes.p99,
    );
    for summary in [&release_reads, &dev_reads, &release_writes, &dev_writes] {
        for f in &summary.first_failures {
            println!("  failure: {f}");
        }
    }
    Ok(())
}
