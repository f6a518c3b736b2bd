//! The runtime's part of the configuration: the `[plugins.<name>]` tables, the limits of
//! every invocation (`deadline_ms`, `memory_limit_mb`, `instance_reuse`, at the top level
//! and per plugin), what a guest may make the host hold (`[limits]`) and the engine's
//! settings (`max_instances`, `cache_dir`, `cache_max_mb`).
//!
//! ```toml
//! deadline_ms = 5000          # CPU deadline of one invocation
//! memory_limit_mb = 128       # linear memory of one instance
//! instance_reuse = 1          # invocations one instance may serve (1: always fresh)
//! max_instances = 1000        # instances that may exist at once
//! compile_timeout_ms = 120000 # longest compilation of one component
//! cache_max_mb = 512          # compiled components kept in cache_dir (least recently used go)
//!
//! [limits]                    # what one unit of work / one context may make the host hold
//! scan_entries = 1000         # entries one store scan may return
//! scan_bytes = 4194304        # bytes (keys + values) one scan may return
//! write_entries = 10000       # distinct keys one unit of work may write
//! write_bytes = 16777216      # bytes (keys + values) of those writes
//! events = 1000               # events one unit of work may publish
//! event_bytes = 4194304       # bytes of those events
//! sequences = 1000            # distinct `next-id` sequence names per context
//! sequence_name_bytes = 128   # longest sequence name
//! correlation_id_bytes = 256  # longest correlation id of an event (at most 4096)
//! instance_core_instances = 32 # core module instances one component instance may create
//! instance_memories = 2       # linear memories one instance may define (one cap for all)
//! instance_tables = 8         # tables one instance may define
//! table_elements = 100000     # elements of one table
//! guest_stderr_bytes = 65536  # standard error kept from one instance
//!
//! [plugins.payment]
//! path = "target/wasm32-wasip2/release/payment.wasm"   # relative to the config file
//! deadline_ms = 2000
//! [plugins.payment.config]
//! max-qty-per-order = "10"
//! [plugins.payment.secrets]   # secrets the context may read, by name: a source, never a value
//! signing-key = { env = "PAYMENT_SIGNING_KEY" }
//! # api-token = { file = "/run/secrets/api-token" }   # relative to the config file
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::context::ContextLimits;
use super::engine::EngineSettings;
use super::limits::InstanceShape;
use super::loader::PluginSource;
use crate::capabilities::{GuestLimits, SecretGrants, SecretSource};
use crate::identity::AccessOverrides;
use crate::resilience::ResilienceSettings;
use crate::state::UnitLimits;

/// CPU deadline of an invocation, unless configured.
const DEFAULT_DEADLINE_MS: u64 = 5_000;
/// Longest compilation of one component, unless configured.
const DEFAULT_COMPILE_TIMEOUT_MS: u64 = 120_000;
/// Size of the compilation cache, unless configured: room for dozens of compiled
/// components (a few MiB each).
pub(crate) const DEFAULT_CACHE_MAX_MB: u64 = 512;
/// Deepest chain of calls between contexts.
const MAX_CALL_DEPTH: u32 = 8;
/// Longest correlation id that may be configured: it travels as a message header, which
/// must stay far below the smallest frame a broker may negotiate.
const MAX_CORRELATION_ID_BYTES: usize = 4096;

/// The runtime's keys of the configuration file, as written.
#[derive(Debug, Default)]
pub struct RuntimeFile {
    pub cache_dir: Option<PathBuf>,
    /// `cache_max_mb` (or `CTXHOST_CACHE_MAX_MB`, which the caller has already applied).
    pub cache_max_mb: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub memory_limit_mb: Option<usize>,
    pub instance_reuse: Option<u32>,
    pub max_instances: Option<u32>,
    pub compile_timeout_ms: Option<u64>,
    pub limits: LimitsFile,
    pub plugins: BTreeMap<String, PluginEntry>,
}

/// The `[limits]` table: what a guest may make the host hold (see [`GuestLimits`]); every
/// key is optional and at least 1.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    scan_entries: Option<usize>,
    scan_bytes: Option<usize>,
    write_entries: Option<usize>,
    write_bytes: Option<usize>,
    events: Option<usize>,
    event_bytes: Option<usize>,
    sequences: Option<usize>,
    sequence_name_bytes: Option<usize>,
    correlation_id_bytes: Option<usize>,
    instance_core_instances: Option<u32>,
    instance_memories: Option<u32>,
    instance_tables: Option<u32>,
    table_elements: Option<usize>,
    guest_stderr_bytes: Option<usize>,
}

/// A `[limits]` value: `default` when absent, refused by `key` when 0.
fn at_least_one<T: PartialEq + From<u8>>(
    value: Option<T>,
    default: T,
    key: &'static str,
) -> Result<T, RuntimeConfigError> {
    match value {
        Some(v) if v == T::from(0) => Err(RuntimeConfigError::Limit {
            key,
            why: "must be at least 1",
        }),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

impl LimitsFile {
    /// The limits, defaults filled in; a key set to 0 (or a correlation id limit over
    /// 4096 bytes) is refused with its name.
    pub fn resolve(&self) -> Result<GuestLimits, RuntimeConfigError> {
        let d = GuestLimits::default();
        let pick = at_least_one::<usize>;
        let correlation_id_bytes = pick(
            self.correlation_id_bytes,
            d.correlation_id_bytes,
            "correlation_id_bytes",
        )?;
        if correlation_id_bytes > MAX_CORRELATION_ID_BYTES {
            return Err(RuntimeConfigError::Limit {
                key: "correlation_id_bytes",
                why: "must be at most 4096 (it travels as a message header)",
            });
        }
        Ok(GuestLimits {
            unit: UnitLimits {
                scan_entries: pick(self.scan_entries, d.unit.scan_entries, "scan_entries")?,
                scan_bytes: pick(self.scan_bytes, d.unit.scan_bytes, "scan_bytes")?,
                write_entries: pick(self.write_entries, d.unit.write_entries, "write_entries")?,
                write_bytes: pick(self.write_bytes, d.unit.write_bytes, "write_bytes")?,
                events: pick(self.events, d.unit.events, "events")?,
                event_bytes: pick(self.event_bytes, d.unit.event_bytes, "event_bytes")?,
            },
            sequences: pick(self.sequences, d.sequences, "sequences")?,
            sequence_name_bytes: pick(
                self.sequence_name_bytes,
                d.sequence_name_bytes,
                "sequence_name_bytes",
            )?,
            correlation_id_bytes,
        })
    }
}

impl LimitsFile {
    /// The shape of one component instance, defaults filled in; 0 is refused with its name.
    pub fn instance_shape(&self) -> Result<InstanceShape, RuntimeConfigError> {
        let d = InstanceShape::default();
        Ok(InstanceShape {
            core_instances: at_least_one(
                self.instance_core_instances,
                d.core_instances,
                "instance_core_instances",
            )?,
            memories: at_least_one(self.instance_memories, d.memories, "instance_memories")?,
            tables: at_least_one(self.instance_tables, d.tables, "instance_tables")?,
            table_elements: at_least_one(self.table_elements, d.table_elements, "table_elements")?,
            stderr_bytes: at_least_one(
                self.guest_stderr_bytes,
                d.stderr_bytes,
                "guest_stderr_bytes",
            )?,
        })
    }
}

impl RuntimeFile {
    /// The CPU deadline of an invocation unless a plugin sets its own: also the default
    /// timeout of calls between contexts.
    pub fn default_deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.unwrap_or(DEFAULT_DEADLINE_MS))
    }
}

/// One `[plugins.<name>]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    path: PathBuf,
    deadline_ms: Option<u64>,
    memory_limit_mb: Option<usize>,
    instance_reuse: Option<u32>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    /// `name = { env = "VAR" }` or `name = { file = "path" }`.
    #[serde(default)]
    secrets: BTreeMap<String, SecretEntry>,
    /// `"METHOD /path" = "public" | "authenticated" | "roles:a,b"`.
    #[serde(default)]
    access: BTreeMap<String, String>,
}

/// One entry of `[plugins.<name>.secrets]`: where the secret's value comes from (never the
/// value itself).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretEntry {
    env: Option<String>,
    file: Option<PathBuf>,
}

/// The grants of context `context` from its `[plugins.<name>.secrets]` table: each entry
/// names exactly one non-empty source; a relative file is taken from the configuration
/// file's directory (`relative`).
fn secret_grants(
    context: &str,
    entries: BTreeMap<String, SecretEntry>,
    relative: impl Fn(PathBuf) -> PathBuf,
) -> Result<SecretGrants, RuntimeConfigError> {
    let mut grants = BTreeMap::new();
    for (secret, entry) in entries {
        let source = match (entry.env, entry.file) {
            _ if secret.is_empty() => Err("a secret's name must not be empty"),
            (Some(_), Some(_)) => Err("give `env` or `file`, not both"),
            (None, None) => Err("give `env = \"VARIABLE\"` or `file = \"path\"`"),
            (Some(var), None) if var.is_empty() || var.contains(['=', '\0']) => {
                Err("`env` must name a variable")
            }
            (None, Some(file)) if file.as_os_str().is_empty() => Err("`file` must name a file"),
            (Some(var), None) => Ok(SecretSource::Env(var)),
            (None, Some(file)) => Ok(SecretSource::File(relative(file))),
        }
        .map_err(|why| RuntimeConfigError::Secret {
            context: context.to_string(),
            secret: secret.clone(),
            why,
        })?;
        grants.insert(secret, source);
    }
    Ok(SecretGrants::new(grants))
}

/// Why the runtime's settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeConfigError {
    #[error(
        "invalid setting instance_reuse: must be at least 1 (1: a fresh instance for every invocation)"
    )]
    InstanceReuse,
    #[error(
        "invalid setting plugins: {0:?} is not a valid context name (lowercase letters, digits, '-', '_')"
    )]
    Name(String),
    #[error("invalid setting contexts: {0:?} is not a configured plugin")]
    UnknownContext(String),
    #[error("invalid setting plugins: {0}")]
    NoPlugin(String),
    #[error("invalid setting {0}: more bytes than this machine can address")]
    MemoryLimit(String),
    #[error("invalid setting cache_max_mb (CTXHOST_CACHE_MAX_MB): {0}")]
    CacheMaxMb(&'static str),
    #[error("invalid setting limits.{key}: {why}")]
    Limit {
        key: &'static str,
        why: &'static str,
    },
    #[error("invalid setting plugins.{context}.secrets.{secret}: {why}")]
    Secret {
        context: String,
        secret: String,
        why: &'static str,
    },
    #[error("invalid setting plugins.{context}.access: {why}")]
    Access { context: String, why: String },
}

/// What the runtime is started with.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub engine: EngineSettings,
    /// The contexts this process runs, in load order.
    pub plugins: Vec<PluginSource>,
    /// Limits of contexts deployed at run time without configuration.
    pub default_limits: ContextLimits,
}

/// Whether `name` can name a context: 1-64 lowercase letters, digits, `-` or `_`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A `memory_limit_mb` setting (named `key`), in bytes.
fn mebibytes(mb: usize, key: impl FnOnce() -> String) -> Result<usize, RuntimeConfigError> {
    mb.checked_mul(1024 * 1024)
        .ok_or_else(|| RuntimeConfigError::MemoryLimit(key()))
}

/// An `instance_reuse` setting: how many invocations one instance may serve (at least 1).
fn reuse(value: Option<u32>, default: u32) -> Result<u32, RuntimeConfigError> {
    match value {
        Some(0) => Err(RuntimeConfigError::InstanceReuse),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

fn scalar(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl RuntimeSettings {
    /// Resolve the runtime's keys. Relative paths are taken from `base` (the configuration
    /// file's directory); `wanted` selects the contexts this process runs (`None`: all);
    /// `no_plugin` says why none is configured when that is the case.
    pub fn resolve(
        file: RuntimeFile,
        base: &Path,
        data_dir: &Path,
        wanted: Option<Vec<String>>,
        resilience: ResilienceSettings,
        no_plugin: impl FnOnce() -> String,
    ) -> Result<Self, RuntimeConfigError> {
        if let Some(w) = &wanted
            && let Some(unknown) = w.iter().find(|n| !file.plugins.contains_key(*n))
        {
            return Err(RuntimeConfigError::UnknownContext(unknown.clone()));
        }
        let relative = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let deadline = file.default_deadline();
        let guest_limits = file.limits.resolve()?;
        let instance_shape = file.limits.instance_shape()?;
        let cache_dir = file
            .cache_dir
            .map(relative)
            .unwrap_or_else(|| data_dir.join("cache"));
        let cache_max_bytes = match file.cache_max_mb.unwrap_or(DEFAULT_CACHE_MAX_MB) {
            0 => return Err(RuntimeConfigError::CacheMaxMb("must be at least 1")),
            mb => mb
                .checked_mul(1024 * 1024)
                .ok_or(RuntimeConfigError::CacheMaxMb(
                    "more bytes than a file system holds",
                ))?,
        };
        let default_limits = ContextLimits {
            deadline,
            memory_limit: mebibytes(file.memory_limit_mb.unwrap_or(128), || {
                "memory_limit_mb".into()
            })?,
            instance_reuse: reuse(file.instance_reuse, 1)?,
        };
        let mut plugins = Vec::new();
        for (name, entry) in file.plugins {
            if !valid_name(&name) {
                return Err(RuntimeConfigError::Name(name));
            }
            if wanted.as_ref().is_some_and(|w| !w.contains(&name)) {
                continue;
            }
            let limits = ContextLimits {
                deadline: entry
                    .deadline_ms
                    .map(Duration::from_millis)
                    .unwrap_or(default_limits.deadline),
                memory_limit: match entry.memory_limit_mb {
                    Some(mb) => mebibytes(mb, || format!("plugins.{name}.memory_limit_mb"))?,
                    None => default_limits.memory_limit,
                },
                instance_reuse: reuse(entry.instance_reuse, default_limits.instance_reuse)?,
            };
            let secrets = secret_grants(&name, entry.secrets, relative)?;
            let access =
                AccessOverrides::parse(entry.access.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .map_err(|why| RuntimeConfigError::Access {
                        context: name.clone(),
                        why,
                    })?;
            plugins.push(PluginSource {
                secrets: Arc::new(secrets),
                access: Arc::new(access),
                name,
                path: relative(entry.path),
                limits,
                config: entry
                    .config
                    .iter()
                    .map(|(k, v)| (k.clone(), scalar(v)))
                    .collect(),
            });
        }
        if plugins.is_empty() {
            return Err(RuntimeConfigError::NoPlugin(no_plugin()));
        }
        let engine = EngineSettings {
            deadline: default_limits.deadline,
            memory_limit: plugins
                .iter()
                .map(|p| p.limits.memory_limit)
                .fold(default_limits.memory_limit, usize::max),
            max_instances: file.max_instances.unwrap_or(1_000),
            cache_dir,
            cache_max_bytes,
            compile_timeout: Duration::from_millis(
                file.compile_timeout_ms
                    .unwrap_or(DEFAULT_COMPILE_TIMEOUT_MS)
                    .max(1),
            ),
            max_call_depth: MAX_CALL_DEPTH,
            resilience,
            guest_limits,
            instance_shape,
        };
        Ok(RuntimeSettings {
            engine,
            plugins,
            default_limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(text: &str) -> Result<GuestLimits, RuntimeConfigError> {
        toml::from_str::<LimitsFile>(text)
            .expect("a [limits] table")
            .resolve()
    }

    #[test]
    fn the_instance_shape_defaults_safely_and_refuses_zero_by_name() {
        let file = |text: &str| toml::from_str::<LimitsFile>(text).expect("parses");
        assert_eq!(
            file("").instance_shape().expect("defaults"),
            InstanceShape::default()
        );
        let set = file("instance_memories = 3\nguest_stderr_bytes = 10\n")
            .instance_shape()
            .expect("set");
        assert_eq!((set.memories, set.stderr_bytes), (3, 10));
        for key in [
            "instance_core_instances",
            "instance_memories",
            "instance_tables",
            "table_elements",
            "guest_stderr_bytes",
        ] {
            let err = file(&format!("{key} = 0"))
                .instance_shape()
                .expect_err("0 is refused");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn limits_default_safely_and_refuse_zero_or_an_oversized_correlation_id() {
        assert_eq!(limits("").expect("defaults"), GuestLimits::default());
        let set =
            limits("scan_entries = 5\nevents = 7\ncorrelation_id_bytes = 4096\n").expect("set");
        assert_eq!(
            (
                set.unit.scan_entries,
                set.unit.events,
                set.correlation_id_bytes
            ),
            (5, 7, 4096)
        );
        assert_eq!(set.unit.write_entries, UnitLimits::default().write_entries);
        for (text, key) in [
            ("write_bytes = 0", "limits.write_bytes"),
            ("sequences = 0", "limits.sequences"),
            ("correlation_id_bytes = 4097", "limits.correlation_id_bytes"),
        ] {
            let err = limits(text).expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        assert!(toml::from_str::<LimitsFile>("bogus = 1").is_err());
    }

    fn grants(text: &str) -> Result<SecretGrants, RuntimeConfigError> {
        let entries = toml::from_str(text).expect("a [plugins.<name>.secrets] table");
        secret_grants("pay", entries, |p| Path::new("/etc/ctx").join(p))
    }

    #[test]
    fn secrets_name_a_variable_or_a_file_relative_to_the_config() {
        let g = grants(
            "a = { env = \"A_KEY\" }\nb = { file = \"keys/b\" }\nc = { file = \"/run/c\" }\n",
        )
        .expect("valid");
        assert_eq!(g.names().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(
            format!("{g:?}"),
            r#"{"a": Env("A_KEY"), "b": File("/etc/ctx/keys/b"), "c": File("/run/c")}"#
        );
        assert_eq!(grants("").expect("none").names().count(), 0);
    }

    #[test]
    fn a_secret_with_no_source_two_sources_or_an_empty_one_is_refused_by_name() {
        for (text, why) in [
            ("k = { env = \"A\", file = \"b\" }", "not both"),
            ("k = {}", "give `env"),
            ("k = { env = \"\" }", "must name a variable"),
            ("k = { env = \"A=B\" }", "must name a variable"),
            ("k = { file = \"\" }", "must name a file"),
        ] {
            let err = grants(text).expect_err(text).to_string();
            assert!(
                err.contains("plugins.pay.secrets.k") && err.contains(why),
                "{text}: {err}"
            );
        }
        let err = grants("\"\" = { env = \"A\" }").expect_err("empty name");
        assert!(err.to_string().contains("must not be empty"), "{err}");
    }

    #[test]
    fn a_secret_value_cannot_be_written_in_the_file() {
        // Only a source: an inline value, or any other key, does not parse.
        for text in [
            "k = \"the value\"",
            "k = { value = \"the value\" }",
            "k = { env = \"A\", value = \"the value\" }",
        ] {
            assert!(
                toml::from_str::<BTreeMap<String, SecretEntry>>(text).is_err(),
                "{text}"
            );
        }
    }
}
