//! `cargo xtask image`: the OCI image of the host. The host is built statically linked for
//! musl, staged with the four rental plugins, the image's default configuration and its user
//! into a build context, and built `FROM scratch` by `deploy/image/Containerfile` with
//! podman, buildah or docker (whichever works, in that order, or the one asked for). No base
//! image is pulled. The image is then saved as an OCI archive beside the context, which is
//! what a cluster loads offline (`kind load image-archive`, `k3s ctr images import`,
//! `skopeo copy oci-archive:...`) and what the image's test unpacks and runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::commands::build_components;
use crate::packages::HOST;
use crate::toolchain::{ensure_musl_compiler, ensure_target};
use crate::workspace::{Profile, Workspace, run_checked, step, warn};

/// The target the image's host is built for: static by default with musl.
pub(crate) const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The image's user and group: unprivileged, the conventional "nonroot" id.
const UID: u32 = 65532;
/// The plugins the image carries.
const PLUGINS: [&str; 4] = ["order", "payment", "car", "view"];

/// A program that builds images from a Containerfile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Tool {
    /// podman (daemonless; the default when it works)
    Podman,
    /// buildah
    Buildah,
    /// docker (needs its daemon)
    Docker,
}

impl Tool {
    /// Its program name.
    pub(crate) fn program(self) -> &'static str {
        match self {
            Tool::Podman => "podman",
            Tool::Buildah => "buildah",
            Tool::Docker => "docker",
        }
    }

    /// The arguments of a command that succeeds only when the tool can build here (for
    /// docker: when its daemon answers).
    fn probe(self) -> &'static [&'static str] {
        match self {
            Tool::Podman => &["info"],
            Tool::Buildah => &["version"],
            Tool::Docker => &["info"],
        }
    }

    /// Whether it is installed and works.
    pub(crate) fn works(self) -> bool {
        Command::new(self.program())
            .args(self.probe())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The first of podman, buildah and docker that works.
    pub(crate) fn detect() -> Option<Tool> {
        Tool::value_variants().iter().copied().find(|t| t.works())
    }
}

/// What `cargo xtask image` is asked for.
#[derive(Clone, Debug)]
pub(crate) struct ImageOptions {
    /// The host's cargo profile.
    pub profile: Profile,
    /// The image's name (tagged `<name>:<tag>` and `<name>:latest`).
    pub name: String,
    /// Its tag; the workspace's version when `None`.
    pub tag: Option<String>,
    /// The tool; the first that works when `None`.
    pub tool: Option<Tool>,
}

/// Where the image's files go: `target/image/`.
pub(crate) fn image_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("image")
}

/// The OCI archive of the last image built: `target/image/ctxhost.oci.tar`.
pub(crate) fn archive_path(ws: &Workspace) -> PathBuf {
    image_dir(ws).join("ctxhost.oci.tar")
}

/// Builds the components and the static host, stages the context, builds the image and
/// saves it as an OCI archive; prints its size.
pub(crate) fn image(ws: &Workspace, opts: &ImageOptions) -> Result<()> {
    let tool = match opts.tool {
        Some(tool) if tool.works() => tool,
        Some(tool) => bail!(
            "`{program} {probe}` failed: {program} is not installed or cannot build here",
            program = tool.program(),
            probe = tool.probe().join(" ")
        ),
        None => Tool::detect().context(
            "building the image needs podman, buildah or docker (with its daemon running): \
             none works here; install one (Debian: apt-get install podman)",
        )?,
    };
    // No stale archive survives a failed build: the image's test reads this file.
    let archive = archive_path(ws);
    match fs::remove_file(&archive) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", archive.display())),
    }
    build_components(ws)?;
    let host = build_static_host(ws, opts.profile)?;

    let dir = image_dir(ws);
    let context = dir.join("context");
    stage(ws, &host, &context)?;

    let tag = match &opts.tag {
        Some(tag) => tag.clone(),
        None => ws
            .versions
            .get(HOST)
            .cloned()
            .with_context(|| format!("`cargo metadata` gave no version of {HOST}"))?,
    };
    let reference = format!("{}:{tag}", opts.name);
    let latest = format!("{}:latest", opts.name);
    step(&format!("building {reference} with {}", tool.program()));
    let containerfile = ws.root.join("deploy").join("image").join("Containerfile");
    let mut cmd = Command::new(tool.program());
    cmd.arg("build")
        .arg("-f")
        .arg(&containerfile)
        .args(["-t", &reference, "-t", &latest])
        .args([
            "--label",
            &format!("org.opencontainers.image.version={tag}"),
            "--label",
            "org.opencontainers.image.title=ctxhost",
        ])
        .arg(&context);
    run_checked(cmd, "building the image")?;

    step(&format!("saving {reference} to {}", archive.display()));
    let mut cmd = Command::new(tool.program());
    match tool {
        Tool::Podman => {
            cmd.args(["save", "--format", "oci-archive", "-o"])
                .arg(&archive)
                .arg(&reference);
        }
        Tool::Buildah => {
            cmd.arg("push")
                .arg(&reference)
                .arg(format!("oci-archive:{}:{reference}", archive.display()));
        }
        Tool::Docker => {
            cmd.arg("save").arg("-o").arg(&archive).arg(&reference);
        }
    }
    run_checked(cmd, "saving the image")?;

    report_size(&reference, &context, &archive);
    Ok(())
}

/// Builds the host for [`MUSL_TARGET`] in `profile` (a static executable) and returns its
/// path.
fn build_static_host(ws: &Workspace, profile: Profile) -> Result<PathBuf> {
    ensure_target(MUSL_TARGET)?;
    let cc = ensure_musl_compiler()?;
    step(&format!(
        "building the host ({HOST}) for {MUSL_TARGET}, {} profile, statically linked",
        profile.name()
    ));
    let mut cmd = ws.cargo();
    cmd.args(["build", "-p", HOST, "--target", MUSL_TARGET]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    // The C parts of the dependencies (zstd, ring) are compiled for musl too.
    cmd.env(
        format!("CC_{}", MUSL_TARGET.replace('-', "_")),
        cc.as_os_str(),
    );
    run_checked(cmd, "building the static host")?;
    let binary = ws
        .target_dir
        .join(MUSL_TARGET)
        .join(profile.dir())
        .join(HOST);
    if !binary.is_file() {
        bail!("the build left no host at {}", binary.display());
    }
    if let Some(interpreter) = elf_interpreter(&binary)? {
        bail!(
            "{} is dynamically linked (interpreter {interpreter}); a scratch image needs a \
             static executable",
            binary.display()
        );
    }
    Ok(binary)
}

/// Lays out the build context: `rootfs/` (copied to `/`) and `data/` (the data directory,
/// given to the image's user).
fn stage(ws: &Workspace, host: &Path, context: &Path) -> Result<()> {
    step(&format!(
        "staging the image's files in {}",
        context.display()
    ));
    if context.exists() {
        fs::remove_dir_all(context)
            .with_context(|| format!("removing the old context {}", context.display()))?;
    }
    let rootfs = context.join("rootfs");
    let plugins = rootfs.join("usr/lib/ctxhost/plugins");
    for dir in [
        rootfs.join("usr/bin"),
        rootfs.join("etc/ctxhost"),
        plugins.clone(),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::create_dir_all(context.join("data")).context("creating the context's data/")?;

    let staged_host = rootfs.join("usr/bin/ctxhost");
    copy(host, &staged_host, 0o755)?;
    strip_debug_info(&staged_host);
    for name in PLUGINS {
        let wasm = ws.plugin_dir().join(format!("{name}.wasm"));
        copy(&wasm, &plugins.join(format!("{name}.wasm")), 0o644)?;
    }
    copy(
        &ws.root.join("deploy/image/ctxhost.toml"),
        &rootfs.join("etc/ctxhost/ctxhost.toml"),
        0o644,
    )?;
    write(
        &rootfs.join("etc/passwd"),
        &format!(
            "root:x:0:0:root:/:/sbin/nologin\nctxhost:x:{UID}:{UID}:ctxhost:/var/lib/ctxhost:/sbin/nologin\n"
        ),
    )?;
    write(
        &rootfs.join("etc/group"),
        &format!("root:x:0:\nctxhost:x:{UID}:\n"),
    )?;
    Ok(())
}

/// Removes the debug information (line tables) from the staged host, keeping its symbols
/// for backtraces: about half its size. Uses binutils' `strip`, which the musl C compiler
/// comes with; without it the host is shipped as built, with a warning.
fn strip_debug_info(binary: &Path) {
    match Command::new("strip")
        .arg("--strip-debug")
        .arg(binary)
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => warn(&format!(
            "`strip --strip-debug {}` failed ({status}); the image keeps the debug information",
            binary.display()
        )),
        Err(e) => warn(&format!(
            "`strip` could not be run ({e}); the image keeps the host's debug information"
        )),
    }
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", to.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// The program interpreter an ELF executable asks for (`PT_INTERP`), or `None` for a static
/// one. Only 64-bit little-endian ELF is read (the musl target's).
fn elf_interpreter(path: &Path) -> Result<Option<String>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let field = |at: usize, len: usize| -> Result<u64> {
        let slice = bytes
            .get(at..at + len)
            .with_context(|| format!("{} is truncated", path.display()))?;
        let mut buf = [0u8; 8];
        buf[..len].copy_from_slice(slice);
        Ok(u64::from_le_bytes(buf))
    };
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let phoff = usize::try_from(field(0x20, 8)?)?;
    let phentsize = usize::try_from(field(0x36, 2)?)?;
    let phnum = usize::try_from(field(0x38, 2)?)?;
    const PT_INTERP: u64 = 3;
    for i in 0..phnum {
        let header = phoff + i * phentsize;
        if field(header, 4)? == PT_INTERP {
            let offset = usize::try_from(field(header + 0x08, 8)?)?;
            let size = usize::try_from(field(header + 0x20, 8)?)?;
            let raw = bytes
                .get(offset..offset + size)
                .with_context(|| format!("{}: bad PT_INTERP", path.display()))?;
            let text = String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_owned();
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// Prints the image's size: unpacked (its files) and as the archive a cluster loads.
fn report_size(reference: &str, context: &Path, archive: &Path) {
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let rootfs = context.join("rootfs");
    let host = size(&rootfs.join("usr/bin/ctxhost"));
    let plugins: u64 = PLUGINS
        .iter()
        .map(|n| size(&rootfs.join(format!("usr/lib/ctxhost/plugins/{n}.wasm"))))
        .sum();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    step(&format!(
        "built {reference}: {:.1} MiB unpacked (the host {:.1} MiB, the four plugins {:.1} \
         MiB), {:.1} MiB as the archive {}",
        mib(host + plugins),
        mib(host),
        mib(plugins),
        mib(size(archive)),
        archive.display(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_executable_has_no_interpreter_and_a_dynamic_one_names_it() {
        // This test binary is dynamically linked on the gnu target: it names ld.so.
        let me = std::env::current_exe().expect("the test binary");
        let interp = elf_interpreter(&me).expect("readable ELF");
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(
                interp.as_deref().is_some_and(|i| i.contains("ld-linux")),
                "interpreter of a gnu binary: {interp:?}"
            );
        }
        let dir = std::env::temp_dir().join(format!("xtask-elf-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let not_elf = dir.join("not-elf");
        fs::write(&not_elf, b"#!/bin/sh\n").expect("write");
        assert!(elf_interpreter(&not_elf).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
