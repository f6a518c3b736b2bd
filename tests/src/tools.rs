//! External programs some tests need (`promtool`, a browser, ...): found on `PATH`, or
//! installed from Debian's packages when missing and the tests run as root (as CI does).
//! One installation at a time, whatever the tests running in parallel.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one apt-get run may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);

/// Serialises the package manager's runs within the test process.
static INSTALLING: Mutex<()> = Mutex::new(());

/// `program` on `PATH`, if there.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `program`, installing the Debian `packages` that provide it when it is missing. Panics
/// with what to do when it cannot be installed (not root, no package manager, offline).
pub fn ensure_program(program: &str, packages: &[&str]) -> PathBuf {
    if let Some(p) = find_program(program) {
        return p;
    }
    let _one = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = find_program(program) {
        return p;
    }
    apt_install(
        packages,
        &format!(
            "{program} is missing: install the Debian package(s) {packages:?} (the tests install them themselves when run as root)"
        ),
    );
    find_program(program)
        .unwrap_or_else(|| panic!("{program} is still missing after installing {packages:?}"))
}

/// Install the Debian `packages` (as root: otherwise panic with `why_needed`), with
/// `apt-get update` first.
pub(crate) fn apt_install(packages: &[&str], why_needed: &str) {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(root, "{why_needed}");
    eprintln!("installing {packages:?} with apt-get ...");
    apt_get(&["update", "-qq"]);
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt_get(&install);
}

/// Runs `apt-get <args>` without a terminal within [`INSTALL_TIMEOUT`]; panics with its
/// output when it fails.
fn apt_get(args: &[&str]) {
    let mut child = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run apt-get: {e}"));
    let pipes: Vec<Box<dyn Read + Send>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|mut pipe| {
            std::thread::spawn(move || {
                let mut out = String::new();
                let _ = pipe.read_to_string(&mut out);
                out
            })
        })
        .collect();
    let end = Instant::now() + INSTALL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(200)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "apt-get {} did not finish within {INSTALL_TIMEOUT:?}",
                    args.join(" ")
                );
            }
        }
    };
    let output: Vec<String> = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect();
    assert!(
        status.success(),
        "apt-get {} failed ({status}):\n{}",
        args.join(" "),
        output.join("\n")
    );
}
