//! A real headless browser for the tests of the console: Debian's `chromium` driven through
//! `chromedriver` with the W3C WebDriver protocol, spoken over plain HTTP.
//!
//! [`Browser::start`] installs `chromium` and `chromium-driver` with apt-get when they are
//! missing (as root, as CI runs; otherwise it says what to install), starts `chromedriver`
//! on a free localhost port and opens a headless session; dropping it ends both. Other
//! binaries can be named with `CTXHOST_TEST_CHROMIUM` and `CTXHOST_TEST_CHROMEDRIVER`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// How long chromedriver may take to answer its status.
const DRIVER_START: Duration = Duration::from_secs(30);
/// How long one WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A headless Chromium session; the browser and its driver end when it is dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (installing both when missing).
    pub async fn start() -> Browser {
        let (chromium, chromedriver) = tokio::task::spawn_blocking(ensure_installed)
            .await
            .expect("the install task");
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let client = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .expect("an HTTP client");
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client,
        };
        browser.wait_for_driver().await;
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium.to_string_lossy(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--window-size=1400,1150",
                            "--hide-scrollbars",
                        ],
                    },
                },
            },
        });
        let created = browser
            .command(reqwest::Method::POST, "/session", caps)
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser
    }

    /// Opens `url` and waits until its document has loaded.
    pub async fn open(&self, url: &str) {
        self.session_command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (the body of a function; `return` gives the result) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.session_command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self
            .session_command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("a base64 string"))
            .expect("the screenshot is base64")
    }

    async fn session_command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.command(method, &path, body).await
    }

    /// One WebDriver command; panics with the driver's error when it fails.
    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if !body.is_null() {
            req = req.json(&body);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = res.status();
        let answer: Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON: {e}"));
        assert!(
            status.is_success(),
            "WebDriver {method} {path} answered {status}: {answer}"
        );
        answer["value"].clone()
    }

    async fn wait_for_driver(&mut self) {
        let end = Instant::now() + DRIVER_START;
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/status", self.base))
                .send()
                .await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == json!(true)
            {
                return;
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(
                Instant::now() < end,
                "chromedriver was not ready within {DRIVER_START:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Ends the browser; best effort, the driver's end below ends it too.
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        let _ = reqwest::Client::new()
                            .delete(url)
                            .timeout(Duration::from_secs(10))
                            .send()
                            .await;
                    });
                }
            })
            .join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The first of `candidates` that exists, or the one named by `var`.
fn find(var: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    candidates
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}

fn binaries() -> Option<(PathBuf, PathBuf)> {
    let chromium = find(
        "CTXHOST_TEST_CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    )?;
    let driver = find(
        "CTXHOST_TEST_CHROMEDRIVER",
        &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
    )?;
    Some((chromium, driver))
}

/// The browser and its driver, installed with apt-get when missing (once per process).
fn ensure_installed() -> (PathBuf, PathBuf) {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = binaries() {
        return found;
    }
    crate::tools::apt_install(
        &["chromium", "chromium-driver"],
        "the console test needs Debian's `chromium` and `chromium-driver` packages \
         (`apt-get install chromium chromium-driver` as root), or CTXHOST_TEST_CHROMIUM and \
         CTXHOST_TEST_CHROMEDRIVER naming a browser and its driver",
    );
    binaries().expect("chromium and chromedriver after apt-get install")
}
