//! Starting a real `ctxhost serve` for a benchmark, on a free port with a fresh data dir.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Admin token of benchmark hosts.
pub(crate) const ADMIN_TOKEN: &str = "bench-admin-token";

/// A host process, killed when dropped.
pub(crate) struct BenchHost {
    child: Child,
    pub base: String,
    pub dir: PathBuf,
}

/// Where a [`BenchHost`] runs and what it serves.
#[derive(Clone, Copy)]
pub(crate) struct Placement<'a> {
    /// TOML appended to the generated configuration.
    pub extra: &'a str,
    /// Environment variables of the host.
    pub env: &'a [(String, String)],
    /// The contexts it runs (`contexts = [...]`); all four when empty.
    pub contexts: &'a [&'a str],
    /// Where it listens.
    pub listen: &'a str,
    /// The network namespace it runs in (`/run/netns/<name>`); this one when `None`.
    pub netns: Option<&'a Path>,
}

impl Default for Placement<'_> {
    fn default() -> Self {
        Placement {
            extra: "",
            env: &[],
            contexts: &[],
            listen: "127.0.0.1:0",
            netns: None,
        }
    }
}

impl BenchHost {
    /// Start `bin` with the four rental plugins of `plugin_dir`.
    pub(crate) fn start(bin: &Path, plugin_dir: &Path, extra: &str) -> anyhow::Result<Self> {
        Self::start_with_env(bin, plugin_dir, extra, &[])
    }

    /// [`BenchHost::start`], with environment variables set for the host.
    pub(crate) fn start_with_env(
        bin: &Path,
        plugin_dir: &Path,
        extra: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        Self::start_as(
            bin,
            plugin_dir,
            &Placement {
                extra,
                env,
                ..Placement::default()
            },
        )
    }

    /// A host placed as `placement` says: which contexts, where it listens, in which
    /// network namespace.
    pub(crate) fn start_as(
        bin: &Path,
        plugin_dir: &Path,
        placement: &Placement<'_>,
    ) -> anyhow::Result<Self> {
        let Placement {
            extra,
            env,
            contexts,
            listen,
            netns,
        } = *placement;
        let dir = std::env::temp_dir().join(format!(
            "ctxhost-bench-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() + rand_suffix()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut config = format!(
            "listen = {listen:?}\ndata_dir = {:?}\ncache_dir = {:?}\nadmin_token = {ADMIN_TOKEN:?}\n",
            dir.join("data"),
            plugin_dir.join("ctxhost-bench-cache"),
        );
        if !contexts.is_empty() {
            config.push_str(&format!("contexts = {contexts:?}\n"));
        }
        config.push_str(extra);
        config.push('\n');
        for name in ["order", "payment", "car", "view"] {
            config.push_str(&format!(
                "[plugins.{name}]\npath = {:?}\n",
                plugin_dir.join(format!("{name}.wasm"))
            ));
        }
        let config_path = dir.join("ctxhost.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("ctxhost.log"))?;
        let mut cmd = Command::new(bin);
        if let Some(netns) = netns {
            ctxhost_tests::netns::enter(&mut cmd, netns);
        }
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("CTXHOST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("CTXHOST_LISTEN")
            .env_remove("CTXHOST_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            anyhow::ensure!(Instant::now() < deadline, "the host did not start in time");
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("ctxhost listening on ") {
                        return Ok(BenchHost {
                            child,
                            base: addr.trim().to_string(),
                            dir,
                        });
                    }
                }
                _ => anyhow::bail!(
                    "the host exited before listening; see {}",
                    dir.join("ctxhost.log").display()
                ),
            }
        }
    }

    /// How many instances the current version of `context` created so far (admin API).
    pub(crate) async fn instances_created(&self, context: &str) -> anyhow::Result<u64> {
        let list: serde_json::Value = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .get(format!("{}/admin/plugins", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        list.as_array()
            .and_then(|l| l.iter().find(|p| p["name"] == context))
            .and_then(|p| p["instances"]["created"].as_u64())
            .with_context(|| format!("no instance count for {context} in /admin/plugins"))
    }

    /// Resident memory of the host process, in KiB (from /proc).
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Drop for BenchHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
