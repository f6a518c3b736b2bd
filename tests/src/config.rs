//! The configuration file of a test host: [`HostOptions`] says what the host loads besides
//! the four rental contexts, [`config_table`] builds the settings as a TOML table (raw
//! snippets of the tests parsed and merged into it) and [`config_text`] serializes it into
//! the `ctxhost.toml` the host is started with.

use std::path::{Path, PathBuf};

use toml::map::Entry;
use toml::{Table, Value};

use crate::broker;
use crate::host::{plugin_dir, test_cache_dir};

/// The four rental contexts every test host loads.
pub const PLUGINS: [&str; 4] = ["order", "payment", "car", "view"];

/// The admin token every test host is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// What a test host loads besides the four rental contexts.
#[derive(Clone, Debug, Default)]
pub struct HostOptions {
    chaos: bool,
    data_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    contexts: Option<Vec<String>>,
    amqp_namespace: Option<String>,
    amqp_prefetch: Option<u16>,
    amqp_url: Option<String>,
    listen: Option<String>,
    netns: Option<PathBuf>,
    /// Environment variables of the host process.
    env: Vec<(String, String)>,
    /// What the methods below add, merged into the generated settings at start: top-level
    /// keys and tables, `plugins.<plugin>` keys and `plugins.<plugin>.config` entries.
    extra: Table,
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
    #[track_caller]
    pub fn plugin_config(mut self, plugin: &str, key: &str, value: &str) -> Self {
        let config = Table::from_iter([(key.to_owned(), Value::from(value))]);
        let plugin_table = Table::from_iter([("config".to_owned(), Value::Table(config))]);
        let plugins = Table::from_iter([(plugin.to_owned(), Value::Table(plugin_table))]);
        let snippet = Table::from_iter([("plugins".to_owned(), Value::Table(plugins))]);
        merge(&mut self.extra, snippet, "");
        self
    }

    /// Adds top-level settings to the host configuration, a TOML snippet such as
    /// `watch_dir = "/tmp/x"`.
    #[track_caller]
    pub fn host_setting(mut self, line: &str) -> Self {
        merge(&mut self.extra, parse("host_setting", line), "");
        self
    }

    /// Adds settings to `[plugins.<plugin>]`, a TOML snippet such as `deadline_ms = 300`.
    #[track_caller]
    pub fn plugin_setting(mut self, plugin: &str, line: &str) -> Self {
        let plugins = Table::from_iter([(
            plugin.to_owned(),
            Value::Table(parse("plugin_setting", line)),
        )]);
        let snippet = Table::from_iter([("plugins".to_owned(), Value::Table(plugins))]);
        merge(&mut self.extra, snippet, "");
        self
    }

    /// Adds a TOML snippet to the host's configuration, for example `[resilience.payment]`
    /// tables and their keys; keys before its first table header are top-level keys. Its
    /// tables merge with the generated ones and those of other snippets; a key set twice
    /// panics.
    #[track_caller]
    pub fn host_config(mut self, lines: &str) -> Self {
        merge(&mut self.extra, parse("host_config", lines), "");
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

    /// The broker URL of the `[amqp]` table, instead of the tests' broker
    /// ([`broker::amqp_url`]); with [`HostOptions::amqp`].
    pub fn amqp_url(mut self, url: &str) -> Self {
        self.amqp_url = Some(url.to_owned());
        self
    }

    /// Listen on `addr` (`ip:port`) instead of a free port on 127.0.0.1.
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.to_owned());
        self
    }

    /// Start the host inside the network namespace at `path` (see [`crate::netns`]); give
    /// it an address there to listen on with [`HostOptions::listen`].
    pub fn netns(mut self, path: impl Into<PathBuf>) -> Self {
        self.netns = Some(path.into());
        self
    }

    /// The network namespace given with [`HostOptions::netns`], if any.
    pub(crate) fn chosen_netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// Sets the variable `key` to `value` in the host process's environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The variables [`HostOptions::env`] set.
    pub(crate) fn env_vars(&self) -> &[(String, String)] {
        &self.env
    }

    /// Use this data directory instead of a fresh one.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Use this compilation cache instead of the one every test host shares (for tests of
    /// the cache itself).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
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

    /// The data directory of a host whose files are in `dir`: the chosen one, else
    /// `dir/data`.
    pub fn data_dir_in(&self, dir: &Path) -> PathBuf {
        self.chosen_data_dir()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("data"))
    }

    /// Write the configuration file of a host with these options to `dir/ctxhost.toml` and
    /// return its path; the host keeps its state in [`HostOptions::data_dir_in`]. [`Host`]
    /// starts the binary with it; in-process tests give it to the library.
    ///
    /// [`Host`]: crate::Host
    pub fn write_config(&self, dir: &Path) -> PathBuf {
        let names = self.plugin_names();
        let plugin_dir = plugin_dir();
        for name in &names {
            let wasm = plugin_dir.join(format!("{name}.wasm"));
            assert!(
                wasm.is_file(),
                "plugin {} not found: run `cargo xtask build` first",
                wasm.display()
            );
        }
        let path = dir.join("ctxhost.toml");
        let cache_dir = self.cache_dir.clone().unwrap_or_else(test_cache_dir);
        let text = config_text(
            self,
            &names,
            &plugin_dir,
            &self.data_dir_in(dir),
            &cache_dir,
        );
        std::fs::write(&path, text).expect("write the test host config");
        path
    }
}

/// The settings of a test host: where it listens, its admin token, cache and data
/// directories, `contexts`, `[amqp]` and a `[plugins.<name>]` table with the `path` of each
/// of `names`, with what the test added through [`HostOptions`] merged in.
pub(crate) fn config_table(
    opts: &HostOptions,
    names: &[&str],
    plugin_dir: &Path,
    data_dir: &Path,
    cache_dir: &Path,
) -> Table {
    let path_value = |path: &Path| Value::from(path.to_string_lossy().into_owned());
    let mut table = Table::new();
    let listen = opts.listen.as_deref().unwrap_or("127.0.0.1:0");
    table.insert("listen".to_owned(), Value::from(listen));
    table.insert("admin_token".to_owned(), Value::from(ADMIN_TOKEN));
    table.insert("cache_dir".to_owned(), path_value(cache_dir));
    table.insert("data_dir".to_owned(), path_value(data_dir));
    if let Some(contexts) = &opts.contexts {
        for context in contexts {
            assert!(
                names.contains(&context.as_str()),
                "contexts: {context} is not a loaded plugin ({names:?})"
            );
        }
        table.insert("contexts".to_owned(), Value::from(contexts.clone()));
    }
    if let Some(namespace) = &opts.amqp_namespace {
        let mut amqp = Table::new();
        let url = opts.amqp_url.clone().unwrap_or_else(broker::amqp_url);
        amqp.insert("url".to_owned(), Value::from(url));
        amqp.insert("namespace".to_owned(), Value::from(namespace.as_str()));
        if let Some(prefetch) = opts.amqp_prefetch {
            amqp.insert("prefetch".to_owned(), Value::from(i64::from(prefetch)));
        }
        table.insert("amqp".to_owned(), Value::Table(amqp));
    } else {
        assert!(
            opts.amqp_prefetch.is_none() && opts.amqp_url.is_none(),
            "amqp_prefetch or amqp_url without amqp(namespace)"
        );
    }
    if let Some(Value::Table(plugins)) = opts.extra.get("plugins") {
        for plugin in plugins.keys() {
            assert!(
                names.contains(&plugin.as_str()),
                "configuration for a plugin not loaded: {plugin}"
            );
        }
    }
    let plugins = names
        .iter()
        .map(|name| {
            let wasm = plugin_dir.join(format!("{name}.wasm"));
            let plugin = Table::from_iter([("path".to_owned(), path_value(&wasm))]);
            ((*name).to_owned(), Value::Table(plugin))
        })
        .collect();
    table.insert("plugins".to_owned(), Value::Table(plugins));
    merge(&mut table, opts.extra.clone(), "");
    table
}

/// The configuration file of a test host: [`config_table`] as TOML.
pub(crate) fn config_text(
    opts: &HostOptions,
    names: &[&str],
    plugin_dir: &Path,
    data_dir: &Path,
    cache_dir: &Path,
) -> String {
    let table = config_table(opts, names, plugin_dir, data_dir, cache_dir);
    toml::to_string(&table).expect("serialize the test host configuration")
}

/// A TOML snippet given to `method`, as a table; panics when it is not TOML.
#[track_caller]
fn parse(method: &str, snippet: &str) -> Table {
    snippet
        .parse()
        .unwrap_or_else(|e| panic!("{method}: not a TOML snippet ({e}):\n{snippet}"))
}

/// Merges `from` into `into` (the table at the dotted path `at`): tables merge key by key,
/// any other value may be set only once (as in one TOML file), else this panics.
#[track_caller]
fn merge(into: &mut Table, from: Table, at: &str) {
    for (key, value) in from {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match into.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(value);
            }
            Entry::Occupied(slot) => match (slot.into_mut(), value) {
                (Value::Table(mine), Value::Table(theirs)) => merge(mine, theirs, &path),
                (mine, theirs) => panic!(
                    "`{path}` is set twice in the test host configuration: {mine} and {theirs}"
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use toml::{Table, Value};

    use super::{HostOptions, PLUGINS, config_table, config_text};
    use crate::broker;

    const WITH_CHAOS: [&str; 5] = ["order", "payment", "car", "view", "chaos"];

    /// The file written for `opts`, parsed back.
    fn written(opts: &HostOptions, names: &[&str]) -> Table {
        let text = config_text(
            opts,
            names,
            Path::new("plugins"),
            Path::new("data"),
            Path::new("cache"),
        );
        text.parse()
            .unwrap_or_else(|e| panic!("the written file is not TOML ({e}):\n{text}"))
    }

    fn table(text: &str) -> Table {
        text.parse()
            .unwrap_or_else(|e| panic!("bad expected TOML ({e}):\n{text}"))
    }

    const GENERATED: &str = r#"
listen = "127.0.0.1:0"
admin_token = "test-admin-token"
cache_dir = "cache"
data_dir = "data"
"#;

    const PLUGIN_PATHS: &str = r#"
[plugins.order]
path = "plugins/order.wasm"
[plugins.payment]
path = "plugins/payment.wasm"
[plugins.car]
path = "plugins/car.wasm"
[plugins.view]
path = "plugins/view.wasm"
"#;

    #[test]
    fn the_default_file_parses_back_to_the_default_settings() {
        let expected = table(&format!("{GENERATED}{PLUGIN_PATHS}"));
        assert_eq!(written(&HostOptions::new(), &PLUGINS), expected);
    }

    #[test]
    fn every_option_parses_back_to_its_setting() {
        let opts = HostOptions::new()
            .with_chaos()
            .host_config("[resilience.payment]\nretries = 2\n")
            .host_setting("watch_dir = \"w\"")
            .contexts(&["order", "payment"])
            .amqp("ns-1")
            .amqp_prefetch(8)
            .plugin_config("payment", "max-qty-per-order", "3")
            .plugin_setting("chaos", "deadline_ms = 300");
        let url = Value::from(broker::amqp_url());
        let expected = table(&format!(
            r#"{GENERATED}
contexts = ["order", "payment"]
watch_dir = "w"

[resilience.payment]
retries = 2

[amqp]
url = {url}
namespace = "ns-1"
prefetch = 8
{PLUGIN_PATHS}
[plugins.payment.config]
max-qty-per-order = "3"
[plugins.chaos]
path = "plugins/chaos.wasm"
deadline_ms = 300
"#
        ));
        assert_eq!(written(&opts, &WITH_CHAOS), expected);
    }

    #[test]
    fn raw_snippets_merge_into_the_generated_tables() {
        // Top-level keys before a snippet's first table stay top-level, also after a table
        // of an earlier snippet; arrays on lines of their own, quoted keys in a header and
        // a comment after it are TOML like any other; two snippets add to one table.
        let opts = HostOptions::new()
            .with_chaos()
            .host_config(
                "[rate_limit.routes.\"GET /cars\"] # by client\nclient_rate = 1.0\nclient_burst = 5\n",
            )
            .host_config(
                "watch_dir = \"w\"\nlist = [\n  [\"a\", \"b\"],\n  [1, 2],\n  [],\n]\n\
                 [rate_limit.routes.\"GET /payments\"]\nrate = 0.5\n\
                 [resilience.payment]\nbreaker = { enabled = false }\n",
            )
            .host_setting("instance_reuse = 1000")
            .plugin_setting("chaos", "deadline_ms = 300")
            .plugin_setting("chaos", "memory_limit_mb = 32")
            .plugin_config("payment", "fault-injection", "true")
            .plugin_config("payment", "max-qty-per-order", "3");
        let expected = table(&format!(
            r#"{GENERATED}
watch_dir = "w"
list = [["a", "b"], [1, 2], []]
instance_reuse = 1000

[rate_limit.routes."GET /cars"]
client_rate = 1.0
client_burst = 5
[rate_limit.routes."GET /payments"]
rate = 0.5

[resilience.payment.breaker]
enabled = false
{PLUGIN_PATHS}
[plugins.payment.config]
fault-injection = "true"
max-qty-per-order = "3"
[plugins.chaos]
path = "plugins/chaos.wasm"
deadline_ms = 300
memory_limit_mb = 32
"#
        ));
        assert_eq!(written(&opts, &WITH_CHAOS), expected);
    }

    #[test]
    fn strings_and_keys_that_need_quoting_survive() {
        let odd = "a \"quoted\" \\ back\\slash\nnew line\ttab \u{1} é";
        let opts = HostOptions::new().plugin_config("payment", "a key.with dots", odd);
        let text = config_text(
            &opts,
            &PLUGINS,
            Path::new("plug ins/\"x\""),
            Path::new(odd),
            Path::new("C:\\cache"),
        );
        let back: Table = text.parse().expect("the written file is TOML");
        assert_eq!(back["data_dir"].as_str(), Some(odd), "{text}");
        assert_eq!(back["cache_dir"].as_str(), Some("C:\\cache"), "{text}");
        assert_eq!(
            back["plugins"]["order"]["path"].as_str(),
            Some("plug ins/\"x\"/order.wasm"),
            "{text}"
        );
        assert_eq!(
            back["plugins"]["payment"]["config"]["a key.with dots"].as_str(),
            Some(odd),
            "{text}"
        );
    }

    #[test]
    #[should_panic(expected = "`listen` is set twice")]
    fn a_snippet_may_not_set_a_generated_key_again() {
        let opts = HostOptions::new().host_setting("listen = \"0.0.0.0:1\"");
        config_table(
            &opts,
            &PLUGINS,
            Path::new("p"),
            Path::new("d"),
            Path::new("c"),
        );
    }

    #[test]
    #[should_panic(expected = "`plugins.payment.config.max-qty-per-order` is set twice")]
    fn a_plugin_config_entry_may_be_set_only_once() {
        let _ = HostOptions::new()
            .plugin_config("payment", "max-qty-per-order", "3")
            .plugin_config("payment", "max-qty-per-order", "4");
    }

    #[test]
    #[should_panic(expected = "`resilience.payment.retries` is set twice")]
    fn snippets_may_not_set_a_key_twice() {
        let _ = HostOptions::new()
            .host_config("[resilience.payment]\nretries = 2\n")
            .host_config("[resilience.payment]\nretries = 3\n");
    }

    #[test]
    #[should_panic(expected = "configuration for a plugin not loaded: chaos")]
    fn settings_of_a_plugin_not_loaded_panic() {
        let opts = HostOptions::new().plugin_setting("chaos", "deadline_ms = 300");
        config_table(
            &opts,
            &PLUGINS,
            Path::new("p"),
            Path::new("d"),
            Path::new("c"),
        );
    }

    #[test]
    #[should_panic(expected = "host_config: not a TOML snippet")]
    fn a_snippet_that_is_not_toml_panics() {
        let _ = HostOptions::new().host_config("[resilience.payment\nretries = 2\n");
    }
}
