//! The `ctxhost` command: serve the configured contexts, or talk to a running host.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ctxhost::api::{DeployReport, PluginInfo, ProblemDetails};
use ctxhost::{Overrides, Settings, TraceSettings};

/// A WebAssembly component host for business bounded contexts.
///
/// Configuration comes from a TOML file (--config, default ctxhost.toml when present),
/// overridden by CTXHOST_* environment variables, overridden by flags. CTXHOST_LOG sets the
/// log filter (for example `info` or `ctxhost=debug`); logs go to stderr, one JSON object per
/// line with CTXHOST_LOG_FORMAT=json. Traces go over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT
/// (or the [telemetry] table) names a receiver.
#[derive(Debug, Parser)]
#[command(name = "ctxhost", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the configured contexts and serve their API.
    Serve {
        /// Configuration file.
        #[arg(long, env = "CTXHOST_CONFIG")]
        config: Option<PathBuf>,
        /// Address of the API [default: 127.0.0.1:8080].
        #[arg(long, env = "CTXHOST_LISTEN")]
        listen: Option<String>,
        /// Directory of the state (redb files) and the compilation cache [default: ./data].
        #[arg(long, env = "CTXHOST_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Comma-separated contexts this process runs [default: all configured].
        #[arg(long, env = "CTXHOST_CONTEXTS")]
        contexts: Option<String>,
        /// File holding the bearer token of the admin API (or set CTXHOST_ADMIN_TOKEN; a
        /// token is never taken on the command line, where `ps` shows it) [default:
        /// generated into <data dir>/admin-token].
        #[arg(long, env = "CTXHOST_ADMIN_TOKEN_FILE")]
        admin_token_file: Option<PathBuf>,
        /// RabbitMQ URL (amqp://user:pass@host:port/vhost); selects the RabbitMQ event
        /// transport [default: the embedded bus].
        #[arg(long, env = "CTXHOST_AMQP_URL", hide_env_values = true)]
        amqp_url: Option<String>,
    },
    /// Print a development token (HS256, signed with the configured shared secret) for
    /// SUBJECT: `curl -H "authorization: Bearer $(ctxhost token --subject alice)" ...`.
    Token {
        /// The token's subject (`sub`).
        #[arg(long)]
        subject: String,
        /// A role to grant (repeat for more).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime in seconds (at most one day).
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Configuration file whose `[auth]` table applies (variables win over it).
        #[arg(long, env = "CTXHOST_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Compact the state database of a data directory while no host runs on it: the space
    /// of deleted rows goes back to the filesystem. Prints the size before and after.
    Compact {
        /// The data directory.
        #[arg(long, env = "CTXHOST_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Take an online backup of a running host: its state database as of one transaction
    /// and the plugin versions it keeps, in one file, while the host keeps serving. Written
    /// to FILE.partial, checked whole, then renamed to FILE; prints what it holds.
    Backup {
        /// The backup file to write (refused if it exists).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Restore a backup into a data directory, after checking all of it (nothing is written
    /// from a damaged file); a host started on the directory serves the backup's state and
    /// plugin versions.
    Restore {
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The data directory to restore into: new or empty, unless --force.
        #[arg(long)]
        data_dir: PathBuf,
        /// Restore into a data directory that is not empty: its state database and kept
        /// versions (plugins/) are replaced, everything else stays. Refused while a host
        /// runs on it.
        #[arg(long)]
        force: bool,
    },
    /// Inspect the plugins of a running host.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

/// How to reach a running host's admin API.
#[derive(Debug, clap::Args)]
struct AdminTarget {
    /// Base URL of the running host.
    #[arg(long, env = "CTXHOST_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// File holding the admin token (or set CTXHOST_ADMIN_TOKEN; a token is never taken
    /// on the command line, where `ps` shows it) [default: <data dir>/admin-token].
    #[arg(long, env = "CTXHOST_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Data directory of the host, to read its generated admin token.
    #[arg(long, env = "CTXHOST_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// List the loaded plugins of a running host.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Deploy FILE as the new version of context NAME, without downtime.
    Deploy {
        /// Context name.
        name: String,
        /// The component (.wasm).
        file: PathBuf,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Return context NAME to its previous version.
    Rollback {
        /// Context name.
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            contexts,
            admin_token_file,
            amqp_url,
        } => {
            let settings = Settings::resolve(Overrides {
                config,
                listen,
                data_dir,
                contexts,
                admin_token: env_token(),
                admin_token_file,
                amqp_url,
            })?;
            // Inside the runtime: the gRPC exporter needs it. Dropped after serving, while
            // the runtime still runs, to flush the last spans.
            let tracing = {
                let _rt = rt.enter();
                ctxhost::install_tracing(&settings.tracing)?
            };
            let served = rt.block_on(ctxhost::run(settings, shutdown_signal()));
            drop(tracing);
            served.map_err(anyhow::Error::from)
        }
        Command::Token {
            subject,
            roles,
            ttl_secs,
            config,
        } => {
            let auth = ctxhost::auth_settings(config)?;
            let token = ctxhost::mint_token(
                &auth,
                &subject,
                &roles,
                std::time::Duration::from_secs(ttl_secs),
            )?;
            println!("{token}");
            Ok(())
        }
        Command::Compact { data_dir } => {
            let r = ctxhost::compact_data_dir(&data_dir)?;
            println!(
                "compacted {}: {} -> {} bytes",
                r.path.display(),
                r.before,
                r.after
            );
            Ok(())
        }
        Command::Backup { to, target } => rt.block_on(backup(&target, &to)),
        Command::Restore {
            from,
            data_dir,
            force,
        } => {
            let started = std::time::Instant::now();
            let r = ctxhost::restore_backup(&from, &data_dir, force)?;
            let b = &r.backup;
            println!(
                "restored {} into {}{}: snapshot of {}, {} tables, {} entries, {} component files ({} bytes), in {:.2} s",
                from.display(),
                r.dir.display(),
                if r.replaced {
                    " (its state database and kept versions replaced)"
                } else {
                    ""
                },
                b.taken_at(),
                b.tables,
                b.entries,
                b.files,
                b.file_bytes,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Plugin { command } => {
            let _tracing = ctxhost::install_tracing(&TraceSettings {
                exporter: None,
                ..TraceSettings::from_env()?
            })?;
            rt.block_on(async move {
                match command {
                    PluginCommand::List { target } => list_plugins(&target).await,
                    PluginCommand::Deploy { name, file, target } => {
                        deploy(&target, &name, &file).await
                    }
                    PluginCommand::Rollback { name, target } => rollback(&target, &name).await,
                }
            })
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The admin token from the environment, where only the process's owner can read it.
fn env_token() -> Option<String> {
    std::env::var("CTXHOST_ADMIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

impl AdminTarget {
    fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = env_token() {
            return Ok(t);
        }
        let path = self
            .token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin-token"));
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .with_context(|| {
                format!(
                    "no admin token: set CTXHOST_ADMIN_TOKEN, pass --token-file, or point --data-dir at the host's data directory (cannot read {})",
                    path.display()
                )
            })
    }

    /// A request to the admin API, with the token, and its URL.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<(String, reqwest::RequestBuilder)> {
        let endpoint = format!("{}{path}", self.url.trim_end_matches('/'));
        let req = reqwest::Client::new()
            .request(method, &endpoint)
            .bearer_auth(self.token()?);
        Ok((endpoint, req))
    }

    /// Send a request to the admin API and read its answer as `T`, or the problem it
    /// reported.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let (endpoint, mut req) = self.request(method, path)?;
        if let Some(b) = body {
            req = req.header("content-type", "application/wasm").body(b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach {endpoint}"))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .with_context(|| format!("cannot read the answer of {endpoint}"))?;
        if !status.is_success() {
            return Err(refused(&endpoint, status, text));
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{endpoint} answered {status} with an unexpected body"))
    }
}

/// The error of an answer `status` with body `text` (a problem, or anything else).
fn refused(endpoint: &str, status: reqwest::StatusCode, text: String) -> anyhow::Error {
    let detail = serde_json::from_str::<ProblemDetails>(&text)
        .map(|p| p.detail)
        .unwrap_or(text);
    anyhow::anyhow!("{endpoint} answered {status}: {detail}")
}

/// `ctxhost backup`: stream the host's backup into `<to>.partial`, check it whole, and
/// only then rename it to `to`; a failed backup leaves no file behind.
async fn backup(target: &AdminTarget, to: &Path) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(to).is_ok() {
        anyhow::bail!("{} exists: remove it or choose another name", to.display());
    }
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let started = std::time::Instant::now();
    eprintln!("backing up {} to {}...", target.url, to.display());
    let checked = match download(target, &partial).await {
        Ok(()) => ctxhost::verify_backup(&partial)
            .context("the backup received does not pass its checks; nothing was kept"),
        Err(e) => Err(e),
    };
    let summary = match checked {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&partial, to) {
        let _ = std::fs::remove_file(&partial);
        return Err(e).with_context(|| format!("cannot rename the backup to {}", to.display()));
    }
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    println!(
        "backup written to {}: {} bytes, {} tables, {} entries, {} component files ({} bytes), snapshot of {}, in {:.2} s",
        to.display(),
        summary.bytes,
        summary.tables,
        summary.entries,
        summary.files,
        summary.file_bytes,
        summary.taken_at(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Write the body of `GET /admin/backup` to `path` as it arrives, durably.
async fn download(target: &AdminTarget, path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let (endpoint, req) = target.request(reqwest::Method::GET, "/admin/backup")?;
    let mut res = req
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = res.status();
    if !status.is_success() {
        let text = res.text().await.unwrap_or_default();
        return Err(refused(&endpoint, status, text));
    }
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    while let Some(chunk) = res
        .chunk()
        .await
        .with_context(|| format!("the backup from {endpoint} stopped before its end"))?
    {
        file.write_all(&chunk)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn deploy(target: &AdminTarget, name: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    eprintln!(
        "deploying {} ({} bytes) as {name}...",
        file.display(),
        bytes.len()
    );
    let r = target
        .call(
            reqwest::Method::PUT,
            &format!("/admin/plugins/{name}"),
            Some(bytes),
        )
        .await?;
    print_report(&r);
    Ok(())
}

async fn rollback(target: &AdminTarget, name: &str) -> anyhow::Result<()> {
    let r = target
        .call(
            reqwest::Method::POST,
            &format!("/admin/plugins/{name}/rollback"),
            None,
        )
        .await?;
    print_report(&r);
    Ok(())
}

fn print_report(r: &DeployReport) {
    if r.changed {
        println!(
            "{} {} now serving ({}), switched in {:.1} ms",
            r.name, r.version, r.digest, r.elapsed_ms
        );
    } else {
        println!("{} already runs {}: nothing changed", r.name, r.digest);
    }
}

async fn list_plugins(target: &AdminTarget) -> anyhow::Result<()> {
    let plugins: Vec<PluginInfo> = target
        .call(reqwest::Method::GET, "/admin/plugins", None)
        .await?;
    println!(
        "{:<12} {:<10} {:<20} {:<10} {:>8} LOADED",
        "NAME", "VERSION", "DIGEST", "STATE", "INFLIGHT"
    );
    for p in &plugins {
        let version = if p.version.is_empty() {
            "-"
        } else {
            &p.version
        };
        println!(
            "{:<12} {:<10} {:<20} {:<10} {:>8} {}",
            p.name,
            version,
            p.digest.get(..19).unwrap_or(&p.digest),
            p.state,
            p.in_flight,
            p.loaded_at
        );
    }
    Ok(())
}
