//! What the commands need besides cargo: the Wasm target, rustfmt and clippy (added with
//! rustup when missing), and the RabbitMQ broker of the tests (started when not reachable).

use std::env;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::packages::WASM_TARGET;
use crate::workspace::{cargo, step};

/// Where the RabbitMQ broker of the tests listens.
const RABBITMQ_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5672);
/// How long a broker started here may take to answer.
const RABBITMQ_START_TIMEOUT: Duration = Duration::from_secs(90);

/// Makes sure the Wasm target is installed, adding it with rustup when it is not.
pub(crate) fn ensure_wasm_target() -> Result<()> {
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
