//! The configuration file of a test host: [`HostOptions`] says what the host loads besides
//! the four rental contexts, and [`config_text`] writes the `ctxhost.toml` the host is
//! started with.

use std::path::{Path, PathBuf};

use crate::broker;

/// The four rental contexts every test host loads.
pub const PLUGINS: [&str; 4] = ["order", "payment", "car", "view"];

/// The admin token every test host is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

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

    /// The plugins the host loads: the four rental contexts, and `chaos` if asked for.
    pub(crate) fn plugin_names(&self) -> Vec<&'static str> {
        let mut names = PLUGINS.to_vec();
        if self.chaos {
            names.push("chaos");
        }
        names
    }

    /// The data directory given with [`HostOptions::data_dir`], if any.
    pub(crate) fn chosen_data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }
}

/// The configuration file of a test host: the top-level keys first (TOML puts a key after a
/// table header into that table), then the raw tables, `[amqp]` and the plugin tables.
pub(crate) fn config_text(
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
