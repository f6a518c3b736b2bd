//! What the commands need besides cargo: the Wasm and musl targets, rustfmt and clippy (added
//! with rustup when missing), a C compiler for musl and a tool that builds images (installed
//! from Debian's packages when missing and running as root), and the RabbitMQ broker of the
//! tests (started when not reachable).

use std::env;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::image::Tool;
use crate::packages::WASM_TARGET;
use crate::workspace::{cargo, step};

/// Where the RabbitMQ broker of the tests listens.
const RABBITMQ_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5672);
/// How long a broker started here may take to answer.
const RABBITMQ_START_TIMEOUT: Duration = Duration::from_secs(90);

/// Makes sure the Wasm target is installed, adding it with rustup when it is not.
pub(crate) fn ensure_wasm_target() -> Result<()> {
    ensure_target(WASM_TARGET)
}

/// Makes sure the standard library for `target` is installed, adding it with rustup when it
/// is not.
pub(crate) fn ensure_target(target: &str) -> Result<()> {
    if target_installed(target) {
        return Ok(());
    }
    step(&format!(
        "adding the {target} target (rustup target add {target})"
    ));
    let status = match Command::new("rustup")
        .args(["target", "add", target])
        .status()
    {
        Ok(status) => status,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "the {target} Rust target is not installed and `rustup` was not found to add \
             it; install rustup, or add the {target} standard library to your toolchain \
             by other means"
        ),
        Err(err) => return Err(err).context("running `rustup target add`"),
    };
    if !status.success() {
        bail!("`rustup target add {target}` failed ({status})");
    }
    Ok(())
}

/// Whether the active toolchain has the standard library for `target`.
fn target_installed(target: &str) -> bool {
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
        .join(target)
        .is_dir()
}

/// A C compiler for musl (the C parts of the host's dependencies): `x86_64-linux-musl-gcc`
/// or `musl-gcc`, installing Debian's `musl-tools` when neither is there and this runs as
/// root.
pub(crate) fn ensure_musl_compiler() -> Result<PathBuf> {
    let find = || {
        ["x86_64-linux-musl-gcc", "musl-gcc"]
            .iter()
            .find_map(|name| find_program(name))
    };
    if let Some(cc) = find() {
        return Ok(cc);
    }
    apt_install(
        &["musl-tools"],
        "no C compiler for musl (x86_64-linux-musl-gcc or musl-gcc) was found: install \
         musl-tools (Debian) or musl-gcc",
    )?;
    find().context("musl-gcc is still missing after installing musl-tools")
}

/// A tool that builds images: the first of podman, buildah and docker that works, or podman
/// installed from Debian's packages when none does and this runs as root (what CI does).
pub(crate) fn ensure_image_tool() -> Result<Tool> {
    if let Some(tool) = Tool::detect() {
        return Ok(tool);
    }
    apt_install(
        &["podman"],
        "building the image needs podman, buildah or docker (with its daemon running): none \
         works here; install one (Debian: apt-get install podman)",
    )?;
    Tool::detect().context("podman does not work even after installing it")
}

/// `program` on `PATH`, if there.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Installs Debian `packages` with apt-get (after `apt-get update`) when running as root;
/// otherwise fails with `why`.
fn apt_install(packages: &[&str], why: &str) -> Result<()> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        bail!("{why}");
    }
    step(&format!("installing {} with apt-get", packages.join(" ")));
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("{why} (and apt-get could not be run)"))?;
        if !status.success() {
            bail!("`apt-get {}` failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt(&install)
}

/// Makes sure `cargo <probe>` works, adding the rustup component when it does not.
pub(crate) fn ensure_component(component: &str, probe: &[&str]) -> Result<()> {
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
pub(crate) fn ensure_rabbitmq() -> Result<()> {
    let reachable =
        || TcpStream::connect_timeout(&RABBITMQ_ADDR, Duration::from_millis(500)).is_ok();
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
        .with_context(|| {
            format!(
                "cannot run rabbitmq-server: the RabbitMQ tests need a broker on {RABBITMQ_ADDR}"
            )
        })?;
    if !status.success() {
        bail!("`rabbitmq-server -detached` failed ({status})");
    }
    let deadline = Instant::now() + RABBITMQ_START_TIMEOUT;
    while Instant::now() < deadline {
        if reachable() {
            step(&format!("RabbitMQ answers on {RABBITMQ_ADDR}"));
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!(
        "RabbitMQ did not answer on {RABBITMQ_ADDR} within {} s of `rabbitmq-server -detached`",
        RABBITMQ_START_TIMEOUT.as_secs()
    )
}
