//! Soak: a long mixed load (orders, cancels, reads) against a host that keeps no history
//! (event retention `0s`), sampling every few seconds the data directory's size, the
//! database's entries per keyspace (`GET /admin/storage`) and the host's resident memory.
//! Prints the samples as it goes, then bytes per settled order, whether the event log and
//! the inboxes stayed bounded and the memory slope over the second half, and writes a plot
//! (SVG) and the samples (CSV). Targets: history bounded, the data directory growing only
//! with business state, resident memory flat in the second half.

mod analysis;
mod plot;
mod sample;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::host::{ADMIN_TOKEN, BenchHost};
use crate::read::register_car;
use analysis::{Boundedness, Verdict};
use sample::{Sample, Storage};
use workload::{Cars, Counts, Schedule};

/// Retention settings of the soak host: no event kept once every subscriber has it, inbox
/// entries (the deduplication record) for a short while, dead letters for an hour, pruned
/// every second.
const RETENTION: [(&str, &str); 4] = [
    ("CTXHOST_EVENT_RETENTION", "0s"),
    ("CTXHOST_INBOX_RETENTION", "30s"),
    ("CTXHOST_DEAD_LETTER_RETENTION", "1h"),
    ("CTXHOST_PRUNE_INTERVAL", "1s"),
];
/// Units of the car most orders are for: it never runs out.
const STOCK: u64 = 1_000_000_000;
/// How long the clients may follow their last orders after the load.
const DRAIN: Duration = Duration::from_secs(60);
/// Pause between the clients' end and the last sample, for the host to prune once more.
const LAST_PAUSE: Duration = Duration::from_secs(3);

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// How long the clients place orders.
    pub duration: Duration,
    /// Time between two samples.
    pub sample_every: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Orders per second over all clients; 0: as fast as they can.
    pub rate: f64,
    /// Where the plot goes; the CSV goes beside it (same name, `.csv`).
    pub plot: PathBuf,
}

/// Run the soak and print its report.
pub(crate) async fn run(bin: &Path, plugin_dir: &Path, opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.plot.extension().is_none_or(|e| e != "csv"),
        "--plot {} would be overwritten by the CSV of the samples: name the plot .svg",
        opts.plot.display()
    );
    let env: Vec<(String, String)> = RETENTION
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let host = BenchHost::start_with_env(bin, plugin_dir, "", &env)?;
    let cars = Cars {
        plenty: register_car(&host.base, STOCK).await?.0,
        sold_out: register_car(&host.base, 0).await?.0,
    };
    let counts = Arc::new(Counts::default());
    let admin = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let retention = RETENTION
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let rate = if opts.rate > 0.0 {
        format!("{:.0} orders/s", opts.rate)
    } else {
        "unpaced".to_owned()
    };
    println!(
        "\n## Soak: {} clients, {rate}, {:.1} min of load, a sample every {} s; embedded bus; {retention}\n",
        opts.clients,
        opts.duration.as_secs_f64() / 60.0,
        opts.sample_every.as_secs_f64()
    );
    let mut sampler = Sampler {
        host: &host,
        admin,
        counts: &counts,
        start: Instant::now(),
        noted: false,
    };
    sampler.probe().await;
    println!(
        "| t s | data dir MiB | event log | inboxes | contexts | dead letters | RSS MiB | db cache MiB | orders | settled |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");

    let start = Instant::now();
    sampler.start = start;
    let schedule = Schedule {
        start,
        load: opts.duration,
        drain: DRAIN,
        rate: opts.rate,
    };
    let mut load = tokio::spawn({
        let (base, counts) = (host.base.clone(), counts.clone());
        let clients = opts.clients;
        async move { workload::run(&base, cars, clients, schedule, counts).await }
    });
    let mut samples = Vec::new();
    let mut next = start;
    let outcome = loop {
        tokio::select! {
            outcome = &mut load => break outcome,
            () = tokio::time::sleep_until(next.into()) => {
                samples.push(sampler.take().await);
                next += opts.sample_every;
            }
        }
    };
    outcome.context("the soak clients panicked")??;
    tokio::time::sleep(LAST_PAUSE).await;
    samples.push(sampler.take().await);

    let csv = opts.plot.with_extension("csv");
    if let Some(dir) = opts.plot.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let title = format!(
        "ctxhost soak: {} clients, {rate}, {:.1} min; event retention 0s, inbox 30s, prune every 1s",
        opts.clients,
        opts.duration.as_secs_f64() / 60.0
    );
    std::fs::write(&opts.plot, plot::render(&samples, &title))
        .with_context(|| format!("cannot write {}", opts.plot.display()))?;
    std::fs::write(&csv, sample::csv(&samples))
        .with_context(|| format!("cannot write {}", csv.display()))?;
    report(&samples, &counts, opts);
    println!(
        "\nplot: {}\nsamples: {}",
        opts.plot.display(),
        csv.display()
    );
    Ok(())
}

/// Takes the samples.
struct Sampler<'a> {
    host: &'a BenchHost,
    admin: reqwest::Client,
    counts: &'a Counts,
    start: Instant,
    /// Whether the absence of a storage report was already said.
    noted: bool,
}

impl Sampler<'_> {
    /// Says once, before the table, when the host gives no storage report.
    async fn probe(&mut self) {
        if let Err(e) = self.storage().await {
            println!("(no storage report: {e:#}; the keyspace columns stay empty)\n");
            self.noted = true;
        }
    }

    /// One sample, printed as a row of the table.
    async fn take(&mut self) -> Sample {
        let t_s = self.start.elapsed().as_secs_f64();
        let settled = self.counts.settled.load(Ordering::Relaxed);
        let orders = self.counts.created.load(Ordering::Relaxed);
        let storage = match self.storage().await {
            Ok(storage) => storage,
            Err(e) => {
                if !self.noted {
                    println!("(no storage report: {e:#}; the keyspace columns stay empty)");
                    self.noted = true;
                }
                None
            }
        };
        let s = Sample {
            t_s,
            data_bytes: sample::dir_bytes(&self.host.dir.join("data")),
            rss_kib: self.host.rss_kib(),
            orders,
            settled,
            storage,
        };
        let count = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        println!(
            "| {:.0} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.t_s,
            mib(s.data_bytes as f64),
            count(s.event_log()),
            count(s.inboxes()),
            count(s.contexts()),
            count(s.dead_letters()),
            s.rss_kib
                .map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
            s.storage
                .as_ref()
                .and_then(|st| st.cache_bytes)
                .map_or_else(|| "-".to_owned(), |b| format!("{:.1}", mib(b as f64))),
            s.orders,
            s.settled
        );
        s
    }

    /// `GET /admin/storage`: `None` when the host has no such endpoint (404).
    async fn storage(&self) -> anyhow::Result<Option<Storage>> {
        let r = self
            .admin
            .get(format!("{}/admin/storage", self.host.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            anyhow::bail!("GET /admin/storage answered 404");
        }
        let status = r.status();
        anyhow::ensure!(status.is_success(), "GET /admin/storage answered {status}");
        let v: serde_json::Value = r.json().await?;
        Storage::parse(&v)
            .map(Some)
            .with_context(|| format!("GET /admin/storage answered no storage report: {v}"))
    }
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// Prints what the samples say, and a verdict per target.
fn report(samples: &[Sample], counts: &Counts, opts: &Options) {
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "\norders: {} created ({:.1}/s over the load), {} settled ({} rented, {} rejected, {} cancelled), {} not settled {} s after the load; {} requests, {} failed",
        n(&counts.created),
        n(&counts.created) as f64 / opts.duration.as_secs_f64(),
        n(&counts.settled),
        n(&counts.rented),
        n(&counts.rejected),
        n(&counts.cancelled),
        n(&counts.unsettled),
        DRAIN.as_secs(),
        n(&counts.requests),
        n(&counts.failures),
    );
    for f in counts.first_failures() {
        println!("  failure: {f}");
    }
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        println!("no samples");
        return;
    };
    let settled = last.settled.saturating_sub(first.settled);
    let growth = last.data_bytes as f64 - first.data_bytes as f64;
    println!(
        "data directory: {:.1} MiB at the start, {:.1} MiB at the end: {:.0} bytes per settled order over the run ({:.0} bytes / {settled} orders); {} over the second half (least squares against settled orders)",
        mib(first.data_bytes as f64),
        mib(last.data_bytes as f64),
        growth / settled.max(1) as f64,
        growth,
        per_order(
            analysis::bytes_per_order(samples, |s| Some(s.data_bytes)),
            "bytes"
        ),
    );
    if last.context_bytes().is_some() {
        println!(
            "contexts' own state: {} over the second half",
            per_order(
                analysis::bytes_per_order(samples, Sample::context_bytes),
                "bytes"
            )
        );
    }
    let event_log = Boundedness::of(samples, Sample::event_log);
    let inboxes = Boundedness::of(samples, Sample::inboxes);
    for (name, b) in [
        ("event log", &event_log),
        ("inboxes (all contexts)", &inboxes),
    ] {
        match b {
            Some(b) => println!(
                "{name}: {} entries at the end, at most {} (at {:.0} s); {} over the second half",
                b.end,
                b.max.0,
                b.max.1,
                per_order(b.per_order, "entries")
            ),
            None => println!("{name}: no storage report"),
        }
    }
    if let Some(dead) = last.dead_letters() {
        println!("dead letters: {dead} at the end");
    }
    match analysis::memory_slope(samples) {
        Some((per_min, points, _)) => println!(
            "resident memory: {} at the start, {} at the end; {per_min:+.0} KiB per minute over the second half (least squares over {points} samples)",
            rss(first),
            rss(last),
        ),
        None => println!(
            "resident memory: {} at the start, {} at the end; too few samples for a slope",
            rss(first),
            rss(last)
        ),
    }
    let cache_mib = |s: &Sample| {
        s.storage
            .as_ref()
            .and_then(|st| st.cache_bytes)
            .map(|b| mib(b as f64))
    };
    if let (Some(c0), Some(c1), Some((per_min, points, _))) = (
        cache_mib(first),
        cache_mib(last),
        analysis::memory_less_cache_slope(samples),
    ) {
        println!(
            "database page cache: {c0:.1} MiB at the start, {c1:.1} MiB at the end; resident memory less the cache: {per_min:+.0} KiB per minute over the second half (least squares over {points} samples)"
        );
    }

    let log_verdict = event_log.as_ref().map(Boundedness::verdict);
    let inbox_verdict = inboxes.as_ref().map(Boundedness::verdict);
    let unknown = || Verdict::Unknown("no storage report".into());
    println!("\nverdicts:");
    println!(
        "- event log bounded: {}",
        log_verdict.clone().unwrap_or_else(unknown)
    );
    println!(
        "- inboxes bounded: {}",
        inbox_verdict.clone().unwrap_or_else(unknown)
    );
    println!(
        "- data directory grows only with business state: {}",
        analysis::data_verdict(samples, log_verdict.as_ref(), inbox_verdict.as_ref())
    );
    println!(
        "- resident memory flat in the second half: {}",
        analysis::memory_verdict(samples)
    );
}

/// "N <unit> per settled order", or why there is no figure.
fn per_order(slope: Option<f64>, unit: &str) -> String {
    slope.map_or_else(
        || "no slope (too few samples)".to_owned(),
        |s| format!("{s:.1} {unit} per settled order"),
    )
}

fn rss(s: &Sample) -> String {
    s.rss_kib.map_or_else(
        || "-".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}
