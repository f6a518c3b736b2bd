//! The workspace as the commands see it (from `cargo metadata`), and running cargo and other
//! programs with their command line echoed.

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::packages::{self, WASM_TARGET};

/// A cargo profile the host is built in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Profile {
    /// `dev`: what `run` serves and `test` tests (output in target/debug).
    Dev,
    /// `release`: what the benchmarks measure (output in target/release).
    Release,
}

impl Profile {
    /// Its name on cargo's command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Release => "release",
        }
    }

    /// The directory of its outputs under the target directory (of a target's directory,
    /// when built for one).
    pub(crate) fn dir(self) -> &'static str {
        match self {
            Profile::Dev => "debug",
            Profile::Release => "release",
        }
    }
}

/// What the commands need to know about the workspace.
pub(crate) struct Workspace {
    /// The repository root (where the workspace `Cargo.toml` is).
    pub root: PathBuf,
    /// Cargo's target directory (honours `CARGO_TARGET_DIR`).
    pub target_dir: PathBuf,
    /// Names of the workspace's members.
    pub members: Vec<String>,
    /// Names of its default members (what a bare `cargo build` builds).
    pub default_members: Vec<String>,
    /// Each member's version, by name.
    pub versions: BTreeMap<String, String>,
}

impl Workspace {
    /// Reads the workspace with `cargo metadata`, and warns where it and the package table
    /// disagree (a member the table does not know is neither built, tested nor linted).
    pub(crate) fn load() -> Result<Self> {
        let ws = Self::read()?;
        for member in &ws.members {
            if !packages::PACKAGES.iter().any(|p| p.name == member) {
                warn(&format!(
                    "workspace member `{member}` is not in xtask's package table \
                     (xtask/src/packages.rs): no command builds, tests or lints it"
                ));
            }
        }
        let native = packages::native_lint();
        for member in &ws.default_members {
            if !native.contains(&member.as_str()) {
                warn(&format!(
                    "default workspace member `{member}` is not a native package of xtask's \
                     package table (xtask/src/packages.rs)"
                ));
            }
        }
        Ok(ws)
    }

    /// Reads the workspace with `cargo metadata`.
    pub(crate) fn read() -> Result<Self> {
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
        let packages = metadata["packages"]
            .as_array()
            .context("`cargo metadata` gave no packages")?;
        let name_of = |id: &serde_json::Value| -> Result<String> {
            packages
                .iter()
                .find(|p| p["id"] == *id)
                .and_then(|p| p["name"].as_str())
                .map(str::to_owned)
                .with_context(|| format!("`cargo metadata`: no package with id {id}"))
        };
        let ids = |key: &str| -> Result<Vec<String>> {
            metadata[key]
                .as_array()
                .with_context(|| format!("`cargo metadata` gave no {key}"))?
                .iter()
                .map(name_of)
                .collect()
        };
        let versions = packages
            .iter()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_owned(),
                    p["version"].as_str()?.to_owned(),
                ))
            })
            .collect();
        Ok(Self {
            versions,
            members: ids("workspace_members")?,
            default_members: ids("workspace_default_members")?,
            root,
            target_dir,
        })
    }

    /// The packages of `wanted` that exist in the workspace, with a warning for the others.
    pub(crate) fn existing(&self, wanted: &[&str]) -> Vec<String> {
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

    /// The binary `name` built in `profile`.
    pub(crate) fn binary(&self, profile: Profile, name: &str) -> PathBuf {
        self.target_dir
            .join(profile.dir())
            .join(format!("{name}{}", env::consts::EXE_SUFFIX))
    }

    /// The host binary built in `profile`.
    pub(crate) fn host_binary(&self, profile: Profile) -> PathBuf {
        self.binary(profile, "ctxhost")
    }

    /// Where the Wasm components are built.
    pub(crate) fn plugin_dir(&self) -> PathBuf {
        self.target_dir.join(WASM_TARGET).join("release")
    }

    /// `cargo` run from the repository root.
    pub(crate) fn cargo(&self) -> Command {
        let mut cmd = Command::new(cargo());
        cmd.current_dir(&self.root);
        cmd
    }
}

/// Adds `-p <name>` for each package.
pub(crate) fn add_packages(cmd: &mut Command, packages: &[String]) {
    for name in packages {
        cmd.args(["-p", name]);
    }
}

/// Runs `cmd` with its command line echoed; an error when it cannot start or fails.
pub(crate) fn run_checked(mut cmd: Command, what: &str) -> Result<()> {
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

/// The cargo that runs xtask (`CARGO`), or the one on the `PATH`.
pub(crate) fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// Announces a step.
pub(crate) fn step(message: &str) {
    eprintln!("xtask: ==> {message}");
}

/// Prints a warning.
pub(crate) fn warn(message: &str) {
    eprintln!("xtask: warning: {message}");
}
