//! Configuration: a TOML file, overridden by `CTXHOST_*` environment variables, overridden
//! by command-line flags (clap reads flag-or-variable; the file fills what both left unset).
//!
//! Each subsystem owns its section and its checks: the runtime its limits and
//! `[plugins.*]` ([`crate::runtime::RuntimeSettings`]), the bus `[amqp]`
//! ([`crate::bus::AmqpSettings`]), resilience `[resilience.*]` and `[rate_limit]`
//! ([`crate::resilience`]), telemetry `[telemetry]` ([`crate::telemetry`]: metrics, and
//! traces and the log format in [`crate::telemetry::trace::TraceSettings`]), identity
//! `[auth]` ([`crate::identity::AuthSettings`]), retention `[storage]`
//! ([`crate::storage::StorageSettings`]); [`Settings::resolve`] only reads the file
//! and composes them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::bus::{AmqpConfigError, AmqpFile, AmqpSettings};
use crate::identity::{AuthConfigError, AuthFile, AuthSettings};
use crate::resilience::{
    PolicyError, RateLimitFile, RateLimitSettings, ResilienceFile, ResilienceSettings,
};
use crate::runtime::{LimitsFile, PluginEntry, RuntimeConfigError, RuntimeFile, RuntimeSettings};
use crate::storage::{StorageConfigError, StorageFile, StorageSettings};
use crate::telemetry::trace::{TraceConfigError, TraceSettings};
use crate::telemetry::{MetricsSettings, TelemetryConfigError, TelemetryFile};

/// Default address of the API.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default configuration file, read when present.
pub(crate) const DEFAULT_CONFIG: &str = "ctxhost.toml";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid setting listen: {value:?} is not an address like 127.0.0.1:8080 ({source})")]
    Listen {
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("cannot read the admin token file {path}: {source}")]
    AdminTokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid setting http.{key}: {reason}")]
    Http { key: &'static str, reason: String },
    #[error("invalid setting {key}: {reason}")]
    Setting { key: &'static str, reason: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeConfigError),
    #[error(transparent)]
    Amqp(#[from] AmqpConfigError),
    #[error("invalid setting {0}")]
    Policy(#[from] PolicyError),
    #[error("invalid setting {0}")]
    Telemetry(#[from] TelemetryConfigError),
    #[error(transparent)]
    Trace(#[from] TraceConfigError),
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error("invalid setting {0}")]
    Storage(#[from] StorageConfigError),
}

/// The file's shape: the server's own keys, then each subsystem's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    contexts: Option<Vec<String>>,
    body_limit: Option<usize>,
    admin_token: Option<String>,
    admin_token_file: Option<PathBuf>,
    upload_limit_mb: Option<usize>,
    watch_dir: Option<PathBuf>,
    storage_unhealthy_after_s: Option<u64>,
    /// Versions of each context kept (stack and history), with their files.
    keep_versions: Option<usize>,
    // The runtime's keys (see `runtime::RuntimeFile`).
    cache_dir: Option<PathBuf>,
    cache_max_mb: Option<u64>,
    deadline_ms: Option<u64>,
    memory_limit_mb: Option<usize>,
    instance_reuse: Option<u32>,
    max_instances: Option<u32>,
    compile_timeout_ms: Option<u64>,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    plugins: BTreeMap<String, PluginEntry>,
    #[serde(default)]
    resilience: ResilienceFile,
    #[serde(default)]
    rate_limit: RateLimitFile,
    amqp: Option<AmqpFile>,
    #[serde(default)]
    http: HttpFile,
    #[serde(default)]
    telemetry: TelemetryFile,
    #[serde(default)]
    auth: AuthFile,
    #[serde(default)]
    storage: StorageFile,
}

/// The `[http]` table: how long and how many connections a client may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    header_timeout_ms: Option<u64>,
    body_idle_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    drain_timeout_ms: Option<u64>,
}

/// Bounds on client connections, so slow or idle clients cannot hold the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Longest wait for a request's head, from the connection's start or the end of the
    /// previous answer: also how long an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// Longest pause between two parts of a request body.
    pub body_idle_timeout: Duration,
    /// Longest time to read a whole request body.
    pub body_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// After a shutdown signal, how long requests in flight may finish before the
    /// remaining connections are closed.
    pub drain_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl HttpSettings {
    fn resolve(f: &HttpFile) -> Result<Self, ConfigError> {
        let d = HttpSettings::default();
        let ms = |key: &'static str, v: Option<u64>, default: Duration| match v {
            None => Ok(default),
            Some(0) => Err(ConfigError::Http {
                key,
                reason: "must be above 0".into(),
            }),
            Some(ms) => Ok(Duration::from_millis(ms)),
        };
        let max_connections = match f.max_connections {
            None => d.max_connections,
            Some(0) => {
                return Err(ConfigError::Http {
                    key: "max_connections",
                    reason: "must be above 0".into(),
                });
            }
            Some(n) => n,
        };
        Ok(HttpSettings {
            header_timeout: ms("header_timeout_ms", f.header_timeout_ms, d.header_timeout)?,
            body_idle_timeout: ms(
                "body_idle_timeout_ms",
                f.body_idle_timeout_ms,
                d.body_idle_timeout,
            )?,
            body_timeout: ms("body_timeout_ms", f.body_timeout_ms, d.body_timeout)?,
            max_connections,
            drain_timeout: ms("drain_timeout_ms", f.drain_timeout_ms, d.drain_timeout)?,
        })
    }
}

/// What flags and environment variables set (`None`: not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub contexts: Option<String>,
    pub admin_token: Option<String>,
    /// A file holding the admin token (read at start).
    pub admin_token_file: Option<PathBuf>,
    /// RabbitMQ URL; selects the RabbitMQ transport.
    pub amqp_url: Option<String>,
}

/// The resolved settings of a host process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The file the settings came from, if any.
    pub config_file: Option<PathBuf>,
    /// Engine, contexts and their limits.
    pub runtime: RuntimeSettings,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Bounds on client connections (`[http]`).
    pub http: HttpSettings,
    /// The gateway's rate limits.
    pub rate_limit: RateLimitSettings,
    /// Bearer token of the admin API (`None`: generated at start).
    pub admin_token: Option<String>,
    /// Largest plugin upload, in bytes.
    pub upload_limit: usize,
    /// Directory whose changed `<context>.wasm` files are deployed.
    pub watch_dir: Option<PathBuf>,
    /// RabbitMQ as the event transport (`None`: the embedded bus).
    pub amqp: Option<AmqpSettings>,
    /// How long reopening the database may fail before `/healthz` does (`None`: never).
    pub storage_unhealthy_after: Option<std::time::Duration>,
    /// The metrics part of `[telemetry]`.
    pub metrics: MetricsSettings,
    /// Trace export and the log format (`[telemetry]`, `OTEL_*` variables).
    pub tracing: TraceSettings,
    /// Bearer-token verification (`[auth]`, `CTXHOST_AUTH_*` variables); off without a key.
    pub auth: AuthSettings,
    /// Retention and pruning (`[storage]`).
    pub storage: StorageSettings,
    /// Versions of each context kept on its stack and in its history (`keep_versions`; `None`:
    /// the hot swap's default, 20); the files of versions no longer kept are deleted.
    pub keep_versions: Option<usize>,
}

/// The `[auth]` settings alone (file `config`, else `ctxhost.toml` when present, under the
/// `CTXHOST_AUTH_*` variables), for commands that need no contexts, such as `ctxhost token`.
pub fn auth_settings(config: Option<PathBuf>) -> Result<AuthSettings, ConfigError> {
    let (file, _, base) = load_file(config)?;
    Ok(AuthSettings::resolve(file.auth, &base)?)
}

/// The configuration file (`config`, else `ctxhost.toml` when present, else empty), its
/// path, and the directory its relative paths start from.
fn load_file(
    config: Option<PathBuf>,
) -> Result<(FileConfig, Option<PathBuf>, PathBuf), ConfigError> {
    let (file, config_file) = match config {
        Some(p) => (read_file(&p)?, Some(p)),
        None if Path::new(DEFAULT_CONFIG).exists() => {
            let p = PathBuf::from(DEFAULT_CONFIG);
            (read_file(&p)?, Some(p))
        }
        None => (FileConfig::default(), None),
    };
    let base = config_file
        .as_ref()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok((file, config_file, base))
}

impl Settings {
    /// Resolve flags and environment (`ov`) over the configuration file.
    pub fn resolve(ov: Overrides) -> Result<Settings, ConfigError> {
        let (file, config_file, base) = load_file(ov.config)?;
        let relative = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

        let listen_s = ov
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_s.parse().map_err(|source| ConfigError::Listen {
            value: listen_s.clone(),
            source,
        })?;
        let data_dir = ov
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let wanted: Option<Vec<String>> = match ov.contexts {
            Some(s) => Some(
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect(),
            ),
            None => file.contexts,
        };
        let runtime_file = RuntimeFile {
            cache_dir: file.cache_dir,
            cache_max_mb: cache_max_mb(
                std::env::var("CTXHOST_CACHE_MAX_MB").ok(),
                file.cache_max_mb,
            )?,
            deadline_ms: file.deadline_ms,
            memory_limit_mb: file.memory_limit_mb,
            instance_reuse: file.instance_reuse,
            max_instances: file.max_instances,
            compile_timeout_ms: file.compile_timeout_ms,
            limits: file.limits,
            plugins: file.plugins,
        };
        let deadline = runtime_file.default_deadline();
        let resilience = ResilienceSettings::resolve(&file.resilience, deadline)?;
        let no_plugin = || match &config_file {
            Some(p) => format!("{} configures no plugin to run", p.display()),
            None => format!(
                "no configuration file: pass --config, set CTXHOST_CONFIG or create {DEFAULT_CONFIG}"
            ),
        };
        let runtime = RuntimeSettings::resolve(
            runtime_file,
            &base,
            &data_dir,
            wanted,
            resilience,
            no_plugin,
        )?;
        let amqp = AmqpSettings::resolve(ov.amqp_url, file.amqp)?;
        // The token: the environment, else a token file (flag, then file key), else the
        // file's own `admin_token`; none of them on the command line, where `ps` shows it.
        let token_file = ov.admin_token_file.or(file.admin_token_file.map(relative));
        let admin_token = match (ov.admin_token, token_file) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => Some(read_token(&path)?),
            (None, None) => file.admin_token,
        };
        let rate_limit = RateLimitSettings::resolve(&file.rate_limit)?;
        let http = HttpSettings::resolve(&file.http)?;
        let metrics = MetricsSettings::resolve(&file.telemetry)?;
        let tracing = TraceSettings::resolve(&file.telemetry)?;
        let auth = AuthSettings::resolve(file.auth, &base)?;
        let storage = StorageSettings::resolve(&file.storage)?;
        let upload_limit = file
            .upload_limit_mb
            .unwrap_or(64)
            .checked_mul(1024 * 1024)
            .ok_or_else(|| ConfigError::Setting {
                key: "upload_limit_mb",
                reason: "more bytes than this machine can address".into(),
            })?;
        Ok(Settings {
            listen,
            data_dir,
            runtime,
            body_limit: file.body_limit.unwrap_or(1024 * 1024),
            http,
            rate_limit,
            admin_token: admin_token.filter(|t| !t.is_empty()),
            upload_limit,
            watch_dir: file.watch_dir.map(relative),
            config_file,
            amqp,
            storage_unhealthy_after: match file.storage_unhealthy_after_s {
                Some(0) => None,
                Some(s) => Some(std::time::Duration::from_secs(s)),
                None => Some(std::time::Duration::from_secs(300)),
            },
            metrics,
            tracing,
            auth,
            storage,
            keep_versions: match file.keep_versions {
                Some(0) => {
                    return Err(ConfigError::Setting {
                        key: "keep_versions",
                        reason: "must be at least 1 (the running version)".into(),
                    });
                }
                n => n,
            },
        })
    }
}

/// `cache_max_mb`: the variable `CTXHOST_CACHE_MAX_MB` when set, else the file's key.
fn cache_max_mb(var: Option<String>, file: Option<u64>) -> Result<Option<u64>, ConfigError> {
    match var.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => v.parse().map(Some).map_err(|e| ConfigError::Setting {
            key: "cache_max_mb (CTXHOST_CACHE_MAX_MB)",
            reason: format!("{v:?} is not a whole number of MiB: {e}"),
        }),
        None => Ok(file),
    }
}

/// The admin token kept in `path` (surrounding whitespace removed); empty is refused.
fn read_token(path: &Path) -> Result<String, ConfigError> {
    let err = |source| ConfigError::AdminTokenFile {
        path: path.display().to_string(),
        source,
    };
    let token = std::fs::read_to_string(path)
        .map_err(err)?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        )));
    }
    Ok(token)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("ctxhost.toml");
        std::fs::write(&p, text).expect("write config");
        p
    }

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("ctxhost-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn the_admin_token_comes_from_a_file_and_an_empty_one_is_refused() {
        let d = tmp();
        std::fs::write(d.join("token"), "  s3cret\n").expect("write token");
        std::fs::write(d.join("empty"), "\n").expect("write empty");
        let p = write(
            &d,
            "admin_token = \"in-the-file\"\nadmin_token_file = \"token\"\n[plugins.order]\npath = \"o.wasm\"\n",
        );
        let s = Settings::resolve(Overrides {
            config: Some(p.clone()),
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!(s.admin_token.as_deref(), Some("s3cret"), "the file wins");
        let s = Settings::resolve(Overrides {
            config: Some(p.clone()),
            admin_token: Some("from-env".into()),
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!(
            s.admin_token.as_deref(),
            Some("from-env"),
            "the environment wins"
        );
        let err = Settings::resolve(Overrides {
            config: Some(p),
            admin_token_file: Some(d.join("empty")),
            ..Default::default()
        })
        .expect_err("an empty token file");
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn flags_override_the_file_and_paths_are_relative_to_it() {
        let d = tmp();
        let p = write(
            &d,
            "listen = \"127.0.0.1:9000\"\n[plugins.order]\npath = \"o.wasm\"\n[plugins.payment]\npath = \"/abs/p.wasm\"\n[plugins.payment.config]\nmax-qty-per-order = 3\n",
        );
        let s = Settings::resolve(Overrides {
            config: Some(p.clone()),
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!(s.listen.port(), 0);
        assert_eq!(s.runtime.plugins.len(), 2);
        assert_eq!(s.runtime.plugins[0].path, d.join("o.wasm"));
        assert_eq!(s.runtime.plugins[1].path, PathBuf::from("/abs/p.wasm"));
        assert_eq!(
            s.runtime.plugins[1]
                .config
                .get("max-qty-per-order")
                .map(String::as_str),
            Some("3")
        );
        let s = Settings::resolve(Overrides {
            config: Some(p),
            contexts: Some("payment".into()),
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.runtime.plugins.len(), 1);
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        let d = tmp();
        let p = write(&d, "[plugins.order]\npath = \"o.wasm\"\n");
        let err = Settings::resolve(Overrides {
            config: Some(p.clone()),
            listen: Some("nowhere".into()),
            ..Default::default()
        })
        .expect_err("bad listen");
        assert!(err.to_string().contains("listen"), "{err}");
        let err = Settings::resolve(Overrides {
            config: Some(p),
            contexts: Some("car".into()),
            ..Default::default()
        })
        .expect_err("unknown context");
        assert!(err.to_string().contains("car"), "{err}");
        let p = write(&d, "bogus = 1\n");
        let err = Settings::resolve(Overrides {
            config: Some(p),
            ..Default::default()
        })
        .expect_err("unknown key");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn the_cache_bound_and_the_versions_kept_default_and_refuse_zero_by_name() {
        assert_eq!(cache_max_mb(None, Some(5)).expect("file"), Some(5));
        assert_eq!(
            cache_max_mb(Some(" 7 ".into()), Some(5)).expect("variable"),
            Some(7)
        );
        assert_eq!(
            cache_max_mb(Some(String::new()), None).expect("unset"),
            None
        );
        let err = cache_max_mb(Some("lots".into()), None).expect_err("not a number");
        assert!(err.to_string().contains("CTXHOST_CACHE_MAX_MB"), "{err}");

        let d = tmp();
        let plugin = "[plugins.order]\npath = \"o.wasm\"\n";
        let resolve = |text: &str| {
            Settings::resolve(Overrides {
                config: Some(write(&d, &format!("{text}{plugin}"))),
                ..Default::default()
            })
        };
        let s = resolve("").expect("defaults");
        assert_eq!(
            (s.runtime.engine.cache_max_bytes, s.keep_versions),
            (512 * 1024 * 1024, None)
        );
        let s = resolve("cache_max_mb = 3\nkeep_versions = 2\n").expect("set");
        assert_eq!(
            (s.runtime.engine.cache_max_bytes, s.keep_versions),
            (3 * 1024 * 1024, Some(2))
        );
        for key in ["cache_max_mb", "keep_versions"] {
            let err = resolve(&format!("{key} = 0\n")).expect_err(key);
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn rabbitmq_is_chosen_by_url_with_sane_defaults_and_clear_refusals() {
        let d = tmp();
        let plugin = "[plugins.order]\npath = \"o.wasm\"\n";
        let p = write(&d, plugin);
        let none = Settings::resolve(Overrides {
            config: Some(p.clone()),
            ..Default::default()
        })
        .expect("resolves");
        assert!(none.amqp.is_none(), "no url: the embedded bus");
        let s = Settings::resolve(Overrides {
            config: Some(p.clone()),
            amqp_url: Some("amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            ..Default::default()
        })
        .expect("resolves");
        let amqp = s.amqp.expect("amqp chosen by the flag");
        assert_eq!((amqp.namespace.as_str(), amqp.prefetch), ("ctxhost", 128));

        let p = write(
            &d,
            &format!(
                "[amqp]\nurl = \"amqp://127.0.0.1\"\nnamespace = \"shop\"\nprefetch = 8\n{plugin}"
            ),
        );
        let amqp = Settings::resolve(Overrides {
            config: Some(p),
            ..Default::default()
        })
        .expect("resolves")
        .amqp
        .expect("amqp from the file");
        assert_eq!((amqp.namespace.as_str(), amqp.prefetch), ("shop", 8));

        for (table, needle) in [
            ("[amqp]\nnamespace = \"x\"\n", "needs a url"),
            ("[amqp]\nurl = \"amqps://h\"\n", "only amqp://"),
            ("[amqp]\nurl = \"http://h\"\n", "not an AMQP URI"),
            (
                "[amqp]\nurl = \"amqp://h\"\nnamespace = \"a b\"\n",
                "namespace",
            ),
            ("[amqp]\nurl = \"amqp://h\"\nprefetch = 0\n", "prefetch"),
        ] {
            let p = write(&d, &format!("{table}{plugin}"));
            let err = Settings::resolve(Overrides {
                config: Some(p),
                ..Default::default()
            })
            .expect_err(table);
            assert!(err.to_string().contains(needle), "{table}: {err}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use proptest::prelude::*;

    use super::*;

    /// A fresh file for one case (each test runs its cases in turn, tests run at once).
    fn config_file(text: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!("ctxhost-config-prop-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("mkdir");
        let p = d.join(format!("{}.toml", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&p, text).expect("write config");
        p
    }

    fn resolve(text: &str) -> Result<Settings, ConfigError> {
        let p = config_file(text);
        let r = Settings::resolve(Overrides {
            config: Some(p.clone()),
            ..Default::default()
        });
        let _ = std::fs::remove_file(p);
        r
    }

    /// Numeric keys, by table (`""`: the top level).
    const NUMBERS: [(&str, &str); 28] = [
        ("", "body_limit"),
        ("", "cache_max_mb"),
        ("", "keep_versions"),
        ("", "upload_limit_mb"),
        ("", "storage_unhealthy_after_s"),
        ("", "deadline_ms"),
        ("", "memory_limit_mb"),
        ("", "instance_reuse"),
        ("", "max_instances"),
        ("", "compile_timeout_ms"),
        ("http", "header_timeout_ms"),
        ("http", "body_idle_timeout_ms"),
        ("http", "body_timeout_ms"),
        ("http", "max_connections"),
        ("http", "drain_timeout_ms"),
        ("limits", "scan_entries"),
        ("limits", "write_bytes"),
        ("limits", "correlation_id_bytes"),
        ("rate_limit", "client_rate"),
        ("rate_limit", "client_burst"),
        ("rate_limit", "max_clients"),
        ("plugins.order", "memory_limit_mb"),
        ("plugins.order", "deadline_ms"),
        ("plugins.order", "instance_reuse"),
        ("amqp", "prefetch"),
        ("resilience.default", "timeout_ms"),
        ("resilience.order", "deadline_ms"),
        ("resilience.order", "retry.budget_min_per_sec"),
    ];

    /// A number as a file may spell it, the edges included.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            (0..5i64).prop_map(|n| n.to_string()),
            Just("-1".to_string()),
            Just(i64::MAX.to_string()),
            Just((1i64 << 44).to_string()),
            Just(u32::MAX.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            prop::sample::select(vec!["0.5", "-0.0", "inf", "nan", "1e300"]).prop_map(String::from),
        ]
    }

    /// A file with one plugin and one numeric key set to `value`.
    fn file_with(table: &str, key: &str, value: &str) -> String {
        let plugin = "[plugins.order]\npath = \"o.wasm\"\n";
        let extra = if table == "amqp" {
            "url = \"amqp://127.0.0.1\"\n"
        } else {
            ""
        };
        match table {
            "" => format!("{key} = {value}\n{plugin}"),
            "plugins.order" => format!("{plugin}{key} = {value}\n"),
            t => format!("{plugin}[{t}]\n{extra}{key} = {value}\n"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any text as the configuration file is resolved or refused, never a panic.
        #[test]
        fn any_file_resolves_or_is_refused(
            text in prop_oneof![
                "\\PC{0,80}",
                prop::collection::vec(
                    (prop::sample::select(NUMBERS.to_vec()), number()),
                    0..4,
                ).prop_map(|kv| kv.iter().map(|((t, k), v)| file_with(t, k, v)).collect()),
            ],
        ) {
            let _ = resolve(&text);
        }

        /// A numeric setting out of its range is refused with its key named, never
        /// accepted as another value: sizes in MiB are exact in bytes.
        #[test]
        fn numbers_out_of_range_are_refused_by_key(
            (table, key) in prop::sample::select(NUMBERS.to_vec()),
            value in number(),
        ) {
            let leaf = key.rsplit('.').next().unwrap_or(key);
            match resolve(&file_with(table, key, &value)) {
                Err(e) => prop_assert!(e.to_string().contains(leaf), "{table}.{key} = {value}: {e}"),
                Ok(s) => {
                    let n: Option<usize> = value.parse().ok();
                    let mib = |v: usize| n.map(|n| n.checked_mul(1024 * 1024) == Some(v));
                    match (table, key) {
                        ("", "upload_limit_mb") => prop_assert_eq!(mib(s.upload_limit), Some(true)),
                        ("", "memory_limit_mb") => {
                            prop_assert_eq!(mib(s.runtime.default_limits.memory_limit), Some(true))
                        }
                        ("plugins.order", "memory_limit_mb") => {
                            prop_assert_eq!(mib(s.runtime.plugins[0].limits.memory_limit), Some(true))
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Found by the property above: a size in MiB past the machine's word overflowed (a
    /// panic; in a release build, a wrapped limit such as 0 bytes).
    #[test]
    fn sizes_in_mib_past_the_machine_are_refused_by_key() {
        for (table, key) in [
            ("", "upload_limit_mb"),
            ("", "memory_limit_mb"),
            ("plugins.order", "memory_limit_mb"),
        ] {
            let e = resolve(&file_with(table, key, "17592186044416"))
                .expect_err(key)
                .to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
