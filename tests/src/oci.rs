//! An OCI image run as a container runtime would run it, without one: [`OciImage::unpack`]
//! reads an OCI archive (as `cargo xtask image` saves it) and lays its layers out as a root
//! filesystem; [`Container::start`] runs the image's entry point and command in it, chrooted,
//! as the image's user, with the root filesystem mounted read-only, directories of the test
//! mounted as its volume, ConfigMaps or Secrets ([`Mount`]), the image's environment (and
//! what the test adds) only, and a network namespace of its own (a [`Machine`]).
//!
//! Needs root (mounts, chroot, setns) and `tar`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::host::{ready_address, sigterm_and_wait};
use crate::http::Api;
use crate::netns::{Machine, enter_raw, open_netns};
use crate::tools::ensure_program;

/// How long the container may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The archive of the image under test: `CTXHOST_IMAGE_ARCHIVE` (set by `cargo xtask test`)
/// or `target/image/ctxhost.oci.tar`; panics when it is not there.
pub fn image_archive() -> PathBuf {
    let path = std::env::var_os("CTXHOST_IMAGE_ARCHIVE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("image")
                .join("ctxhost.oci.tar")
        });
    assert!(
        path.is_file(),
        "image archive {} not found: run `cargo xtask image` first",
        path.display()
    );
    path
}

/// An unpacked image: its configuration and its root filesystem.
pub struct OciImage {
    /// The image configuration's `config` object (User, Env, Entrypoint, Cmd, ...).
    pub config: Value,
    /// The manifest's layers (media type and size of each).
    pub layers: Vec<Value>,
    /// Where its layers were unpacked.
    pub rootfs: PathBuf,
}

impl OciImage {
    /// Unpacks the OCI archive `archive` into `dir` (`dir/oci` the archive, `dir/rootfs` the
    /// layers, in order).
    pub fn unpack(archive: &Path, dir: &Path) -> OciImage {
        ensure_program("tar", &["tar"]);
        let oci = dir.join("oci");
        let rootfs = dir.join("rootfs");
        fs::create_dir_all(&oci).expect("create the archive's directory");
        fs::create_dir_all(&rootfs).expect("create the root filesystem's directory");
        tar(&[
            "-xf".as_ref(),
            archive.as_os_str(),
            "-C".as_ref(),
            oci.as_os_str(),
        ]);
        let read_json = |path: &Path| -> Value {
            let text =
                fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            serde_json::from_slice(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
        };
        let blob = |digest: &Value| -> PathBuf {
            let digest = digest
                .as_str()
                .unwrap_or_else(|| panic!("a digest that is not a string: {digest}"));
            let (algorithm, hex) = digest
                .split_once(':')
                .unwrap_or_else(|| panic!("a digest without an algorithm: {digest}"));
            oci.join("blobs").join(algorithm).join(hex)
        };
        let index = read_json(&oci.join("index.json"));
        let manifests = index["manifests"]
            .as_array()
            .unwrap_or_else(|| panic!("index.json without manifests: {index}"));
        assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
        let manifest = read_json(&blob(&manifests[0]["digest"]));
        let config = read_json(&blob(&manifest["config"]["digest"]));
        let layers = manifest["layers"]
            .as_array()
            .unwrap_or_else(|| panic!("a manifest without layers: {manifest}"))
            .clone();
        for layer in &layers {
            tar(&[
                "--numeric-owner".as_ref(),
                "-xpf".as_ref(),
                blob(&layer["digest"]).as_os_str(),
                "-C".as_ref(),
                rootfs.as_os_str(),
            ]);
        }
        OciImage {
            config: config["config"].clone(),
            layers,
            rootfs,
        }
    }

    /// Every file and symbolic link of the root filesystem, as paths from `/`, with its
    /// size (directories left out).
    pub fn files(&self) -> BTreeMap<String, u64> {
        let mut files = BTreeMap::new();
        let mut dirs = vec![self.rootfs.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).expect("read the root filesystem") {
                let entry = entry.expect("a directory entry");
                let meta = fs::symlink_metadata(entry.path()).expect("an entry's metadata");
                if meta.is_dir() {
                    dirs.push(entry.path());
                } else {
                    let path = entry
                        .path()
                        .strip_prefix(&self.rootfs)
                        .expect("under the root filesystem")
                        .to_string_lossy()
                        .into_owned();
                    files.insert(format!("/{path}"), meta.len());
                }
            }
        }
        files
    }

    /// A string list of the configuration (`Entrypoint`, `Cmd`, `Env`), empty when absent.
    pub fn strings(&self, key: &str) -> Vec<String> {
        self.config[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The image's user as `(uid, gid)`, from `User` (`uid:gid` or `uid`, numeric).
    pub fn user(&self) -> (u32, u32) {
        let user = self.config["User"].as_str().unwrap_or("");
        let (uid, gid) = user.split_once(':').unwrap_or((user, user));
        let parse = |s: &str| {
            s.parse::<u32>()
                .unwrap_or_else(|_| panic!("the image's User `{user}` is not numeric"))
        };
        (parse(uid), parse(gid))
    }
}

/// A directory of the test bound into a [`Container`], as a volume, ConfigMap or Secret is.
pub struct Mount {
    /// The directory on this machine.
    pub source: PathBuf,
    /// Where the container sees it.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Mount {
    /// `source` at `target`, writable (a volume).
    pub fn volume(source: &Path, target: &str) -> Mount {
        Mount {
            source: source.to_path_buf(),
            target: target.to_owned(),
            read_only: false,
        }
    }

    /// `source` at `target`, read-only (a ConfigMap or a Secret).
    pub fn read_only(source: &Path, target: &str) -> Mount {
        Mount {
            read_only: true,
            ..Mount::volume(source, target)
        }
    }
}

/// The image's entry point running on a [`Machine`].
pub struct Container {
    child: Option<Child>,
    api: Api,
    log: PathBuf,
}

impl Container {
    /// Runs `image`'s `Entrypoint` + `Cmd` in its root filesystem as its user, in `machine`'s
    /// network namespace, with `mounts` bound into it (their mount points made as a runtime
    /// would) and the rest read-only; `env` is added to the image's environment. Waits for
    /// the host's ready line and talks to it at the machine's address on `port`. The
    /// container's stderr goes to `log` (appended).
    pub fn start(
        image: &OciImage,
        machine: &Machine,
        port: u16,
        mounts: &[Mount],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Container {
        let argv: Vec<String> = image
            .strings("Entrypoint")
            .into_iter()
            .chain(image.strings("Cmd"))
            .collect();
        assert!(!argv.is_empty(), "the image has no entry point or command");
        let (uid, gid) = image.user();
        let workdir = image.config["WorkingDir"]
            .as_str()
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_owned();

        let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("a path without NUL");
        let rootfs = cstr(&image.rootfs);
        // (source, mount point, flags of a read-only remount, or None to stay writable)
        let binds: Vec<(CString, CString, Option<libc::c_ulong>)> = mounts
            .iter()
            .map(|m| {
                let point = image.rootfs.join(m.target.trim_start_matches('/'));
                fs::create_dir_all(&point)
                    .unwrap_or_else(|e| panic!("mount point {}: {e}", point.display()));
                let read_only = m.read_only.then(|| {
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | mount_flags(&m.source)
                });
                (cstr(&m.source), cstr(&point), read_only)
            })
            .collect();
        let workdir_c = CString::new(workdir).expect("a working directory without NUL");
        let slash = CString::new("/").expect("no NUL");
        let netns = open_netns(&machine.netns_path());
        let locked = mount_flags(&image.rootfs);

        let mut err_log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the container's log");
        writeln!(err_log, "===== container start =====").expect("write the container's log");

        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_log));
        for pair in image.strings("Env") {
            if let Some((key, value)) = pair.split_once('=') {
                cmd.env(key, value);
            }
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let netns_fd = netns.as_raw_fd();
        // SAFETY: the closure runs between fork and exec and makes system calls only
        // (async-signal-safe); every pointer it passes was made before the fork and lives in
        // the closure.
        unsafe {
            cmd.pre_exec(move || {
                let _keep = &netns;
                let check = |rc: libc::c_int| {
                    if rc == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                };
                let null = std::ptr::null::<libc::c_char>();
                enter_raw(netns_fd)?;
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    null,
                    slash.as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    rootfs.as_ptr(),
                    rootfs.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    null,
                    rootfs.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked,
                    std::ptr::null(),
                ))?;
                for (source, point, read_only) in &binds {
                    check(libc::mount(
                        source.as_ptr(),
                        point.as_ptr(),
                        null,
                        libc::MS_BIND,
                        std::ptr::null(),
                    ))?;
                    if let Some(flags) = read_only {
                        check(libc::mount(
                            null,
                            point.as_ptr(),
                            null,
                            *flags,
                            std::ptr::null(),
                        ))?;
                    }
                }
                check(libc::chroot(rootfs.as_ptr()))?;
                check(libc::chdir(workdir_c.as_ptr()))?;
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the image's entry point {argv:?}: {e}"));

        let rx = ready_address(child.stdout.take().expect("piped stdout"));
        let mut container = Container {
            child: Some(child),
            api: Api::new(
                format!("{}:{port}", machine.addr())
                    .parse()
                    .expect("the machine's address"),
            ),
            log: log.to_path_buf(),
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                assert_eq!(
                    addr,
                    format!("0.0.0.0:{port}"),
                    "the image's host listens elsewhere"
                );
            }
            Err(e) => {
                let status = container.kill();
                panic!(
                    "the image's host did not print its listening line within \
                     {START_TIMEOUT:?} ({e}; exit {status:?})\n{}",
                    container.log_text()
                );
            }
        }
        container
    }

    /// A handle for HTTP calls at the machine's address.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; `None` (after a SIGKILL) when
    /// it does not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        sigterm_and_wait(&mut child, timeout)
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// What it wrote to stderr.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl std::ops::Deref for Container {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- the container's log ---\n{}", self.log_text());
        }
    }
}

/// The flags of the mount holding `path` that a read-only bind remount must keep (a
/// remount may not drop `nosuid`, `nodev` or `noexec` where they are locked).
fn mount_flags(path: &Path) -> libc::c_ulong {
    let c = CString::new(path.as_os_str().as_bytes()).expect("a path without NUL");
    // SAFETY: statvfs(3) fills the zeroed struct we own from a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(
        rc,
        0,
        "statvfs {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    flags
}

/// Runs `tar <args>`, panicking with its output when it fails.
fn tar(args: &[&std::ffi::OsStr]) {
    let output = Command::new("tar")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run tar: {e}"));
    assert!(
        output.status.success(),
        "tar {:?} failed ({}): {}",
        args,
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The owner (uid, gid) of `path`.
pub fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.gid())
}

/// Gives `path` to `uid:gid` (like a volume's `fsGroup`).
pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}
