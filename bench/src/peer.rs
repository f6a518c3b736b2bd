//! Peer: the same minimal wasi:http "hello" served by this host (`bench-hello`, a context)
//! and by `wasmtime serve` of the same wasmtime version (`bench-hello-proxy`, the same work
//! as a plain `wasi:http/proxy` component), with the same load generator and connections,
//! runs interleaved. `wasmtime` is installed with `cargo install` when missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::host::BenchHost;
use crate::load::{self, Report, Req};
use crate::read::Summary;

/// The wasmtime version of the host, which `wasmtime serve` must match.
const WASMTIME_VERSION: &str = "48.0.8";

/// `wasmtime --version` of `bin`, when it runs.
fn version_of(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A `wasmtime` of the right version: on the PATH, in cargo's bin directory, or in
/// `tools` (where it is installed when none is found).
fn find_or_install_wasmtime(tools: &Path) -> anyhow::Result<PathBuf> {
    let mut candidates = vec![PathBuf::from("wasmtime")];
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        candidates.push(home.join("bin/wasmtime"));
    }
    let local = tools.join("bin/wasmtime");
    candidates.push(local.clone());
    for c in &candidates {
        if let Some(v) = version_of(c) {
            if v.split_whitespace().nth(1) == Some(WASMTIME_VERSION) {
                return Ok(c.clone());
            }
            eprintln!("peer: {} is {v}, not {WASMTIME_VERSION}", c.display());
        }
    }
    eprintln!(
        "peer: installing wasmtime-cli {WASMTIME_VERSION} into {} (cargo install, several minutes)...",
        tools.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "install",
            "wasmtime-cli",
            "--version",
            WASMTIME_VERSION,
            "--locked",
            "--root",
        ])
        .arg(tools)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .context("cannot run cargo install")?;
    anyhow::ensure!(
        status.success(),
        "cargo install wasmtime-cli failed ({status})"
    );
    version_of(&local)
        .filter(|v| v.split_whitespace().nth(1) == Some(WASMTIME_VERSION))
        .map(|_| local.clone())
        .with_context(|| format!("{} does not run after its installation", local.display()))
}

/// A `wasmtime serve` process, killed when dropped.
struct Serve {
    child: Child,
    base: String,
    options: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Wait until `GET {base}/hello` answers 200.
async fn wait_ready(base: &str, mut alive: impl FnMut() -> bool) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/hello")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(alive(), "the server exited before answering");
        anyhow::ensure!(Instant::now() < deadline, "{base}/hello never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Start `wasmtime serve` on `component`, with its pooling allocator when it has one.
async fn start_serve(wasmtime: &Path, component: &Path, log: &Path) -> anyhow::Result<Serve> {
    let help = Command::new(wasmtime)
        .args(["serve", "-O", "help"])
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).to_string();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s
        })
        .unwrap_or_default();
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec![
        "serve".to_string(),
        "--addr".into(),
        addr.clone(),
        "-Scli".into(),
    ];
    if help.contains("pooling-allocator") {
        args.extend(["-O".into(), "pooling-allocator=y".into()]);
    }
    let options = args[1..].join(" ");
    let child = Command::new(wasmtime)
        .args(&args)
        .arg(component)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("cannot start {}", wasmtime.display()))?;
    let mut serve = Serve {
        child,
        base: format!("http://{addr}"),
        options,
    };
    let base = serve.base.clone();
    let child = &mut serve.child;
    wait_ready(&base, || matches!(child.try_wait(), Ok(None)))
        .await
        .with_context(|| format!("wasmtime serve did not start; see {}", log.display()))?;
    Ok(serve)
}

async fn hello_load(base: &str, connections: usize, seconds: u64) -> anyhow::Result<Report> {
    load::run(
        base,
        connections,
        Duration::from_secs(1),
        Duration::from_secs(seconds),
        |_, _| Req::get("/hello"),
    )
    .await
}

/// Run the peer benchmark and print its table.
pub(crate) async fn run(
    bin: &Path,
    plugin_dir: &Path,
    tools: &Path,
    connections: usize,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let hello = plugin_dir.join("bench_hello.wasm");
    let proxy = plugin_dir.join("bench_hello_proxy.wasm");
    for c in [&hello, &proxy] {
        anyhow::ensure!(
            c.exists(),
            "{} is missing: build it with `cargo build --release --target wasm32-wasip2 -p bench-hello -p bench-hello-proxy` (or `cargo xtask build`)",
            c.display()
        );
    }
    let host = BenchHost::start(
        bin,
        plugin_dir,
        &format!("[plugins.hello]\npath = {hello:?}\n"),
    )?;
    wait_ready(&host.base, || true).await?;
    let serve = match find_or_install_wasmtime(tools) {
        Ok(wasmtime) => {
            let log = host.dir.join("wasmtime-serve.log");
            match start_serve(&wasmtime, &proxy, &log).await {
                Ok(s) => Some((s, version_of(&wasmtime).unwrap_or_default())),
                Err(e) => {
                    println!("\npeer: skipping the wasmtime serve comparison: {e:#}");
                    None
                }
            }
        }
        Err(e) => {
            println!(
                "\npeer: skipping the wasmtime serve comparison: no wasmtime {WASMTIME_VERSION} ({e:#})"
            );
            None
        }
    };
    let (mut hosted, mut served) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        hosted.push(hello_load(&host.base, connections, seconds).await?);
        if let Some((s, _)) = &serve {
            served.push(hello_load(&s.base, connections, seconds).await?);
        }
    }
    let h = Summary::of(&hosted);
    println!(
        "\n## Peer: minimal wasi:http hello, `GET /hello` ({connections} connections, {rounds} interleaved runs of {seconds} s each, medians)\n"
    );
    println!("| server | req/s | p50 ms | p99 ms | failed | ratio to wasmtime serve |");
    println!("| --- | --- | --- | --- | --- | --- |");
    match &serve {
        Some((s, version)) => {
            let w = Summary::of(&served);
            h.row(
                "this host (bench_hello.wasm, a context)",
                Some(h.rps / w.rps),
            );
            w.row("`wasmtime serve` (bench_hello_proxy.wasm)", Some(1.0));
            println!(
                "\nhost / wasmtime serve throughput: {:.2} (target > 1); p50 {:.2}x, p99 {:.2}x",
                h.rps / w.rps,
                h.p50 / w.p50,
                h.p99 / w.p99
            );
            println!("wasmtime serve: {version}, options `{}`", s.options);
            for f in &w.first_failures {
                println!("  failure (wasmtime serve): {f}");
            }
        }
        None => h.row("this host (bench_hello.wasm, a context)", None),
    }
    for f in &h.first_failures {
        println!("  failure (host): {f}");
    }
    Ok(())
}
