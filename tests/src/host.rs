//! Process supervision of the real `ctxhost` binary: [`Host`] starts it on a free port (or
//! in a network namespace of its own) with a configuration written from [`HostOptions`],
//! kills it (SIGKILL), stops it (SIGTERM) and starts it again on the same data directory.
//! Also where the binary and the plugins are found, and the temporary directories and unique
//! names of the tests.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::HostOptions;
use crate::http::Api;

/// The line the host prints on stdout once it serves; the address follows it.
const READY_PREFIX: &str = "ctxhost listening on http://";
/// How long a host may take to compile its plugins and start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a host may take to shut down after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `ctxhost serve` process; killed when dropped. Derefs to the [`Api`] of the
/// current process (a restart changes the port, so take a fresh [`Host::api`] after one).
pub struct Host {
    child: Option<Child>,
    api: Api,
    dir: TestDir,
    data_dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    binary: PathBuf,
    env: Vec<(String, String)>,
    netns: Option<PathBuf>,
    starts: u32,
}

impl Host {
    /// Writes a config for `opts` and starts a host on 127.0.0.1 with a free port; returns
    /// once the host has printed its `ctxhost listening on http://<addr>` line.
    pub fn start(opts: HostOptions) -> Host {
        let binary = host_binary();
        let dir = TestDir::new();
        let data_dir = opts.data_dir_in(dir.path());
        let config_path = opts.write_config(dir.path());
        let log_path = dir.path().join("ctxhost.log");

        let mut host = Host {
            child: None,
            api: Api::new("127.0.0.1:9".parse().expect("placeholder address")),
            dir,
            data_dir,
            config_path,
            log_path,
            binary,
            env: opts.env_vars().to_vec(),
            netns: opts.chosen_netns().map(Path::to_path_buf),
            starts: 0,
        };
        host.spawn();
        host
    }

    /// The address the host listens on.
    pub fn addr(&self) -> SocketAddr {
        self.api.addr()
    }

    /// A handle for HTTP calls that can be moved into tasks; valid until the next restart.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// The host's data directory (kept across restarts).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Kills the host with SIGKILL (no chance to clean up) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the host with SIGTERM and waits up to 10 s for it to exit; panics (after a
    /// SIGKILL) if it does not.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if sigterm_and_wait(&mut child, STOP_TIMEOUT).is_none() {
            panic!(
                "the host did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                self.log_tail(60)
            );
        }
    }

    /// Starts the host again with the same config and data directory (after [`Host::kill`]
    /// or [`Host::stop`]).
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again: the host is still running"
        );
        self.spawn();
    }

    /// SIGTERM, then start again on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// The host's whole log (its stderr, across restarts).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `lines` lines of the host's log (its stderr, across restarts).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "--- last lines of {} ---\n{}",
            self.log_path.display(),
            all[from..].join("\n")
        )
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the host log");
        writeln!(log, "===== ctxhost start #{} =====", self.starts).expect("write the host log");

        let mut cmd = Command::new(&self.binary);
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env("CTXHOST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // The test's config must decide; variables of the caller's shell must not override it.
        for var in [
            "CTXHOST_LISTEN",
            "CTXHOST_DATA_DIR",
            "CTXHOST_CONFIG",
            "CTXHOST_CONTEXTS",
            "CTXHOST_AMQP_URL",
            "CTXHOST_ADMIN_TOKEN",
            "CTXHOST_LOG_FORMAT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_SERVICE_NAME",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
        ] {
            cmd.env_remove(var);
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        if let Some(netns) = &self.netns {
            crate::netns::enter(&mut cmd, netns);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));

        let rx = ready_address(child.stdout.take().expect("piped stdout"));
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                let addr: SocketAddr = addr
                    .parse()
                    .unwrap_or_else(|e| panic!("bad address in the ready line `{addr}`: {e}"));
                self.child = Some(child);
                self.api = Api::new(addr);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the host did not print `{READY_PREFIX}<addr>` within {START_TIMEOUT:?}\n{}",
                    self.log_tail(60)
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait();
                panic!(
                    "the host exited before it was ready ({status:?})\n{}",
                    self.log_tail(60)
                );
            }
        }
    }
}

impl Deref for Host {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(80));
            eprintln!("(test files kept in {})", self.dir.path().display());
            self.dir.keep = true;
        }
    }
}

/// Sends SIGTERM to `child` and waits up to `timeout` for its exit status; `None` when it
/// did not exit in time (it is then killed with SIGKILL and reaped). Panics when the signal
/// cannot be sent.
pub(crate) fn sigterm_and_wait(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: plain kill(2) on the pid of a child we own and have not yet reaped.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(
        rc,
        0,
        "SIGTERM to pid {pid} failed: {}",
        std::io::Error::last_os_error()
    );
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Reads a host's stdout to the end in a thread of its own (so the host never blocks on a
/// full pipe) and sends the address of its `ctxhost listening on http://<addr>` line, once.
pub(crate) fn ready_address(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.trim().strip_prefix(READY_PREFIX)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.trim_end_matches('/').to_owned());
            }
        }
    });
    rx
}

/// `<prefix>-<pid>-<counter>-<nanos>`: unique across the tests of a process and across runs.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// A uniquely named temporary directory, removed on drop unless `keep` is set.
pub struct TestDir {
    path: PathBuf,
    keep: bool,
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(unique_name("ctxhost-e2e"));
        fs::create_dir_all(&path).expect("create the test directory");
        Self { path, keep: false }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep it after the test (to look at what a failed test left).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// The `ctxhost` binary under test.
pub fn host_binary() -> PathBuf {
    let path = std::env::var_os("CTXHOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root()
                .join("target")
                .join("debug")
                .join(format!("ctxhost{}", std::env::consts::EXE_SUFFIX))
        });
    assert!(
        path.is_file(),
        "host binary {} not found: run `cargo xtask build` first",
        path.display()
    );
    path
}

/// The directory of the built plugin components.
pub fn plugin_dir() -> PathBuf {
    let path = std::env::var_os("CTXHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root()
                .join("target")
                .join("wasm32-wasip2")
                .join("release")
        });
    assert!(
        path.is_dir(),
        "plugin directory {} not found: run `cargo xtask build` first",
        path.display()
    );
    path
}

/// Compiled components shared by every test host, so each start does not recompile.
pub fn test_cache_dir() -> PathBuf {
    host_binary()
        .parent()
        .map(|p| p.join("ctxhost-test-cache"))
        .unwrap_or_else(|| std::env::temp_dir().join("ctxhost-test-cache"))
}
