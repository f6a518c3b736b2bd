//! Configuration: a TOML file, overridden by `CTXHOST_*` environment variables, overridden
//! by command-line flags (clap reads flag-or-variable; the file fills what both left unset).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::runtime::{ContextLimits, EngineSettings, PluginSource};

/// Default address of the API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default configuration file, read when present.
pub const DEFAULT_CONFIG: &str = "ctxhost.toml";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// An `instance_reuse` setting: how many invocations one instance may serve (at least 1).
fn reuse(value: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    match value {
        Some(0) => Err(ConfigError::Invalid {
            name: "instance_reuse",
            message: "must be at least 1 (1: a fresh instance for every invocation)".into(),
        }),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// The file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    contexts: Option<Vec<String>>,
    body_limit: Option<usize>,
    deadline_ms: Option<u64>,
    memory_limit_mb: Option<usize>,
    instance_reuse: Option<u32>,
    max_instances: Option<u32>,
    admin_token: Option<String>,
    upload_limit_mb: Option<usize>,
    watch_dir: Option<PathBuf>,
    #[serde(default)]
    plugins: BTreeMap<String, PluginEntry>,
    #[serde(default)]
    resilience: crate::resilience::ResilienceFile,
    #[serde(default)]
    rate_limit: crate::resilience::RateLimitFile,
    amqp: Option<AmqpFile>,
}

/// The `[amqp]` table: RabbitMQ as the event transport.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmqpFile {
    url: Option<String>,
    namespace: Option<String>,
    prefetch: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginEntry {
    path: PathBuf,
    deadline_ms: Option<u64>,
    memory_limit_mb: Option<usize>,
    instance_reuse: Option<u32>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
}

/// What flags and environment variables set (`None`: not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub contexts: Option<String>,
    pub admin_token: Option<String>,
    /// RabbitMQ URL; selects the RabbitMQ transport.
    pub amqp_url: Option<String>,
}

/// The resolved settings of a host process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub body_limit: usize,
    pub engine: EngineSettings,
    /// The contexts this process runs, in load order.
    pub plugins: Vec<PluginSource>,
    /// The file the settings came from, if any.
    pub config_file: Option<PathBuf>,
    /// Bearer token of the admin API (`None`: generated at start).
    pub admin_token: Option<String>,
    /// Largest plugin upload, in bytes.
    pub upload_limit: usize,
    /// Directory whose changed `<context>.wasm` files are deployed.
    pub watch_dir: Option<PathBuf>,
    /// Limits of contexts deployed at run time without configuration.
    pub default_limits: ContextLimits,
    /// RabbitMQ as the event transport (`None`: the embedded bus).
    pub amqp: Option<crate::bus::AmqpSettings>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn scalar(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Settings {
    /// Resolve flags and environment (`ov`) over the configuration file.
    pub fn resolve(ov: Overrides) -> Result<Settings, ConfigError> {
        let (file, config_file) = match &ov.config {
            Some(p) => (read_file(p)?, Some(p.clone())),
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

        let listen_s = ov
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_s.parse().map_err(|e| ConfigError::Invalid {
            name: "listen",
            message: format!("{listen_s:?} is not an address like 127.0.0.1:8080 ({e})"),
        })?;
        let data_dir = ov
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let cache_dir = file
            .cache_dir
            .map(|p| if p.is_relative() { base.join(p) } else { p })
            .unwrap_or_else(|| data_dir.join("cache"));

        let wanted: Option<Vec<String>> = match ov.contexts {
            Some(s) => Some(
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect(),
            ),
            None => file.contexts,
        };
        if let Some(w) = &wanted {
            for name in w {
                if !file.plugins.contains_key(name) {
                    return Err(ConfigError::Invalid {
                        name: "contexts",
                        message: format!("{name:?} is not a configured plugin"),
                    });
                }
            }
        }
        let default_limits = ContextLimits {
            deadline: Duration::from_millis(file.deadline_ms.unwrap_or(5_000)),
            memory_limit: file.memory_limit_mb.unwrap_or(128) * 1024 * 1024,
            instance_reuse: reuse(file.instance_reuse, 1)?,
        };
        let mut plugins = Vec::new();
        for (name, entry) in file.plugins {
            if !valid_name(&name) {
                return Err(ConfigError::Invalid {
                    name: "plugins",
                    message: format!(
                        "{name:?} is not a valid context name (lowercase letters, digits, '-', '_')"
                    ),
                });
            }
            if wanted.as_ref().is_some_and(|w| !w.contains(&name)) {
                continue;
            }
            let path = if entry.path.is_relative() {
                base.join(&entry.path)
            } else {
                entry.path
            };
            let limits = ContextLimits {
                deadline: entry
                    .deadline_ms
                    .map(Duration::from_millis)
                    .unwrap_or(default_limits.deadline),
                memory_limit: entry
                    .memory_limit_mb
                    .map(|m| m * 1024 * 1024)
                    .unwrap_or(default_limits.memory_limit),
                instance_reuse: reuse(entry.instance_reuse, default_limits.instance_reuse)?,
            };
            plugins.push(PluginSource {
                name,
                path,
                limits,
                config: entry
                    .config
                    .iter()
                    .map(|(k, v)| (k.clone(), scalar(v)))
                    .collect(),
            });
        }
        if plugins.is_empty() {
            return Err(ConfigError::Invalid {
                name: "plugins",
                message: match &config_file {
                    Some(p) => format!("{} configures no plugin to run", p.display()),
                    None => format!(
                        "no configuration file: pass --config, set CTXHOST_CONFIG or create {DEFAULT_CONFIG}"
                    ),
                },
            });
        }
        let amqp = resolve_amqp(ov.amqp_url, file.amqp)?;
        let body_limit = file.body_limit.unwrap_or(1024 * 1024);
        let resilience = crate::resilience::ResilienceSettings::resolve(
            &file.resilience,
            &file.rate_limit,
            default_limits.deadline,
        )
        .map_err(|message| ConfigError::Invalid {
            name: "resilience",
            message,
        })?;
        let engine = EngineSettings {
            deadline: default_limits.deadline,
            memory_limit: plugins
                .iter()
                .map(|p| p.limits.memory_limit)
                .fold(default_limits.memory_limit, usize::max),
            max_instances: file.max_instances.unwrap_or(1_000),
            cache_dir,
            max_call_depth: 8,
            resilience,
        };
        Ok(Settings {
            listen,
            data_dir,
            body_limit,
            engine,
            plugins,
            admin_token: ov
                .admin_token
                .or(file.admin_token)
                .filter(|t| !t.is_empty()),
            upload_limit: file.upload_limit_mb.unwrap_or(64) * 1024 * 1024,
            watch_dir: file
                .watch_dir
                .map(|p| if p.is_relative() { base.join(p) } else { p }),
            default_limits,
            config_file,
            amqp,
        })
    }
}

/// The RabbitMQ settings, when a URL is given by flag, variable or file.
fn resolve_amqp(
    url: Option<String>,
    file: Option<AmqpFile>,
) -> Result<Option<crate::bus::AmqpSettings>, ConfigError> {
    let file = file.unwrap_or_default();
    let Some(url) = url.or(file.url).filter(|u| !u.trim().is_empty()) else {
        if file.namespace.is_some() || file.prefetch.is_some() {
            return Err(ConfigError::Invalid {
                name: "amqp",
                message: "the [amqp] table needs a url (or set CTXHOST_AMQP_URL / --amqp-url)"
                    .into(),
            });
        }
        return Ok(None);
    };
    let invalid = |message: String| ConfigError::Invalid {
        name: "amqp",
        message,
    };
    let parsed: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e| invalid(format!("url is not an AMQP URI: {e}")))?;
    if parsed.scheme != lapin::uri::AMQPScheme::AMQP {
        return Err(invalid(
            "only amqp:// is supported (this build has no TLS for amqps://)".into(),
        ));
    }
    let namespace = file.namespace.unwrap_or_else(|| "ctxhost".into());
    if namespace.is_empty()
        || namespace.len() > 100
        || !namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(format!(
            "namespace {namespace:?} must be 1-100 letters, digits, '-', '_' or '.'"
        )));
    }
    let prefetch = file.prefetch.unwrap_or(128);
    if prefetch == 0 {
        return Err(invalid("prefetch must be at least 1".into()));
    }
    Ok(Some(crate::bus::AmqpSettings {
        url,
        namespace,
        prefetch,
    }))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
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
        assert_eq!(s.plugins.len(), 2);
        assert_eq!(s.plugins[0].path, d.join("o.wasm"));
        assert_eq!(s.plugins[1].path, PathBuf::from("/abs/p.wasm"));
        assert_eq!(
            s.plugins[1]
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
        assert_eq!(s.plugins.len(), 1);
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
