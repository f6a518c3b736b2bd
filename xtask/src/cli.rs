//! The command line: the commands, their arguments and their help texts. The help texts that
//! name packages are built from the package table.

use clap::{Parser, Subcommand, ValueEnum};

use crate::image::Tool;
use crate::packages::{self, HOST, Use, WASM_TARGET};

/// The project's own commands, in plain Rust so they work wherever cargo does.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    after_help = "Run `cargo xtask <COMMAND> --help` for the details of a command."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Add the wasm32-wasip2 target if missing, build the Wasm components and the host
    #[command(after_help = build_help())]
    Build,
    /// Build, then serve the API with ctxhost.toml (arguments go to `ctxhost serve`)
    #[command(after_help = run_help())]
    Run {
        /// Arguments for `ctxhost serve`, after `--` or not (e.g. --listen 127.0.0.1:9090)
        #[arg(
            value_name = "SERVE_ARGS",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        args: Vec<String>,
    },
    /// Build, then run every test, rustfmt and clippy (what CI runs)
    #[command(after_help = test_help())]
    Test,
    /// Build the OCI image: the static host and the plugins, from scratch
    #[command(after_help = IMAGE_HELP)]
    Image {
        /// Build the host in the release profile instead of the (optimised) dev profile
        #[arg(long)]
        release: bool,
        /// The image's name
        #[arg(long, default_value = "ctxhost")]
        name: String,
        /// Its tag (also tagged `latest`) [default: the workspace's version]
        #[arg(long)]
        tag: Option<String>,
        /// The tool that builds it [default: the first of podman, buildah, docker that works]
        #[arg(long, value_enum)]
        tool: Option<Tool>,
    },
    /// Build the host in release, then run a benchmark suite
    #[command(after_help = bench_help())]
    Bench {
        /// The suite to run (the list is below)
        #[arg(value_enum, default_value_t, hide_possible_values = true)]
        suite: Suite,
        /// Arguments for ctxhost-bench, after `--` (see below)
        #[arg(last = true, value_name = "BENCH_ARGS")]
        args: Vec<String>,
    },
    /// Orders under a slowed payment, with and without the circuit breaker
    #[command(after_help = BENCH_RESILIENCE_HELP)]
    BenchResilience {
        /// Concurrent clients posting orders
        #[arg(long, value_name = "N", default_value_t = 100)]
        clients: usize,
        /// Seconds of load per scenario and breaker setting
        #[arg(long, value_name = "S", default_value_t = 10)]
        seconds: u64,
    },
}

/// The benchmark suites of `ctxhost-bench`. Their doc comments are the help's list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Suite {
    /// Upload-to-serving time of a hot swap, compiled on upload and precompiled, and
    /// latency/failures of a read load with and without repeated swaps
    #[default]
    Swap,
    /// GET /cars/{id} through the host (a fresh instance per request, and with
    /// `instance_reuse`) against the same handler written as native axum + redb in the
    /// benchmark process (ratios, target >= 0.70)
    Read,
    /// A minimal wasi:http hello served by the host and by `wasmtime serve` (wasmtime-cli of
    /// the host's wasmtime version, installed with `cargo install` into the target directory
    /// when missing)
    Peer,
    /// Fresh instance of each plugin on an engine configured like the host's (target < 20 us),
    /// and a typed call into a fresh instance
    Instantiate,
    /// POST /orders, durable, at 1, 16 and 64 clients (target 3,000/s at 64)
    Write,
    /// Host resident memory idle, under the read load and the write load
    Memory,
    /// Orders/s from POST to the view and order->view latency, embedded bus against RabbitMQ
    /// (needs the broker on 127.0.0.1:5672)
    Events,
    /// Orders under a slowed payment, with and without its circuit breaker (see
    /// `cargo xtask bench-resilience --help`)
    Resilience,
    /// The host `cargo xtask run` serves (dev profile) against the release host: GET
    /// /cars/{id} (fresh instance per request) and durable POST /orders at 64 clients,
    /// interleaved; ratios run/release (goal >= 0.90)
    Profile,
    /// The release host with metrics on (the default) against off, reads and durable
    /// writes interleaved; paired ratios (cost target under 3 %)
    Metrics,
    /// The release host with traces off, sampled at 100 % and at 0 % (OTLP/HTTP to a sink in
    /// the benchmark process): GET /cars/{id} and durable POST /orders at 64 clients,
    /// interleaved; ratios to off (goals >= 0.85 and >= 0.97)
    Traces,
    /// The release host with authentication off against HS256 and RS256 verification of a
    /// bearer token on every request: GET /cars/{id} and durable POST /orders at 64
    /// clients, interleaved; paired ratios to off (cost targets under 5 % and 10 %)
    Auth,
    /// The release host keeping every event against retention 0s pruned every second:
    /// GET /cars/{id} and durable POST /orders at 64 clients, interleaved; paired ratios and
    /// the write p99 while pruning runs (cost target under 5 %)
    Retention,
    /// The release host's durable POST /orders at 64 clients with and without online
    /// backups (GET /admin/backup) running back to back; paired ratio with/without
    Backup,
    /// A long mixed load (orders, cancels, reads; 8 clients, 100 orders/s) on a host with
    /// event retention 0s, sampling every 10 s the data directory's size, the database's
    /// entries per keyspace and resident memory; prints bytes per settled order, whether the
    /// event log and inboxes stay bounded and the memory slope over the second half, and
    /// writes docs/soak.svg and docs/soak.csv (10 minutes by default; not part of `all`)
    Soak,
    /// Orders/s from POST to the view with the four contexts in one host against the three
    /// hosts of the deployment (order+payment, car, view) on three machines: network
    /// namespaces joined only by RabbitMQ; the one-host layout on such a machine too, and the
    /// embedded bus for reference; paired ratio (needs root and the broker; not part of `all`)
    Machines,
    /// Every suite above except soak and machines, in that order
    All,
}

impl Suite {
    /// Its name on the command lines of xtask and ctxhost-bench.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Suite::Swap => "swap",
            Suite::Read => "read",
            Suite::Peer => "peer",
            Suite::Instantiate => "instantiate",
            Suite::Write => "write",
            Suite::Memory => "memory",
            Suite::Events => "events",
            Suite::Resilience => "resilience",
            Suite::Profile => "profile",
            Suite::Metrics => "metrics",
            Suite::Traces => "traces",
            Suite::Auth => "auth",
            Suite::Retention => "retention",
            Suite::Backup => "backup",
            Suite::Soak => "soak",
            Suite::Machines => "machines",
            Suite::All => "all",
        }
    }

    /// Whether it also runs the dev-profile host of `cargo xtask run`.
    pub(crate) fn needs_run_host(self) -> bool {
        matches!(self, Suite::Profile | Suite::All)
    }
}

const IMAGE_HELP: &str = "\
Builds the Wasm components (see `cargo xtask build --help`) and the host statically linked
for x86_64-unknown-linux-musl (adding the target with rustup, and Debian's musl-tools when
no musl C compiler is found and this runs as root), stages them in target/image/context/
and builds deploy/image/Containerfile from `scratch` (no base image is pulled):

  /usr/bin/ctxhost                       the host, the entry point:
                                         ctxhost serve --config /etc/ctxhost/ctxhost.toml
  /usr/lib/ctxhost/plugins/<name>.wasm   order, payment, car, view
  /etc/ctxhost/ctxhost.toml              deploy/image/ctxhost.toml: the four contexts, the
                                         embedded bus, listening on 0.0.0.0:8080
  /etc/passwd, /etc/group                the user ctxhost (uid and gid 65532), which it runs as
  /var/lib/ctxhost                       the data directory (a volume), owned by 65532

It stops gracefully on SIGTERM. The image is tagged <name>:<tag> and <name>:latest in the
tool's local store and saved as an OCI archive, target/image/ctxhost.oci.tar, which a
cluster can load offline; the last line gives its size. docs/DEPLOYMENT.md goes on from
there.

Examples:
  cargo xtask image
  cargo xtask image --release --tag 1.4.0 --tool buildah";

/// Width the help texts are wrapped to.
const WIDTH: usize = 92;

/// `words` after `first`, wrapped to [`WIDTH`]: the first line starts with `first`, the
/// others with `hanging` spaces. No newline at the end.
fn wrap<S: AsRef<str>>(first: &str, hanging: usize, words: impl IntoIterator<Item = S>) -> String {
    let mut out = String::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in words {
        let word = word.as_ref();
        if !empty && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(hanging);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out
}

/// A command line of the help: `words` (`-p <name>` stays one word) at `indent`, wrapped
/// with its continuation lines two spaces further in.
fn command_line<S: AsRef<str>>(indent: usize, words: impl IntoIterator<Item = S>) -> String {
    wrap(&" ".repeat(indent), indent + 2, words)
}

/// `-p <name>` of each package, each one word.
fn package_args(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("-p {n}")).collect()
}

/// `-p` arguments of the components of each use, one line per use with the use beside it.
fn component_lines(indent: &str) -> String {
    let lines: Vec<(String, &str)> = Use::ALL
        .iter()
        .map(|u| {
            (
                package_args(&packages::components_for(*u)).join(" "),
                u.describe(),
            )
        })
        .filter(|(args, _)| !args.is_empty())
        .collect();
    let width = lines.iter().map(|(args, _)| args.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(args, what)| format!("{indent}{args:<width$}   ({what})\n"))
        .collect()
}

/// The suites and what each measures (from their doc comments), for the help of `bench`.
fn suite_list() -> String {
    let suites: Vec<(String, String)> = Suite::value_variants()
        .iter()
        .filter_map(|suite| {
            let value = suite.to_possible_value()?;
            let mut name = value.get_name().to_owned();
            if *suite == Suite::default() {
                name.push_str(" (default)");
            }
            Some((
                name,
                value
                    .get_help()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ))
        })
        .collect();
    let width = suites.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    suites
        .iter()
        .map(|(name, help)| {
            wrap(
                &format!("  {name:<width$}  "),
                width + 4,
                help.split_whitespace(),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn build_help() -> String {
    format!(
        "\
Adds the {WASM_TARGET} target with rustup when it is not installed, then builds
  1. the Wasm components, in release:
       cargo build --release --target {WASM_TARGET}
{components}     output: target/{WASM_TARGET}/release/<name>.wasm (a `-` in the name becomes `_`)
  2. the host, in the dev profile:
       cargo build -p {HOST}
     output: target/debug/ctxhost
     Cargo.toml compiles the host and its dependencies optimised even in this profile, to
     serve close to the release build (`cargo xtask bench profile` measures it); the same
     build serves `cargo xtask run` and `cargo xtask test`.
target/ is $CARGO_TARGET_DIR when that is set.",
        components = component_lines("         "),
    )
}

fn run_help() -> String {
    "\
Builds everything (see `cargo xtask build --help`), then runs
  target/debug/ctxhost serve --config ctxhost.toml [SERVE_ARGS]...
from the repository root, in the foreground. The API listens on 127.0.0.1:8080 and keeps
its state in ./data unless CTXHOST_LISTEN / CTXHOST_DATA_DIR (or --listen / --data-dir)
say otherwise.

The host is the dev-profile build that `cargo xtask test` also tests. Cargo.toml compiles it
and its dependencies with optimisations and without debug assertions even in that profile
([profile.dev.package.ctxhost] and [profile.dev.package.\"*\"]), aiming at a throughput
within 10 % of the release build without building wasmtime a second time; `cargo xtask
bench profile` measures the difference.

Example: cargo xtask run -- --listen 127.0.0.1:9090"
        .to_owned()
}

fn test_help() -> String {
    let excluded = packages::test_exclusions();
    let unit = packages::native_unit_tests();
    let native = packages::native_lint();
    let wasm = packages::wasm_lint();
    format!(
        "\
Builds everything (see `cargo xtask build --help`), then
  1. makes sure RabbitMQ answers on 127.0.0.1:5672, starting `rabbitmq-server -detached`
     when it does not (the RabbitMQ transport's tests use that broker; fails otherwise);
  2. builds the container image as `cargo xtask image` does (installing podman from
     Debian's packages when no image tool works and this runs as root);
  3. runs the tests of the native packages, the end-to-end tests (tests/) included, with
     CTXHOST_BIN, CTXHOST_PLUGIN_DIR and CTXHOST_IMAGE_ARCHIVE pointing at the built host
     (target/debug/ctxhost), components and image (target/image/ctxhost.oci.tar):
{test_workspace}
  4. runs the native unit tests of the plugins and the SDK:
{test_unit}
  5. cargo fmt --all --check (adding rustfmt with rustup when missing);
  6. runs clippy (adding it with rustup when missing), natively with all targets and for
     {WASM_TARGET}:
{clippy_native}
{clippy_wasm}
  7. cargo doc with warnings denied (broken intra-doc links fail): the host with its
     private items, and the SDK for {WASM_TARGET}.
Every step after the build runs even when an earlier one failed; the command exits
non-zero if any step failed. CI runs this command (.ci/run).",
        test_workspace = command_line(
            7,
            ["cargo test --workspace --no-fail-fast".to_owned()]
                .into_iter()
                .chain(excluded.iter().map(|n| format!("--exclude {n}")))
        ),
        test_unit = command_line(
            7,
            ["cargo test".to_owned()]
                .into_iter()
                .chain(package_args(&unit))
        ),
        clippy_native = command_line(
            7,
            ["cargo clippy".to_owned()]
                .into_iter()
                .chain(package_args(&native))
                .chain(["--all-targets -- -D warnings".to_owned()])
        ),
        clippy_wasm = command_line(
            7,
            [format!("cargo clippy --target {WASM_TARGET}")]
                .into_iter()
                .chain(package_args(&wasm))
                .chain(["-- -D warnings".to_owned()])
        ),
    )
}

fn bench_help() -> String {
    format!(
        "\
Builds the Wasm components (see `cargo xtask build --help`), then the host and ctxhost-bench
in release (and, for `profile` and `all`, the dev-profile host that `cargo xtask run` serves),
and runs, from the repository root, on loopback:
  target/release/ctxhost-bench SUITE --bin target/release/ctxhost
    --plugins target/wasm32-wasip2/release [--run-bin target/debug/ctxhost] [BENCH_ARGS]...
Each suite runs the sides it compares in one run and prints medians and ratios.

Suites:
{suites}

BENCH_ARGS (after `--`): --connections N (default 64), --seconds S (default 5),
--rounds R (interleaved runs of each side of read, peer, profile and traces, default 3);
for soak: --minutes M (of load, default 10), --sample-secs S (default 10), --clients N
(default 8), --rate R (orders/s in all, default 100; 0: unpaced), --plot PATH (default
docs/soak.svg, the CSV beside it).
Example: cargo xtask bench profile -- --seconds 4 --rounds 5
Example: cargo xtask bench soak -- --minutes 2 --sample-secs 5
Record results with the machine and the command in docs/BENCHMARKS.md.",
        suites = suite_list(),
    )
}

const BENCH_RESILIENCE_HELP: &str = "\
The `resilience` suite of `cargo xtask bench` (built the same way): for each scenario
  A: payment sleeps 3000 ms per call, over the 1000 ms call timeout
  B: payment sleeps 400 ms per call, under the timeout but over the 250 ms slow-call threshold
runs N concurrent clients posting orders for S seconds, once with the circuit breaker of
`payment` enabled and once disabled, on 127.0.0.1, and prints the success rate, throughput,
p50/p99 of successful orders and of 503 refusals.";

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    /// The help of `cargo xtask <args>`, as printed.
    fn help(args: &[&str]) -> String {
        let argv = std::iter::once("cargo xtask").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Err(err) if err.kind() == ErrorKind::DisplayHelp => err.to_string(),
            other => panic!("{args:?} printed no help: {other:?}"),
        }
    }

    fn parse(args: &[&str]) -> Result<Cmd, clap::Error> {
        let argv = std::iter::once("cargo xtask").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.command.expect("a command"))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn build_help_names_every_wasm_component() {
        for long in ["--help", "-h"] {
            let text = help(&["build", long]);
            for name in packages::components() {
                assert!(
                    text.contains(&format!("-p {name} ")) || text.contains(&format!("-p {name}\n")),
                    "`cargo xtask build {long}` does not name {name}:\n{text}"
                );
            }
        }
    }

    #[test]
    fn test_help_names_every_package() {
        let text = help(&["test", "--help"]);
        for p in packages::PACKAGES {
            assert!(
                text.contains(p.name),
                "`test --help` does not name {}",
                p.name
            );
        }
    }

    #[test]
    fn bench_help_lists_every_suite() {
        let text = help(&["bench", "--help"]);
        for suite in Suite::value_variants() {
            assert!(
                text.contains(&format!("\n  {} ", suite.name())),
                "`bench --help` does not list {}:\n{text}",
                suite.name()
            );
        }
    }

    #[test]
    fn suite_names_are_the_command_line_names() {
        for suite in Suite::value_variants() {
            let value = suite.to_possible_value().expect("no suite is hidden");
            assert_eq!(value.get_name(), suite.name());
        }
    }

    #[test]
    fn run_passes_arguments_with_or_without_a_separator() {
        for args in [
            &["run", "--", "--listen", "127.0.0.1:9090"][..],
            &["run", "--listen", "127.0.0.1:9090"][..],
        ] {
            match parse(args) {
                Ok(Cmd::Run { args }) => assert_eq!(args, ["--listen", "127.0.0.1:9090"]),
                other => panic!("{args:?} parsed as {other:?}"),
            }
        }
        assert!(matches!(parse(&["run"]), Ok(Cmd::Run { args }) if args.is_empty()));
    }

    #[test]
    fn bench_takes_an_optional_suite_then_arguments_after_the_separator() {
        match parse(&["bench", "profile", "--", "--rounds", "5"]) {
            Ok(Cmd::Bench { suite, args }) => {
                assert_eq!(suite, Suite::Profile);
                assert_eq!(args, ["--rounds", "5"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["bench", "--", "--seconds", "4"]) {
            Ok(Cmd::Bench { suite, args }) => {
                assert_eq!(suite, Suite::Swap);
                assert_eq!(args, ["--seconds", "4"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["bench", "nope"]).is_err());
    }

    #[test]
    fn bench_soak_takes_its_duration_after_the_separator() {
        match parse(&["bench", "soak", "--", "--minutes", "2"]) {
            Ok(Cmd::Bench { suite, args }) => {
                assert_eq!(suite, Suite::Soak);
                assert_eq!(args, ["--minutes", "2"]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn bench_resilience_defaults() {
        match parse(&["bench-resilience"]) {
            Ok(Cmd::BenchResilience { clients, seconds }) => {
                assert_eq!((clients, seconds), (100, 10));
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["bench-resilience", "--clients", "8", "--seconds", "2"]) {
            Ok(Cmd::BenchResilience { clients, seconds }) => {
                assert_eq!((clients, seconds), (8, 2));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn build_and_test_take_no_argument() {
        assert!(parse(&["build", "extra"]).is_err());
        assert!(parse(&["test", "extra"]).is_err());
    }
}
