//! What each command does.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cli::Suite;
use crate::image::{self, ImageOptions};
use crate::packages::{self, BENCH, HOST, WASM_TARGET};
use crate::toolchain::{ensure_component, ensure_image_tool, ensure_rabbitmq, ensure_wasm_target};
use crate::workspace::{Profile, Workspace, add_packages, run_checked, step};

/// `cargo xtask build`: the Wasm components (release) and the host (dev profile).
pub(crate) fn build(ws: &Workspace) -> Result<()> {
    build_components(ws)?;
    build_dev_host(ws)?;
    step(&format!(
        "built {} and the components in {}",
        ws.host_binary(Profile::Dev).display(),
        ws.plugin_dir().display()
    ));
    Ok(())
}

/// Adds the Wasm target when missing and builds every Wasm component in release.
pub(crate) fn build_components(ws: &Workspace) -> Result<()> {
    ensure_wasm_target()?;
    let components = ws.existing(&packages::components());
    if components.is_empty() {
        return Ok(());
    }
    step(&format!(
        "building the Wasm components for {WASM_TARGET} (release): {}",
        components.join(", ")
    ));
    let mut cmd = ws.cargo();
    cmd.args(["build", "--release", "--target", WASM_TARGET]);
    add_packages(&mut cmd, &components);
    run_checked(cmd, "building the Wasm components")
}

/// Builds the host in the dev profile (what `run` serves and `test` tests).
fn build_dev_host(ws: &Workspace) -> Result<()> {
    step(&format!(
        "building the host ({HOST}, dev profile, optimised)"
    ));
    let mut cmd = ws.cargo();
    cmd.args(["build", "-p", HOST]);
    run_checked(cmd, "building the host")
}

/// `cargo xtask run`: builds, then replaces this process with `ctxhost serve`.
pub(crate) fn run(ws: &Workspace, serve_args: &[String]) -> Result<()> {
    build(ws)?;
    let binary = ws.host_binary(Profile::Dev);
    step(&format!(
        "starting {} serve --config ctxhost.toml",
        binary.display()
    ));
    let mut cmd = Command::new(&binary);
    cmd.arg("serve")
        .arg("--config")
        .arg(ws.root.join("ctxhost.toml"));
    cmd.args(serve_args);
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

/// `cargo xtask test`: builds, then runs every test and lint, each step even when an
/// earlier one failed, and fails at the end if any did.
pub(crate) fn test(ws: &Workspace) -> Result<()> {
    build(ws)?;
    ensure_rabbitmq()?;

    let mut failures: Vec<String> = Vec::new();
    let mut check = |name: &str, outcome: Result<()>| {
        if let Err(err) = outcome {
            eprintln!("xtask: FAILED: {err:#}");
            failures.push(name.to_owned());
        }
    };

    // The image's test unpacks and runs the image built here.
    step("the container image (what the image's test runs)");
    let image = ensure_image_tool().and_then(|tool| {
        image::image(
            ws,
            &ImageOptions {
                profile: Profile::Dev,
                name: "ctxhost".to_owned(),
                tag: None,
                tool: Some(tool),
            },
        )
    });
    check("the container image", image);

    step(&format!(
        "native and end-to-end tests: {}",
        packages::native_lint().join(", ")
    ));
    let mut cmd = ws.cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"]);
    for name in ws.existing(&packages::test_exclusions()) {
        cmd.args(["--exclude", &name]);
    }
    cmd.env("CTXHOST_BIN", ws.host_binary(Profile::Dev));
    cmd.env("CTXHOST_PLUGIN_DIR", ws.plugin_dir());
    cmd.env("CTXHOST_IMAGE_ARCHIVE", image::archive_path(ws));
    check(
        "native and end-to-end tests",
        run_checked(cmd, "native and end-to-end tests"),
    );

    let unit = ws.existing(&packages::native_unit_tests());
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

    match ensure_component("clippy", &["clippy", "--version"]) {
        Ok(()) => {
            let native = ws.existing(&packages::native_lint());
            if !native.is_empty() {
                step(&format!("cargo clippy (native: {})", native.join(", ")));
                let mut cmd = ws.cargo();
                cmd.arg("clippy");
                add_packages(&mut cmd, &native);
                cmd.args(["--all-targets", "--", "-D", "warnings"]);
                check("clippy (native)", run_checked(cmd, "clippy (native)"));
            }

            let wasm = ws.existing(&packages::wasm_lint());
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

    // Broken intra-doc links and other rustdoc warnings fail the run: the docs of the host
    // (private items included: that is where the architecture is explained) and the SDK
    // (what plugin authors read).
    step("cargo doc (host with private items; SDK for wasm32-wasip2), warnings denied");
    let mut cmd = ws.cargo();
    cmd.args([
        "doc",
        "--no-deps",
        "--document-private-items",
        "-p",
        "ctxhost",
    ]);
    cmd.env("RUSTDOCFLAGS", "-D warnings");
    check("rustdoc (host)", run_checked(cmd, "rustdoc (host)"));
    let mut cmd = ws.cargo();
    cmd.args([
        "doc",
        "--no-deps",
        "--target",
        WASM_TARGET,
        "-p",
        "ctxhost-sdk",
    ]);
    cmd.env("RUSTDOCFLAGS", "-D warnings");
    check("rustdoc (SDK)", run_checked(cmd, "rustdoc (SDK)"));

    if failures.is_empty() {
        step("all tests and checks passed");
        Ok(())
    } else {
        bail!("{} step(s) failed: {}", failures.len(), failures.join(", "))
    }
}

/// `cargo xtask bench`: builds the components, the release host and ctxhost-bench (and the
/// dev host when the suite compares it), then runs the suite.
pub(crate) fn bench(ws: &Workspace, suite: Suite, extra: &[String]) -> Result<()> {
    build_components(ws)?;
    if suite.needs_run_host() {
        build_dev_host(ws)?;
    }
    step("building the host and the benchmarks (release profile)");
    let mut cmd = ws.cargo();
    cmd.args(["build", "--release", "-p", HOST, "-p", BENCH]);
    run_checked(cmd, "building the release host and the benchmarks")?;

    step(&format!("running the `{}` benchmark", suite.name()));
    // The binary just built: `cargo run -p ctxhost-bench` alone would resolve features
    // differently from the build above and compile everything a second time.
    let mut cmd = Command::new(ws.binary(Profile::Release, BENCH));
    cmd.arg(suite.name())
        .arg("--bin")
        .arg(ws.host_binary(Profile::Release))
        .arg("--plugins")
        .arg(ws.plugin_dir());
    if suite.needs_run_host() {
        cmd.arg("--run-bin").arg(ws.host_binary(Profile::Dev));
    }
    cmd.args(extra);
    cmd.current_dir(&ws.root);
    run_checked(cmd, "the benchmark")
}
