//! `ctxhost-bench`: benchmarks of the host, side by side in one run, printing medians and
//! ratios (these machines are noisy: never trust a lone absolute figure).

mod host;
mod load;
mod swap;

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

fn usage() -> ! {
    eprintln!(
        "usage: ctxhost-bench <swap> [--bin PATH] [--plugins DIR] [--connections N] [--seconds S]\n\
         \n  swap   time from upload to serving; latency under load with and without swaps"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(what) = args.next() else { usage() };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut bin = root.join("target/release/ctxhost");
    let mut plugins = root.join("target/wasm32-wasip2/release");
    let mut connections = 64usize;
    let mut seconds = 5u64;
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--bin" => bin = PathBuf::from(v),
            "--plugins" => plugins = PathBuf::from(v),
            "--connections" => connections = v.parse().unwrap_or_else(|_| usage()),
            "--seconds" => seconds = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    match what.as_str() {
        "swap" => swap::run(&bin, &plugins, connections, seconds).await,
        _ => usage(),
    }
}
