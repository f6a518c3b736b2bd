//! `cargo xtask`: the project's own commands, in plain Rust so they work wherever cargo does.
//!
//! - `build`: adds the `wasm32-wasip2` target when it is missing, builds the plugins (release,
//!   wasm) and the host (debug).
//! - `run`: builds, then runs `ctxhost serve --config ctxhost.toml` in the foreground.
//! - `test`: builds, then runs every test and lint; this is what CI runs.

use std::env;
use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The compilation target of every plugin.
const WASM_TARGET: &str = "wasm32-wasip2";
/// Packages built as Wasm components, in the order the host config lists them.
const WASM_PACKAGES: &[&str] = &[
    "order",
    "payment",
    "car",
    "view",
    "chaos",
    "bad-payments",
    "bench-hello",
    "bench-hello-proxy",
];
/// Packages whose unit tests run natively (the plugins' domain logic and the SDK).
const NATIVE_UNIT_TEST_PACKAGES: &[&str] = &["order", "payment", "car", "view", "ctxhost-sdk"];
/// Packages that are only ever built for Wasm or tested by `NATIVE_UNIT_TEST_PACKAGES`.
const NON_NATIVE_PACKAGES: &[&str] = &[
    "order",
    "payment",
    "car",
    "view",
    "chaos",
    "bad-payments",
    "bench-hello",
    "bench-hello-proxy",
    "ctxhost-sdk",
];
/// Native packages linted with all their targets.
const NATIVE_PACKAGES: &[&str] = &["ctxhost", "xtask", "ctxhost-tests", "ctxhost-bench"];
/// Wasm packages linted for the Wasm target.
const WASM_LINT_PACKAGES: &[&str] = &[
    "order",
    "payment",
    "car",
    "view",
    "chaos",
    "bad-payments",
    "bench-hello",
    "bench-hello-proxy",
    "ctxhost-sdk",
];
/// Where the RabbitMQ broker of the tests listens.
const RABBITMQ_ADDR: &str = "127.0.0.1:5672";

const USAGE: &str = "\
Usage: cargo xtask <COMMAND> [ARGS]

Commands:
  build   Add the wasm32-wasip2 target if missing, build the plugins and the host
  run     Build, then serve the API with ctxhost.toml (extra args go to `ctxhost serve`)
  test    Build, then run every test, rustfmt and clippy (what CI runs)
  bench-resilience  Orders under a slowed payment, with and without the circuit breaker
  bench   Build the host in release, then run the benchmarks (see --help)
  help    Print this help

Run `cargo xtask <COMMAND> --help` for the details of a command.";

const BUILD_HELP: &str = "\
Usage: cargo xtask build

Adds the wasm32-wasip2 target with rustup when it is not installed, then builds
  - the plugins as Wasm components: cargo build --release --target wasm32-wasip2
    -p order -p payment -p car -p view -p chaos
    (output: target/wasm32-wasip2/release/<name>.wasm)
  - the host: cargo build -p ctxhost (output: target/debug/ctxhost)";

const RUN_HELP: &str = "\
Usage: cargo xtask run [-- <ctxhost serve args>...]

Builds everything (see `cargo xtask build --help`), then runs
  target/debug/ctxhost serve --config ctxhost.toml [args...]
from the repository root, in the foreground. The API listens on 127.0.0.1:8080 and keeps
its state in ./data unless CTXHOST_LISTEN / CTXHOST_DATA_DIR (or --listen / --data-dir)
say otherwise. Example: cargo xtask run -- --listen 127.0.0.1:9090";

const BENCH_RESILIENCE_HELP: &str = "\
Usage: cargo xtask bench-resilience [--clients N] [--seconds S]

The `resilience` suite of `cargo xtask bench`: for each scenario
  A: payment sleeps 3000 ms per call, over the 1000 ms call timeout
  B: payment sleeps 400 ms per call, under the timeout but over the 250 ms slow-call threshold
runs N concurrent clients (default 100) posting orders for S seconds (default 10), once with
the circuit breaker of `payment` enabled and once disabled, on 127.0.0.1, and prints the
success rate, throughput, p50/p99 of successful orders and of 503 refusals.";

const TEST_HELP: &str = "\
Usage: cargo xtask test

Builds everything (see `cargo xtask build --help`), then
  1. makes sure RabbitMQ answers on 127.0.0.1:5672, starting `rabbitmq-server -detached`
     when it does not (the RabbitMQ transport's tests use that broker; fails otherwise);
  2. runs the native tests of the host, the xtask and the end-to-end tests (tests/), with
     CTXHOST_BIN and CTXHOST_PLUGIN_DIR pointing at the built host and plugins;
  3. runs the native unit tests of the plugins and the SDK;
  4. cargo fmt --all --check;
  5. cargo clippy -D warnings, natively for the host, xtask and tests, and for
     wasm32-wasip2 for the plugins and the SDK.
Every step after the build runs even when an earlier one failed; the command exits
non-zero if any step failed.";

const BENCH_HELP: &str = "\
Usage: cargo xtask bench [SUITE] [-- <ctxhost-bench args>...]

Builds the plugins and the host (release profile), then runs the benchmark suites of
bench/ on loopback, each side by side in one run, printing medians and ratios.
Suites:
  swap (default)  upload-to-serving time of a hot swap, compiled on upload and
                  precompiled, and latency/failures of a read load with and without
                  repeated swaps.
  read            GET /cars/{id} through the host (a fresh instance per request, and
                  with `instance_reuse`) against the same handler written as native
                  axum + redb in the benchmark process (ratios, target >= 0.70).
  peer            a minimal wasi:http hello served by the host and by `wasmtime serve`
                  (wasmtime-cli of the host's wasmtime version, installed with
                  `cargo install` into the target directory when missing).
  instantiate     fresh instance of each plugin on an engine configured like the
                  host's (target < 20 us), and a typed call into a fresh instance.
  write           POST /orders, durable, at 1, 16 and 64 clients (target 3,000/s at 64).
  memory          host resident memory idle, under the read load and the write load.
  events          orders/s from POST to the view and order->view latency, embedded bus
                  against RabbitMQ (needs the broker on 127.0.0.1:5672).
  resilience      orders under a slowed payment, with and without its circuit breaker.
  all             every suite, in that order.
Options after `--`: --connections N (default 64), --seconds S (default 5),
--rounds R (interleaved runs of each side of read and peer, default 3).
Record results with the machine and the command in docs/BENCHMARKS.md.";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some(command) = args.first() else {
        println!("{USAGE}");
        return Ok(());
    };
    let rest = &args[1..];
    let wants_help = |help: &str| -> bool {
        if rest.first().is_some_and(|a| a == "--help" || a == "-h") {
            println!("{help}");
            true
        } else {
            false
        }
    };
    match command.as_str() {
        "build" => {
            if wants_help(BUILD_HELP) {
                return Ok(());
            }
            no_extra_args("build", rest)?;
            build(&Workspace::load()?)
        }
        "run" => {
            if wants_help(RUN_HELP) {
                return Ok(());
            }
            let passthrough = match rest.first() {
                Some(first) if first == "--" => &rest[1..],
                _ => rest,
            };
            run(&Workspace::load()?, passthrough)
        }
        "bench-resilience" => {
            if wants_help(BENCH_RESILIENCE_HELP) {
                return Ok(());
            }
            // The `resilience` suite, with this command's historical flags and defaults.
            let mut args: Vec<String> = ["--connections", "100", "--seconds", "10"]
                .map(String::from)
                .to_vec();
            for arg in rest {
                args.push(match arg.as_str() {
                    "--clients" => "--connections".to_string(),
                    other => other.to_string(),
                });
            }
            bench(&Workspace::load()?, "resilience", &args)
        }
        "test" => {
            if wants_help(TEST_HELP) {
                return Ok(());
            }
            no_extra_args("test", rest)?;
            test(&Workspace::load()?)
        }
        "bench" => {
            if wants_help(BENCH_HELP) {
                return Ok(());
            }
            let (suite, extra) = match rest.first() {
                Some(first) if first != "--" => (first.as_str(), &rest[1..]),
                _ => ("swap", rest),
            };
            let extra = match extra.first() {
                Some(first) if first == "--" => &extra[1..],
                _ => extra,
            };
            bench(&Workspace::load()?, suite, extra)
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

fn no_extra_args(command: &str, rest: &[String]) -> Result<()> {
    if let Some(arg) = rest.first() {
        bail!("`cargo xtask {command}` takes no argument, got `{arg}` (see --help)");
    }
    Ok(())
}

/// What the commands need to know about the workspace.
struct Workspace {
    /// The repository root (where the workspace `Cargo.toml` is).
    root: PathBuf,
    /// Cargo's target directory (honours `CARGO_TARGET_DIR`).
    target_dir: PathBuf,
    /// Names of the workspace's packages.
    members: Vec<String>,
}

impl Workspace {
    fn load() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask lives inside the workspace")?
            .to_path_buf();
        let output = Command::new(cargo())
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(&root)
            .stderr(Stdio::inherit())
            .output()
            .context("running `cargo metadata`")?;
        if !output.status.success() {
            bail!("`cargo metadata` failed ({})", output.status);
        }
        let metadata: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("parsing `cargo metadata` output")?;
        let target_dir = metadata["target_directory"]
            .as_str()
            .map(PathBuf::from)
            .context("`cargo metadata` gave no target_directory")?;
        let members = metadata["packages"]
            .as_array()
            .context("`cargo metadata` gave no packages")?
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        Ok(Self {
            root,
            target_dir,
            members,
        })
    }

    /// The packages of `wanted` that exist in the workspace, with a warning for the others.
    fn existing(&self, wanted: &[&str]) -> Vec<String> {
        wanted
            .iter()
            .filter(|name| {
                let present = self.members.iter().any(|m| m == *name);
                if !present {
                    warn(&format!(
                        "package `{name}` is not a workspace member; skipping it"
                    ));
                }
                present
            })
            .map(|name| (*name).to_owned())
            .collect()
    }

    fn host_binary(&self) -> PathBuf {
        self.target_dir
            .join("debug")
            .join(format!("ctxhost{}", env::consts::EXE_SUFFIX))
    }

    fn plugin_dir(&self) -> PathBuf {
        self.target_dir.join(WASM_TARGET).join("release")
    }

    fn cargo(&self) -> Command {
        let mut cmd = Command::new(cargo());
        cmd.current_dir(&self.root);
        cmd
    }
}

fn build(ws: &Workspace) -> Result<()> {
    ensure_wasm_target()?;

    let plugins = ws.existing(WASM_PACKAGES);
    if !plugins.is_empty() {
        step(&format!(
            "building the plugins for {WASM_TARGET} (release): {}",
            plugins.join(", ")
        ));
        let mut cmd = ws.cargo();
        cmd.args(["build", "--release", "--target", WASM_TARGET]);
        add_packages(&mut cmd, &plugins);
        run_checked(cmd, "building the plugins")?;
    }

    step("building the host (ctxhost, debug profile)");
    let mut cmd = ws.cargo();
    cmd.args(["build", "-p", "ctxhost"]);
    run_checked(cmd, "building the host")?;

    step(&format!(
        "built {} and the plugins in {}",
        ws.host_binary().display(),
        ws.plugin_dir().display()
    ));
    Ok(())
}

fn bench(ws: &Workspace, suite: &str, extra: &[String]) -> Result<()> {
    build(ws)?;
    step("building the host and the benchmarks (release profile)");
    let mut cmd = ws.cargo();
    cmd.args(["build", "--release", "-p", "ctxhost", "-p", "ctxhost-bench"]);
    run_checked(cmd, "building the release host")?;
    step(&format!("running the `{suite}` benchmark"));
    // The binary just built: `cargo run -p ctxhost-bench` alone would resolve features
    // differently from the build above and compile everything a second time.
    let mut cmd = Command::new(ws.target_dir.join("release").join("ctxhost-bench"));
    cmd.arg(suite)
        .arg("--bin")
        .arg(ws.target_dir.join("release").join("ctxhost"))
        .arg("--plugins")
        .arg(ws.target_dir.join("wasm32-wasip2").join("release"));
    cmd.current_dir(&ws.root);
    cmd.args(extra);
    run_checked(cmd, "the benchmark")
}

fn run(ws: &Workspace, passthrough: &[String]) -> Result<()> {
    build(ws)?;
    let binary = ws.host_binary();
    step(&format!(
        "starting {} serve --config ctxhost.toml",
        binary.display()
    ));
    let mut cmd = Command::new(&binary);
    cmd.arg("serve")
        .arg("--config")
        .arg(ws.root.join("ctxhost.toml"));
    cmd.args(passthrough);
    cmd.current_dir(&ws.root);
    exec(cmd, &binary)
}

/// Replaces this process with `cmd` (so signals such as Ctrl-C reach the host directly).
#[cfg(unix)]
fn exec(mut cmd: Command, binary: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    Err(err).with_context(|| format!("starting {}", binary.display()))
}

#[cfg(not(unix))]
fn exec(mut cmd: Command, binary: &Path) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", binary.display()))?;
    if !status.success() {
        bail!("{} exited with {status}", binary.display());
    }
    Ok(())
}

fn test(ws: &Workspace) -> Result<()> {
    build(ws)?;
    ensure_rabbitmq()?;

    let mut failures: Vec<String> = Vec::new();
    let mut check = |name: &str, outcome: Result<()>| {
        if let Err(err) = outcome {
            eprintln!("xtask: FAILED: {err:#}");
            failures.push(name.to_owned());
        }
    };

    step("native tests: host, xtask, end-to-end (tests/)");
    let mut cmd = ws.cargo();
    cmd.args(["test", "--workspace"]);
    for name in ws.existing(NON_NATIVE_PACKAGES) {
        cmd.args(["--exclude", &name]);
    }
    cmd.env("CTXHOST_BIN", ws.host_binary());
    cmd.env("CTXHOST_PLUGIN_DIR", ws.plugin_dir());
    check(
        "native and end-to-end tests",
        run_checked(cmd, "native and end-to-end tests"),
    );

    let unit = ws.existing(NATIVE_UNIT_TEST_PACKAGES);
    if !unit.is_empty() {
        step(&format!("native unit tests of {}", unit.join(", ")));
        let mut cmd = ws.cargo();
        cmd.arg("test");
        add_packages(&mut cmd, &unit);
        check(
            "plugin and SDK unit tests",
            run_checked(cmd, "plugin and SDK unit tests"),
        );
    }

    step("cargo fmt --all --check");
    match ensure_component("rustfmt", &["fmt", "--version"]) {
        Ok(()) => {
            let mut cmd = ws.cargo();
            cmd.args(["fmt", "--all", "--check"]);
            check("rustfmt", run_checked(cmd, "rustfmt"));
        }
        Err(err) => check("rustfmt", Err(err)),
    }

    step("cargo clippy (native: host, xtask, tests)");
    match ensure_component("clippy", &["clippy", "--version"]) {
        Ok(()) => {
            let mut cmd = ws.cargo();
            cmd.arg("clippy");
            add_packages(&mut cmd, &ws.existing(NATIVE_PACKAGES));
            cmd.args(["--all-targets", "--", "-D", "warnings"]);
            check("clippy (native)", run_checked(cmd, "clippy (native)"));

            let wasm = ws.existing(WASM_LINT_PACKAGES);
            if !wasm.is_empty() {
                step(&format!(
                    "cargo clippy ({WASM_TARGET}: {})",
                    wasm.join(", ")
                ));
                let mut cmd = ws.cargo();
                cmd.args(["clippy", "--target", WASM_TARGET]);
                add_packages(&mut cmd, &wasm);
                cmd.args(["--", "-D", "warnings"]);
                check("clippy (wasm)", run_checked(cmd, "clippy (wasm)"));
            }
        }
        Err(err) => check("clippy", Err(err)),
    }

    if failures.is_empty() {
        step("all tests and checks passed");
        Ok(())
    } else {
        bail!("{} step(s) failed: {}", failures.len(), failures.join(", "))
    }
}

/// Makes sure the Wasm target is installed, adding it with rustup when it is not.
fn ensure_wasm_target() -> Result<()> {
    if wasm_target_installed() {
        return Ok(());
    }
    step(&format!(
        "adding the {WASM_TARGET} target (rustup target add {WASM_TARGET})"
    ));
    let status = match Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
    {
        Ok(status) => status,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "the {WASM_TARGET} Rust target is not installed and `rustup` was not found to add \
             it; install rustup, or add the {WASM_TARGET} standard library to your toolchain \
             by other means"
        ),
        Err(err) => return Err(err).context("running `rustup target add`"),
    };
    if !status.success() {
        bail!("`rustup target add {WASM_TARGET}` failed ({status})");
    }
    Ok(())
}

/// Whether the active toolchain has the standard library for the Wasm target.
fn wasm_target_installed() -> bool {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let Ok(output) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    if !output.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib")
        .join("rustlib")
        .join(WASM_TARGET)
        .is_dir()
}

/// Makes sure `cargo <probe>` works, adding the rustup component when it does not.
fn ensure_component(component: &str, probe: &[&str]) -> Result<()> {
    let works = Command::new(cargo())
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(());
    }
    step(&format!(
        "adding the {component} component (rustup component add {component})"
    ));
    let status = Command::new("rustup")
        .args(["component", "add", component])
        .status()
        .with_context(|| format!("{component} is missing and rustup could not be run to add it"))?;
    if !status.success() {
        bail!("`rustup component add {component}` failed ({status})");
    }
    Ok(())
}

/// Starts RabbitMQ when it is not running yet: the tests of the RabbitMQ transport talk to
/// the real broker on 127.0.0.1:5672.
fn ensure_rabbitmq() -> Result<()> {
    let addr: SocketAddr = RABBITMQ_ADDR.parse().expect("valid address");
    let reachable = || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok();
    if reachable() {
        step(&format!("RabbitMQ answers on {RABBITMQ_ADDR}"));
        return Ok(());
    }
    step(&format!(
        "RabbitMQ not reachable on {RABBITMQ_ADDR}; running `rabbitmq-server -detached`"
    ));
    let status = Command::new("rabbitmq-server")
        .arg("-detached")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context(
            "cannot run rabbitmq-server: the RabbitMQ tests need a broker on 127.0.0.1:5672",
        )?;
    if !status.success() {
        bail!("`rabbitmq-server -detached` failed ({status})");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if reachable() {
            step(&format!("RabbitMQ answers on {RABBITMQ_ADDR}"));
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!("RabbitMQ did not answer on {RABBITMQ_ADDR} within 90 s of `rabbitmq-server -detached`")
}

fn add_packages(cmd: &mut Command, packages: &[String]) {
    for name in packages {
        cmd.args(["-p", name]);
    }
}

fn run_checked(mut cmd: Command, what: &str) -> Result<()> {
    eprintln!("xtask: $ {}", render(&cmd));
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start `{}`", render(&cmd)))?;
    if !status.success() {
        bail!("{what}: `{}` failed ({status})", render(&cmd));
    }
    Ok(())
}

fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

fn step(message: &str) {
    eprintln!("xtask: ==> {message}");
}

fn warn(message: &str) {
    eprintln!("xtask: warning: {message}");
}
