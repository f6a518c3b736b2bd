//! `cargo xtask bench-resilience`: the circuit-breaker experiment of the source documents,
//! with numbers. A release host runs the four rental contexts with `payment`'s fault
//! injection on; `payment` is slowed; N concurrent clients post orders back to back for a
//! fixed time; the same run is repeated with the breaker disabled. Prints a table of success
//! rate, throughput and latency percentiles (successful orders, and 503 refusals).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

pub const HELP: &str = "\
Usage: cargo xtask bench-resilience [--clients N] [--seconds S]

Builds the host (release) and the plugins, then for each scenario
  A: payment sleeps 3000 ms per call, over the 1000 ms call timeout
  B: payment sleeps 400 ms per call, under the timeout but over the 250 ms slow-call threshold
runs N concurrent clients (default 100) posting orders for S seconds (default 10), once with
the circuit breaker of `payment` enabled and once disabled, on 127.0.0.1, and prints the
success rate, throughput, p50/p99 of successful orders and of 503 refusals.";

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

/// The policy of the benchmark (the breaker part is switched by `enabled`).
fn policy(breaker: bool) -> String {
    format!(
        "[resilience.payment]
timeout_ms = 1000
breaker = {{ enabled = {breaker}, consecutive_failures = 5, failure_rate = 0.5, window = 20, min_calls = 10, slow_call_ms = 250, open_ms = 1000, open_multiplier = 2.0, max_open_ms = 4000, half_open_probes = 3 }}
"
    )
}

#[derive(Default)]
struct Stats {
    ok: Vec<Duration>,
    refused: Vec<Duration>,
    other: usize,
    errors: usize,
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

pub fn run(root: &Path, target_dir: &Path, args: &[String]) -> Result<()> {
    let mut clients = 100usize;
    let mut seconds = 10u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--clients" => clients = v.parse().context("--clients")?,
            "--seconds" => seconds = v.parse().context("--seconds")?,
            other => bail!("unknown argument {other} (see --help)"),
        }
    }
    if !(1..=1000).contains(&clients) || !(1..=120).contains(&seconds) {
        bail!("--clients must be 1..=1000 and --seconds 1..=120");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(root)
        .args(["build", "--release", "-p", "ctxhost"])
        .status()?;
    if !status.success() {
        bail!("building the host failed");
    }
    let status = Command::new(&cargo)
        .current_dir(root)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(["-p", "order", "-p", "payment", "-p", "car", "-p", "view"])
        .status()?;
    if !status.success() {
        bail!("building the plugins failed");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for sc in SCENARIOS {
        for breaker in [true, false] {
            eprintln!(
                "-- {} / breaker {} / {clients} clients / {seconds} s",
                sc.name,
                if breaker { "on" } else { "off" }
            );
            let host = BenchHost::start(target_dir, &policy(breaker))?;
            let stats = rt.block_on(load(
                &host.base,
                sc.latency_ms,
                clients,
                Duration::from_secs(seconds),
            ))?;
            drop(host);
            rows.push((sc.name, breaker, stats));
        }
    }
    println!(
        "\n| scenario | breaker | requests | req/s | success | 201 p50 ms | 201 p99 ms | 503 p50 ms | 503 p99 ms | other | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, breaker, mut s) in rows {
        let n = s.ok.len() + s.refused.len() + s.other + s.errors;
        println!(
            "| {name} | {} | {n} | {:.0} | {:.1} % | {:.1} | {:.1} | {:.2} | {:.2} | {} | {} |",
            if breaker { "on" } else { "off" },
            n as f64 / seconds as f64,
            100.0 * s.ok.len() as f64 / n.max(1) as f64,
            pct(&mut s.ok, 0.5),
            pct(&mut s.ok, 0.99),
            pct(&mut s.refused, 0.5),
            pct(&mut s.refused, 0.99),
            s.other,
            s.errors,
        );
    }
    Ok(())
}

async fn load(base: &str, latency_ms: u64, clients: usize, duration: Duration) -> Result<Stats> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let car: serde_json::Value = client
        .post(format!("{base}/cars"))
        .json(&json!({"name": "bench", "stock": 1_000_000_000u64}))
        .send()
        .await?
        .json()
        .await?;
    let car = car["id"].as_u64().context("car id")?;
    let r = client
        .put(format!("{base}/payments/faults"))
        .json(&json!({ "latencyMs": latency_ms }))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("cannot set the faults: {}", r.status());
    }
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let url = format!("{base}/orders");
        tasks.push(tokio::spawn(async move {
            let mut s = Stats::default();
            // Bounded: at most 100 000 requests per client.
            for _ in 0..100_000 {
                if Instant::now() >= end {
                    break;
                }
                let started = Instant::now();
                let r = client
                    .post(&url)
                    .json(&json!({"carId": car, "qty": 1, "customerId": format!("c{c}")}))
                    .send()
                    .await;
                let status = match r {
                    Ok(r) => {
                        let st = r.status().as_u16();
                        let _ = r.bytes().await;
                        st
                    }
                    Err(_) => 0,
                };
                let t = started.elapsed();
                match status {
                    201 => s.ok.push(t),
                    503 => s.refused.push(t),
                    0 => s.errors += 1,
                    _ => s.other += 1,
                }
            }
            s
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        let s = t.await?;
        all.ok.extend(s.ok);
        all.refused.extend(s.refused);
        all.other += s.other;
        all.errors += s.errors;
    }
    Ok(all)
}

/// A release host on a free port with its own data directory; killed when dropped.
struct BenchHost {
    child: Child,
    dir: PathBuf,
    base: String,
}

impl BenchHost {
    fn start(target_dir: &Path, policy: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "ctxhost-bench-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() + rand_suffix()
        ));
        std::fs::create_dir_all(&dir)?;
        let wasm = target_dir.join("wasm32-wasip2").join("release");
        let mut config = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\ncache_dir = {:?}\n\n{policy}\n",
            dir.join("data"),
            target_dir.join("ctxhost-bench-cache"),
        );
        for name in ["order", "payment", "car", "view"] {
            config.push_str(&format!(
                "[plugins.{name}]\npath = {:?}\n",
                wasm.join(format!("{name}.wasm"))
            ));
        }
        config.push_str("[plugins.payment.config]\nfault-injection = \"true\"\n");
        let cfg = dir.join("ctxhost.toml");
        std::fs::write(&cfg, config)?;
        let bin = target_dir.join("release").join("ctxhost");
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("CTXHOST_LOG", "error")
            .env_remove("CTXHOST_LISTEN")
            .env_remove("CTXHOST_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.trim().strip_prefix("ctxhost listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim_end_matches('/').to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => Ok(BenchHost { child, dir, base }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the host did not start")
            }
        }
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Drop for BenchHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
