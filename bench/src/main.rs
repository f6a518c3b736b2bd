//! `ctxhost-bench`: benchmarks of the host, side by side in one run, printing medians and
//! ratios (these machines are noisy: never trust a lone absolute figure).

mod auth;
mod backup;
mod events;
mod host;
mod instantiate;
mod load;
mod machines;
mod memory;
mod peer;
mod profile;
mod read;
mod resilience;
mod retention;
mod soak;
mod swap;
mod traces;
mod variants;
mod write;

use std::path::PathBuf;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn table_row(name: &str, value: f64, ratio: Option<f64>) {
    match ratio {
        Some(r) => println!("| {name} | {value:.1} | {r:.3} |"),
        None => println!("| {name} | {value:.1} | |"),
    }
}

/// `text` times `unit` seconds, when it is a positive number (else the usage).
fn positive_secs(text: &str, unit: f64) -> std::time::Duration {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .and_then(|v| std::time::Duration::try_from_secs_f64(v * unit).ok())
        .unwrap_or_else(|| usage())
}

fn usage() -> ! {
    eprintln!(
        "usage: ctxhost-bench <SUITE> [--bin PATH] [--run-bin PATH] [--plugins DIR] [--connections N] [--seconds S] [--rounds R]\n\
         \n  swap         time from upload to serving; latency under load with and without swaps\
         \n  read         GET /cars/{{id}} through the host vs the same handler in native axum + redb\
         \n  peer         a minimal wasi:http hello served by the host vs `wasmtime serve`\
         \n  instantiate  fresh instance per plugin, and a typed call into a fresh instance\
         \n  write        POST /orders (durable) at 1, 16 and 64 clients\
         \n  memory       host resident memory idle, under the read load and the write load\
         \n  events       orders/s from POST to the view and order->view latency, embedded bus vs RabbitMQ\
         \n  resilience   orders under a slowed payment, with and without its circuit breaker\
         \n  profile      reads and durable writes: the run command's host (--run-bin, default\
         \n               target/debug/ctxhost) against the release host (--bin)\
         \n  traces       reads and durable writes with traces off, sampled at 100 % and at 0 %\
         \n  auth         reads and durable writes with authentication off, HS256 and RS256 tokens\
         \n  backup       durable writes with and without online backups running back to back\
         \n  all          every suite above, in that order (not soak, not machines)\
         \n  machines     orders end to end: one host against three hosts on three machines (network\
         \n               namespaces joined by RabbitMQ); needs root and the broker\
         \n  soak         a long mixed load (orders, cancels, reads) with event retention 0s, sampling\
         \n               the data directory, the entries per keyspace and resident memory; writes\
         \n               a plot and the samples (--plot, default docs/soak.svg and docs/soak.csv)\
         \n\
         \nsoak options: [--minutes M] (of load, default 10) [--sample-secs S] (default 10)\
         \n              [--clients N] (default 8) [--rate R] (orders/s in all, default 100; 0: unpaced)\
         \n              [--plot PATH]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(what) = args.next() else { usage() };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut bin = root.join("target/release/ctxhost");
    // The host `cargo xtask run` serves (dev profile), for the `profile` suite.
    let mut run_bin = root.join("target/debug/ctxhost");
    let mut plugins = root.join("target/wasm32-wasip2/release");
    let mut connections = 64usize;
    let mut seconds = 5u64;
    let mut rounds = 3usize;
    let mut soak = soak::Options {
        duration: std::time::Duration::from_secs(600),
        sample_every: std::time::Duration::from_secs(10),
        clients: 8,
        rate: 100.0,
        plot: root.join("docs/soak.svg"),
    };
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--bin" => bin = PathBuf::from(v),
            "--run-bin" => run_bin = PathBuf::from(v),
            "--plugins" => plugins = PathBuf::from(v),
            "--connections" => connections = v.parse().unwrap_or_else(|_| usage()),
            "--seconds" => seconds = v.parse().unwrap_or_else(|_| usage()),
            "--rounds" => rounds = v.parse().unwrap_or_else(|_| usage()),
            "--minutes" => soak.duration = positive_secs(&v, 60.0),
            "--sample-secs" => soak.sample_every = positive_secs(&v, 1.0),
            "--clients" => {
                soak.clients = v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| usage())
            }
            "--rate" => {
                soak.rate = v
                    .parse()
                    .ok()
                    .filter(|r: &f64| *r >= 0.0)
                    .unwrap_or_else(|| usage())
            }
            "--plot" => soak.plot = PathBuf::from(v),
            _ => usage(),
        }
    }
    let tools = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("ctxhost-bench-tools");
    let rounds = rounds.max(1);
    let what = what.as_str();
    let suites: &[&str] = match what {
        "all" => &[
            "swap",
            "read",
            "peer",
            "instantiate",
            "write",
            "memory",
            "events",
            "resilience",
            "profile",
            "metrics",
            "traces",
            "auth",
            "retention",
            "backup",
        ],
        "swap" | "read" | "peer" | "instantiate" | "write" | "memory" | "events" | "resilience"
        | "profile" | "metrics" | "traces" | "auth" | "retention" | "backup" | "soak"
        | "machines" => std::slice::from_ref(&what),
        _ => usage(),
    };
    for suite in suites {
        match *suite {
            "swap" => swap::run(&bin, &plugins, connections, seconds).await?,
            "read" => read::run(&bin, &plugins, connections, seconds, rounds).await?,
            "peer" => peer::run(&bin, &plugins, &tools, connections, seconds, rounds).await?,
            "instantiate" => instantiate::run(&plugins, seconds).await?,
            "write" => write::run(&bin, &plugins, &[1, 16, 64], seconds).await?,
            "memory" => memory::run(&bin, &plugins, connections, seconds).await?,
            "events" => events::run(&bin, &plugins, connections, seconds).await?,
            "resilience" => resilience::run(&bin, &plugins, connections, seconds).await?,
            "profile" => {
                profile::run(&bin, &run_bin, &plugins, connections, seconds, rounds).await?
            }
            "metrics" => variants::metrics(&bin, &plugins, connections, seconds, rounds).await?,
            "traces" => traces::run(&bin, &plugins, connections, seconds, rounds).await?,
            "auth" => auth::run_suite(&bin, &plugins, connections, seconds, rounds).await?,
            "retention" => {
                retention::run_suite(&bin, &plugins, connections, seconds, rounds).await?
            }
            "backup" => backup::run(&bin, &plugins, connections, seconds, rounds).await?,
            "soak" => soak::run(&bin, &plugins, &soak).await?,
            "machines" => machines::run(&bin, &plugins, connections, seconds, rounds).await?,
            _ => usage(),
        }
    }
    Ok(())
}
