//! Helpers for the end-to-end tests in `tests/tests/`: they start the real `ctxhost` binary
//! with the real plugins, each test on its own free port with its own data directory, and
//! speak HTTP to it like any API client.
//!
//! - [`Host`]: start, SIGKILL, SIGTERM and restart a host on the same data directory.
//! - [`Api`]: HTTP calls and the domain calls of the rental API, with strict checks.
//! - [`eventually`]: bounded polling for what the saga and the view settle asynchronously.
//! - [`OrderLoad`] and [`assert_rental_consistent`]: a load of orders, and the invariants the
//!   rental state must reach after a disturbance.
//! - [`broker`]: RabbitMQ for the tests of the AMQP transport ([`HostOptions::amqp`]).
//!
//! The binary and the plugins come from `CTXHOST_BIN` and `CTXHOST_PLUGIN_DIR` (set by
//! `cargo xtask test`) or from the workspace's `target/` directory (`cargo xtask build`).

use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub mod broker;
mod rental;

pub use rental::{
    Created, LoadOutcome, OrderLoad, assert_rental_consistent, assert_view_matches_orders,
    availability_is, settled,
};

/// The four rental contexts every test host loads.
pub const PLUGINS: [&str; 4] = ["order", "payment", "car", "view"];

/// The line the host prints on stdout once it serves; the address follows it.
const READY_PREFIX: &str = "ctxhost listening on http://";
/// How long a host may take to compile its plugins and start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a host may take to shut down after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the saga and the view get to converge, unless a test says otherwise.
pub const SETTLE: Duration = Duration::from_secs(20);

/// Field names of a row of `GET /customers/{customerId}/orders` (the view's own table).
pub mod view_row {
    /// The order's id.
    pub const ORDER_ID: &str = "orderId";
    /// The order's status: `PAID`, `RENTED`, `REJECTED` or `CANCELLED`.
    pub const ORDER_STATUS: &str = "orderStatus";
    /// The payment's id.
    pub const PAYMENT_ID: &str = "paymentId";
    /// The payment's status: `APPROVED` or `CANCELLED`.
    pub const PAYMENT_STATUS: &str = "paymentStatus";
}

/// Returns `Err(format!(...))` from the enclosing function when the condition is false; for
/// the closures given to [`eventually`].
#[macro_export]
macro_rules! ensure_that {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// The admin token every test host is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token";
const ADMIN_AUTH: &str = "Bearer test-admin-token";

/// What a test host loads besides the four rental contexts.
#[derive(Clone, Debug, Default)]
pub struct HostOptions {
    chaos: bool,
    config: Vec<(String, String, String)>,
    data_dir: Option<PathBuf>,
    host_settings: Vec<String>,
    host_lines: Vec<String>,
    plugin_settings: Vec<(String, String)>,
    contexts: Option<Vec<String>>,
    amqp_namespace: Option<String>,
    amqp_prefetch: Option<u16>,
}

impl HostOptions {
    /// The four rental contexts with their default configuration and a fresh data directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also load the `chaos` test component (`<plugin dir>/chaos.wasm`).
    pub fn with_chaos(mut self) -> Self {
        self.chaos = true;
        self
    }

    /// Adds `key = "value"` to `[plugins.<plugin>.config]`.
    pub fn plugin_config(mut self, plugin: &str, key: &str, value: &str) -> Self {
        self.config
            .push((plugin.to_owned(), key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a top-level line to the host configuration, e.g. `watch_dir = "/tmp/x"`
    /// (written after the other top-level keys, before every table).
    pub fn host_setting(mut self, line: &str) -> Self {
        self.host_settings.push(line.to_owned());
        self
    }

    /// Adds a line to `[plugins.<plugin>]`, e.g. `deadline_ms = 300`.
    pub fn plugin_setting(mut self, plugin: &str, line: &str) -> Self {
        self.plugin_settings
            .push((plugin.to_owned(), line.to_owned()));
        self
    }

    /// Adds raw lines to the host's configuration file, before the plugin tables (for
    /// example `[resilience.payment]` tables and their keys). Lines before the first table
    /// header are top-level keys and go with the other top-level keys.
    pub fn host_config(mut self, lines: &str) -> Self {
        self.host_lines.push(lines.to_owned());
        self
    }

    /// Runs only these of the configured contexts (top-level `contexts = [...]`); every
    /// plugin stays configured.
    pub fn contexts(mut self, contexts: &[&str]) -> Self {
        self.contexts = Some(contexts.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    /// Carries events over RabbitMQ: an `[amqp]` table with the test broker's URL
    /// ([`broker::amqp_url`]) and `namespace`. Hosts with the same namespace share their
    /// broker objects (see [`broker::Namespace`]).
    pub fn amqp(mut self, namespace: &str) -> Self {
        self.amqp_namespace = Some(namespace.to_owned());
        self
    }

    /// `prefetch` in the `[amqp]` table (with [`HostOptions::amqp`]).
    pub fn amqp_prefetch(mut self, prefetch: u16) -> Self {
        self.amqp_prefetch = Some(prefetch);
        self
    }

    /// Use this data directory instead of a fresh one.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
}

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
    starts: u32,
}

impl Host {
    /// Writes a config for `opts` and starts a host on 127.0.0.1 with a free port; returns
    /// once the host has printed its `ctxhost listening on http://<addr>` line.
    pub fn start(opts: HostOptions) -> Host {
        let binary = host_binary();
        let plugin_dir = plugin_dir();
        let mut names: Vec<&str> = PLUGINS.to_vec();
        if opts.chaos {
            names.push("chaos");
        }
        for name in &names {
            let wasm = plugin_dir.join(format!("{name}.wasm"));
            assert!(
                wasm.is_file(),
                "plugin {} not found: run `cargo xtask build` first",
                wasm.display()
            );
        }

        let dir = TestDir::new();
        let data_dir = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let config_path = dir.path().join("ctxhost.toml");
        let log_path = dir.path().join("ctxhost.log");

        let config = config_text(&opts, &names, &plugin_dir, &data_dir, &test_cache_dir());
        fs::write(&config_path, config).expect("write the test host config");

        let mut host = Host {
            child: None,
            api: Api::new("127.0.0.1:9".parse().expect("placeholder address")),
            dir,
            data_dir,
            config_path,
            log_path,
            binary,
            starts: 0,
        };
        host.spawn();
        host
    }

    /// The address the host listens on.
    pub fn addr(&self) -> SocketAddr {
        self.api.addr
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
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: plain kill(2) on the pid of a child we own and have not yet reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "SIGTERM to the host failed: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_status)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the host did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                        self.log_tail(60)
                    );
                }
            }
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
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));

        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Keep reading to the end so the host never blocks on a full pipe.
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
struct TestDir {
    path: PathBuf,
    keep: bool,
}

impl TestDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(unique_name("ctxhost-e2e"));
        fs::create_dir_all(&path).expect("create the test directory");
        Self { path, keep: false }
    }

    fn path(&self) -> &Path {
        &self.path
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

/// The configuration file of a test host: the top-level keys first (TOML puts a key after a
/// table header into that table), then the raw tables, `[amqp]` and the plugin tables.
fn config_text(
    opts: &HostOptions,
    names: &[&str],
    plugin_dir: &Path,
    data_dir: &Path,
    cache_dir: &Path,
) -> String {
    // TOML: every top-level key before the first table, or it lands in that table.
    let mut top = String::new();
    top.push_str("listen = \"127.0.0.1:0\"\n");
    top.push_str(&format!("admin_token = {}\n", toml_string(ADMIN_TOKEN)));
    top.push_str(&format!(
        "cache_dir = {}\n",
        toml_string(&cache_dir.to_string_lossy())
    ));
    top.push_str(&format!(
        "data_dir = {}\n",
        toml_string(&data_dir.to_string_lossy())
    ));
    if let Some(contexts) = &opts.contexts {
        for context in contexts {
            assert!(
                names.contains(&context.as_str()),
                "contexts: {context} is not a loaded plugin ({names:?})"
            );
        }
        let list: Vec<String> = contexts.iter().map(|c| toml_string(c)).collect();
        top.push_str(&format!("contexts = [{}]\n", list.join(", ")));
    }
    for line in &opts.host_settings {
        top.push_str(line);
        top.push('\n');
    }
    let mut tables = String::new();
    for lines in &opts.host_lines {
        let (keys, rest) = split_top_level(lines);
        if !keys.trim().is_empty() {
            top.push_str(&keys);
        }
        if !rest.trim().is_empty() {
            tables.push('\n');
            tables.push_str(&rest);
        }
    }
    if let Some(namespace) = &opts.amqp_namespace {
        tables.push_str("\n[amqp]\n");
        tables.push_str(&format!("url = {}\n", toml_string(&broker::amqp_url())));
        tables.push_str(&format!("namespace = {}\n", toml_string(namespace)));
        if let Some(prefetch) = opts.amqp_prefetch {
            tables.push_str(&format!("prefetch = {prefetch}\n"));
        }
    } else {
        assert!(
            opts.amqp_prefetch.is_none(),
            "amqp_prefetch without amqp(namespace)"
        );
    }
    let mut config = top;
    config.push_str(&tables);
    for name in names {
        let wasm = plugin_dir.join(format!("{name}.wasm"));
        config.push_str(&format!("\n[plugins.{name}]\n"));
        config.push_str(&format!(
            "path = {}\n",
            toml_string(&wasm.to_string_lossy())
        ));
        for (_, line) in opts.plugin_settings.iter().filter(|(p, _)| p == name) {
            config.push_str(line);
            config.push('\n');
        }
        let entries: Vec<_> = opts.config.iter().filter(|(p, _, _)| p == name).collect();
        if !entries.is_empty() {
            config.push_str(&format!("\n[plugins.{name}.config]\n"));
            for (_, key, value) in entries {
                config.push_str(&format!("{} = {}\n", toml_key(key), toml_string(value)));
            }
        }
    }
    for (plugin, _, _) in &opts.config {
        assert!(
            names.contains(&plugin.as_str()),
            "config for a plugin not loaded: {plugin}"
        );
    }
    config
}

/// Splits raw configuration lines into the top-level keys before the first table header and
/// the rest (that header and everything after it), each ending with a newline.
fn split_top_level(lines: &str) -> (String, String) {
    let mut keys = String::new();
    let mut rest = String::new();
    let mut in_table = false;
    for line in lines.lines() {
        in_table |= is_table_header(line);
        let out = if in_table { &mut rest } else { &mut keys };
        out.push_str(line);
        out.push('\n');
    }
    (keys, rest)
}

/// Whether a configuration line is a table header (`[a.b]`, `[[a]]`, `[a."b c"]`), not an
/// array value on a line of its own.
fn is_table_header(line: &str) -> bool {
    let line = line.trim();
    let Some(inner) = line.strip_prefix('[') else {
        return false;
    };
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let Some(end) = inner.find(']') else {
        return false;
    };
    let name = inner[..end].trim();
    let after = inner[end..].trim_start_matches(']').trim();
    let mut quoted = false;
    let bare_ok = name.chars().all(|c| {
        if c == '"' {
            quoted = !quoted;
        }
        quoted || c == '"' || c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ')
    });
    !name.is_empty()
        && !name.starts_with('.')
        && bare_ok
        && (after.is_empty() || after.starts_with('#'))
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        key.to_owned()
    } else {
        toml_string(key)
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An HTTP answer, read in full.
#[derive(Clone, Debug)]
pub struct Resp {
    /// The request, for messages (`GET /cars`).
    pub request: String,
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body as text.
    pub body: String,
    /// The `x-context-version` header: which context version answered.
    pub context_version: Option<String>,
}

impl Resp {
    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {}", self.request, self.body))
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: unexpected status; body: {}",
            self.request, self.body
        );
        self.json()
    }

    /// Asserts an RFC 9457 problem with this status (content type `application/problem+json`,
    /// `type`, `title`, `status` and `detail` members) and returns it.
    pub fn expect_problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: unexpected status; body: {}",
            self.request, self.body
        );
        let ct = self.content_type.as_deref().unwrap_or("");
        assert!(
            ct.starts_with("application/problem+json"),
            "{}: content type `{ct}` is not application/problem+json; body: {}",
            self.request,
            self.body
        );
        let problem = self.json();
        assert_eq!(
            problem["status"],
            json!(status),
            "{}: problem.status: {problem}",
            self.request
        );
        assert!(
            problem["title"].is_string(),
            "{}: problem.title missing: {problem}",
            self.request
        );
        assert!(
            problem["type"].is_string(),
            "{}: problem.type missing: {problem}",
            self.request
        );
        assert!(
            problem["detail"].is_string(),
            "{}: problem.detail missing: {problem}",
            self.request
        );
        problem
    }

    /// Asserts a problem whose `detail` names `field`.
    pub fn expect_problem_naming(&self, status: u16, field: &str) -> Value {
        let problem = self.expect_problem(status);
        let detail = problem["detail"].as_str().unwrap_or("");
        assert!(
            detail.contains(field),
            "{}: problem detail does not name `{field}`: {problem}",
            self.request
        );
        problem
    }
}

/// HTTP access to one host process; cheap to clone and move into tasks.
#[derive(Clone, Debug)]
pub struct Api {
    addr: SocketAddr,
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(addr: SocketAddr) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_static(ADMIN_AUTH),
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build the HTTP client");
        Self {
            addr,
            base: format!("http://{addr}"),
            client,
        }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; `Err` only for transport failures (connection refused, reset, ...).
    pub async fn try_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<Resp, reqwest::Error> {
        let request = format!("{method} {path}");
        let mut builder = self.client.request(method, self.url(path));
        if let Some((bytes, content_type)) = body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let response = builder.send().await?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let context_version = header(reqwest::header::HeaderName::from_static(
            "x-context-version",
        ));
        let status = response.status().as_u16();
        let body = response.text().await?;
        Ok(Resp {
            request,
            status,
            content_type,
            retry_after,
            body,
            context_version,
        })
    }

    /// Sends a request; panics on transport failures.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Resp {
        let what = format!("{method} {path}");
        self.try_send(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}"))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Resp {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.post_raw(path, body.to_string().into_bytes(), "application/json")
            .await
    }

    /// `POST path` with any body.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, content_type: &str) -> Resp {
        self.send(reqwest::Method::POST, path, Some((body, content_type)))
            .await
    }

    /// `POST path` with a JSON body; `Err` on transport failures.
    pub async fn try_post_json(&self, path: &str, body: &Value) -> Result<Resp, reqwest::Error> {
        self.try_send(
            reqwest::Method::POST,
            path,
            Some((body.to_string().into_bytes(), "application/json")),
        )
        .await
    }

    /// `GET path`, asserting 200, as JSON.
    pub async fn get_ok(&self, path: &str) -> Value {
        self.get(path).await.expect(200)
    }

    /// `GET path`, asserting 200, as a list (a JSON array, or an object with an `items` array).
    pub async fn get_list(&self, path: &str) -> Vec<Value> {
        let value = self.get_ok(path).await;
        as_list(&value).unwrap_or_else(|| panic!("GET {path}: not a list: {value}"))
    }

    /// `POST /cars`, asserting 201 and the echoed fields; returns the car's id.
    pub async fn create_car(&self, name: &str, stock: u64) -> u64 {
        let car = self
            .post_json("/cars", &json!({"name": name, "stock": stock}))
            .await
            .expect(201);
        assert_eq!(car["name"], json!(name), "POST /cars: name: {car}");
        assert_eq!(car["stock"], json!(stock), "POST /cars: stock: {car}");
        assert_eq!(
            car["available"],
            json!(stock),
            "POST /cars: available: {car}"
        );
        id(&car, "id")
    }

    /// `POST /orders`, asserting 201, status `PAID`, a payment id and the echoed fields.
    pub async fn place_order(&self, car_id: u64, qty: u64, customer: &str) -> Value {
        let order = self
            .post_json(
                "/orders",
                &json!({"carId": car_id, "qty": qty, "customerId": customer}),
            )
            .await
            .expect(201);
        check_placed_order(&order, car_id, qty, customer);
        order
    }

    /// `GET /cars/{id}`.
    pub async fn car(&self, car_id: u64) -> Value {
        self.get_ok(&format!("/cars/{car_id}")).await
    }

    /// `GET /orders/{id}`.
    pub async fn order(&self, order_id: u64) -> Value {
        self.get_ok(&format!("/orders/{order_id}")).await
    }

    /// `GET /payments/{id}`.
    pub async fn payment(&self, payment_id: u64) -> Value {
        self.get_ok(&format!("/payments/{payment_id}")).await
    }

    /// `GET /orders`.
    pub async fn orders(&self) -> Vec<Value> {
        self.get_list("/orders").await
    }

    /// `GET /payments`.
    pub async fn payments(&self) -> Vec<Value> {
        self.get_list("/payments").await
    }

    /// `GET /cars`.
    pub async fn cars(&self) -> Vec<Value> {
        self.get_list("/cars").await
    }

    /// `GET /availability/{carId}` as `(available, whole answer)`, or `None` while the view
    /// does not know the car yet (404).
    pub async fn availability(&self, car_id: u64) -> Option<(i64, Value)> {
        let resp = self.get(&format!("/availability/{car_id}")).await;
        if resp.status == 404 {
            return None;
        }
        let value = resp.expect(200);
        assert_eq!(
            value["carId"],
            json!(car_id),
            "availability: carId: {value}"
        );
        let available = value["available"]
            .as_i64()
            .unwrap_or_else(|| panic!("availability: `available` is not an integer: {value}"));
        Some((available, value))
    }

    /// `GET /customers/{customerId}/orders`; an unknown customer (404) counts as no rows.
    pub async fn customer_orders(&self, customer: &str) -> Vec<Value> {
        let path = format!("/customers/{customer}/orders");
        let resp = self.get(&path).await;
        if resp.status == 404 {
            return Vec::new();
        }
        let value = resp.expect(200);
        as_list(&value).unwrap_or_else(|| panic!("GET {path}: not a list: {value}"))
    }
}

/// Checks the answer of a successful `POST /orders`.
pub fn check_placed_order(order: &Value, car_id: u64, qty: u64, customer: &str) {
    assert_eq!(
        order["status"],
        json!("PAID"),
        "POST /orders: status: {order}"
    );
    assert_eq!(
        order["carId"],
        json!(car_id),
        "POST /orders: carId: {order}"
    );
    assert_eq!(order["qty"], json!(qty), "POST /orders: qty: {order}");
    assert_eq!(
        order["customerId"],
        json!(customer),
        "POST /orders: customerId: {order}"
    );
    id(order, "id");
    id(order, "paymentId");
}

/// A list answer: a JSON array, or an object whose `items` member is one.
pub fn as_list(value: &Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) => Some(items.clone()),
        Value::Object(map) => map.get("items").and_then(Value::as_array).cloned(),
        _ => None,
    }
}

/// The non-negative integer member `field` of `value`; panics when absent or not one.
pub fn id(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` is not a non-negative integer in {value}"))
}

/// The string member `field` of `value` (empty when absent).
pub fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or("")
}

/// The row of the customer-orders view for `order_id`, if any.
pub fn view_row_for(rows: &[Value], order_id: u64) -> Option<&Value> {
    rows.iter()
        .find(|row| row[view_row::ORDER_ID].as_u64() == Some(order_id))
}

/// Polls `check` every 50 ms until it returns `Ok`, for at most `timeout`; panics with the
/// last error otherwise. Each attempt is bounded by the time left (at least 5 s).
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5));
        let last = match tokio::time::timeout(left, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(err)) => err,
            Err(_) => "an attempt did not finish in time".to_owned(),
        };
        if Instant::now() >= deadline {
            panic!(
                "not reached within {timeout:?} ({attempts} attempts, {:?}); last: {last}",
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Compiled components shared by every test host, so each start does not recompile.
pub fn test_cache_dir() -> PathBuf {
    host_binary()
        .parent()
        .map(|p| p.join("ctxhost-test-cache"))
        .unwrap_or_else(|| std::env::temp_dir().join("ctxhost-test-cache"))
}

/// One request of a [`Load`]: method, path and an optional JSON body.
pub type LoadRequest = (reqwest::Method, String, Option<Value>);

/// A bounded background load: `clients` loops, each sending `next(client, i)` until
/// [`Load::finish`] (at most 5,000 requests each, and 60 s), recording every answer that
/// is not 2xx.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<AtomicU64>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Start the clients against `host`.
    pub fn start<F>(host: &Host, clients: u64, next: F) -> Load
    where
        F: Fn(u64, u64) -> LoadRequest + Send + Sync + 'static,
    {
        let next = std::sync::Arc::new(next);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = std::sync::Arc::new(AtomicU64::new(0));
        let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let api = host.api();
            let (next, stop, done, failures) =
                (next.clone(), stop.clone(), done.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && i < 5_000 {
                    let (method, path, body) = next(c, i);
                    let body = body.map(|b| (b.to_string().into_bytes(), "application/json"));
                    let failure = match api.try_send(method, &path, body).await {
                        Ok(r) if r.status < 300 => None,
                        Ok(r) => Some(format!("{}: {} {}", r.request, r.status, r.body)),
                        Err(e) => Some(format!("transport: {e}")),
                    };
                    if let Some(f) = failure {
                        failures.lock().unwrap_or_else(|p| p.into_inner()).push(f);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            }));
        }
        Load {
            stop,
            done,
            failures,
            tasks,
        }
    }

    /// Stop the clients; the number of requests sent and the failures seen.
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("load client task");
        }
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (self.done.load(Ordering::SeqCst), failures)
    }
}

/// `bytes` plus a custom section: a new version (new digest) of a component with the same
/// behaviour, for hot swap tests and benchmarks.
pub fn with_marker(bytes: &[u8], marker: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"ctxhost-test-marker";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(marker.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{HostOptions, config_text, is_table_header, split_top_level};

    #[test]
    fn table_headers_are_told_from_array_lines() {
        for header in [
            "[amqp]",
            "  [resilience.payment]  ",
            "[[items]]",
            "[rate_limit.routes.\"GET /cars\"]",
            "[plugins.order.config] # comment",
        ] {
            assert!(is_table_header(header), "{header}");
        }
        for line in [
            "contexts = [\"order\"]",
            "[\"a\", \"b\"],",
            "[1, 2]",
            "[]",
            "key = 1",
            "",
        ] {
            assert!(!is_table_header(line), "{line}");
        }
    }

    #[test]
    fn keys_before_the_first_table_are_top_level() {
        let (keys, rest) =
            split_top_level("watch_dir = \"w\"\n[resilience.payment]\nretries = 2\n");
        assert_eq!(keys, "watch_dir = \"w\"\n");
        assert_eq!(rest, "[resilience.payment]\nretries = 2\n");
        let (keys, rest) = split_top_level("[a]\nx = 1\n");
        assert_eq!(keys, "");
        assert_eq!(rest, "[a]\nx = 1\n");
    }

    #[test]
    fn every_top_level_key_comes_before_the_first_table() {
        let opts = HostOptions::new()
            .with_chaos()
            .host_config("[resilience.payment]\nretries = 2\n")
            .host_setting("watch_dir = \"w\"")
            .contexts(&["order", "payment"])
            .amqp("ns-1")
            .amqp_prefetch(8)
            .plugin_config("payment", "max-qty-per-order", "3");
        let names = ["order", "payment", "car", "view", "chaos"];
        let text = config_text(
            &opts,
            &names,
            Path::new("plugins"),
            Path::new("data"),
            Path::new("cache"),
        );
        let lines: Vec<&str> = text.lines().collect();
        let first_table = lines
            .iter()
            .position(|l| is_table_header(l))
            .expect("a table");
        for key in [
            "listen",
            "admin_token",
            "cache_dir",
            "data_dir",
            "contexts",
            "watch_dir",
        ] {
            let at = lines
                .iter()
                .position(|l| l.starts_with(&format!("{key} =")))
                .unwrap_or_else(|| panic!("no {key} in\n{text}"));
            assert!(at < first_table, "{key} after a table in\n{text}");
        }
        assert!(
            text.contains("contexts = [\"order\", \"payment\"]\n"),
            "{text}"
        );
        let amqp = text.split("[amqp]\n").nth(1).expect("an [amqp] table");
        let amqp: Vec<&str> = amqp.lines().take_while(|l| !l.is_empty()).collect();
        assert_eq!(amqp.len(), 3, "{text}");
        assert!(amqp[0].starts_with("url = \"amqp://"), "{text}");
        assert_eq!(amqp[1], "namespace = \"ns-1\"");
        assert_eq!(amqp[2], "prefetch = 8");
        assert!(
            text.contains("[resilience.payment]\nretries = 2\n"),
            "{text}"
        );
    }
}
