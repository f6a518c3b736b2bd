//! External programs some tests need (`promtool`, a browser, ...): found on `PATH`, or
//! installed from Debian's packages when missing and the tests run as root (as CI does).
//! One installation at a time, whatever the tests running in parallel.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

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
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "{program} is missing: install the Debian package(s) {packages:?} (the tests install them themselves when run as root)"
    );
    let run = |args: &[&str]| {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap_or_else(|e| panic!("cannot run apt-get to install {packages:?}: {e}"));
        assert!(status.success(), "apt-get {args:?} failed: {status}");
    };
    eprintln!("installing {packages:?} for {program}");
    run(&["update", "-qq"]);
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(packages);
    run(&install);
    find_program(program)
        .unwrap_or_else(|| panic!("{program} is still missing after installing {packages:?}"))
}
