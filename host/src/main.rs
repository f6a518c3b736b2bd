//! The `ctxhost` command: serve the configured contexts, or talk to a running host.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ctxhost::{Overrides, Settings};

/// A WebAssembly component host for business bounded contexts.
///
/// Configuration comes from a TOML file (--config, default ctxhost.toml when present),
/// overridden by CTXHOST_* environment variables, overridden by flags. CTXHOST_LOG sets the
/// log filter (for example `info` or `ctxhost=debug`); logs go to stderr.
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
    },
    /// Inspect the plugins of a running host.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// List the loaded plugins of a running host.
    List {
        /// Base URL of the running host.
        #[arg(long, env = "CTXHOST_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CTXHOST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                listen,
                data_dir,
                contexts,
            } => {
                let settings = Settings::resolve(Overrides {
                    config,
                    listen,
                    data_dir,
                    contexts,
                })?;
                ctxhost::run(settings, shutdown_signal()).await
            }
            Command::Plugin {
                command: PluginCommand::List { url },
            } => list_plugins(&url).await,
        }
    })
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

async fn list_plugins(url: &str) -> anyhow::Result<()> {
    let endpoint = format!("{}/admin/plugins", url.trim_end_matches('/'));
    let res = reqwest::get(&endpoint)
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = res.status();
    let body: serde_json::Value = res
        .json()
        .await
        .with_context(|| format!("{endpoint} did not answer JSON"))?;
    if !status.is_success() {
        anyhow::bail!("{endpoint} answered {status}: {body}");
    }
    println!("{:<12} {:<10} {:<20} LOADED", "NAME", "VERSION", "DIGEST");
    for p in body.as_array().map(Vec::as_slice).unwrap_or_default() {
        let s = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
        let digest = s("digest");
        println!(
            "{:<12} {:<10} {:<20} {}",
            s("name"),
            s("version"),
            digest.get(..19).unwrap_or(&digest),
            s("loadedAt")
        );
    }
    Ok(())
}
