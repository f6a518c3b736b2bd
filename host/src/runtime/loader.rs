//! Loading contexts: read, compile (or load from cache), check against the contract, link,
//! pre-instantiate, ask the component for its manifest, and register it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ComponentExportIndex};
use wasmtime_wasi_http::p2::bindings::ProxyIndices;

use super::cache::compile_cached;
use super::context::{LoadedContext, RouteSpec};
use super::engine::Runtime;
use super::linking::{check_compatible, define_forwarder, interfaces};
use crate::bindings::PlatformIndices;
use crate::state::{Table, UnitOfWork, db_tables};

/// Where a context's component comes from.
#[derive(Debug, Clone)]
pub struct PluginSource {
    pub name: String,
    pub path: PathBuf,
    pub config: BTreeMap<String, String>,
}

/// Why a context could not be loaded. Every message names the context.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{context}: cannot read {path}: {source}")]
    Read {
        context: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: not a valid component: {message}")]
    Compile { context: String, message: String },
    #[error("{context}: contract mismatch: {message}")]
    Contract { context: String, message: String },
    #[error("{context}: {message}")]
    Other { context: String, message: String },
}

struct Compiled {
    source: PluginSource,
    digest: String,
    component: Component,
}

const HTTP_HANDLER: &str = "wasi:http/incoming-handler@0.2.12";

/// Route methods the gateway knows.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

impl Runtime {
    /// Load every source; fails on the first context that cannot be loaded.
    pub async fn load_all(&self, sources: &[PluginSource]) -> Result<(), LoadError> {
        let mut compiled = Vec::new();
        for source in sources {
            compiled.push(self.compile(source.clone()).await?);
        }
        // Which context provides each cross-context interface.
        let mut providers: HashMap<String, usize> = HashMap::new();
        for (i, c) in compiled.iter().enumerate() {
            for (iface, _) in interfaces(&self.0.engine, &c.component, true) {
                if let Some(j) = providers.insert(iface.clone(), i) {
                    return Err(LoadError::Contract {
                        context: c.source.name.clone(),
                        message: format!(
                            "exports {iface}, which {} exports too",
                            compiled[j].source.name
                        ),
                    });
                }
            }
        }
        let tables: Vec<Table> = compiled
            .iter()
            .flat_map(|c| db_tables(&c.source.name))
            .collect();
        self.db()
            .ensure_tables(&tables)
            .map_err(|e| LoadError::Other {
                context: "host".into(),
                message: e.to_string(),
            })?;
        for c in &compiled {
            let loaded = self.link(c, |iface| {
                providers
                    .get(iface)
                    .map(|&j| (compiled[j].source.name.as_str(), &compiled[j].component))
            })?;
            let loaded = self.describe(loaded).await?;
            tracing::info!(
                context = %loaded.name,
                version = %loaded.version,
                digest = %loaded.digest,
                routes = loaded.routes.len(),
                subscriptions = loaded.subscriptions.len(),
                "context loaded"
            );
            self.registry().insert(Arc::new(loaded));
        }
        Ok(())
    }

    async fn compile(&self, source: PluginSource) -> Result<Compiled, LoadError> {
        let name = source.name.clone();
        let bytes = tokio::fs::read(&source.path)
            .await
            .map_err(|e| LoadError::Read {
                context: name.clone(),
                path: source.path.display().to_string(),
                source: e,
            })?;
        if wasmparser_is_core_module(&bytes) {
            return Err(LoadError::Compile {
                context: name,
                message:
                    "this is a core WebAssembly module; build a component (target wasm32-wasip2)"
                        .into(),
            });
        }
        let digest_hex = hex::encode(Sha256::digest(&bytes));
        let engine = self.0.engine.clone();
        let cache_dir = self.settings().cache_dir.clone();
        let hex_for_cache = digest_hex.clone();
        let component = tokio::task::spawn_blocking(move || {
            compile_cached(&engine, &cache_dir, &hex_for_cache, &bytes)
        })
        .await
        .map_err(|e| LoadError::Other {
            context: name.clone(),
            message: format!("compilation task failed: {e}"),
        })?
        .map_err(|e| LoadError::Compile {
            context: name.clone(),
            message: format!("{e:#}"),
        })?;
        Ok(Compiled {
            source,
            digest: format!("sha256:{digest_hex}"),
            component,
        })
    }

    fn link<'a>(
        &self,
        c: &Compiled,
        provider_of: impl Fn(&str) -> Option<(&'a str, &'a Component)>,
    ) -> Result<LoadedContext, LoadError> {
        let engine = &self.0.engine;
        let name = c.source.name.clone();
        let contract = |message: String| LoadError::Contract {
            context: name.clone(),
            message,
        };
        let mut linker = self.0.linker.clone();
        let mut imports = Vec::new();
        for (iface, funcs) in interfaces(engine, &c.component, false) {
            let Some((provider, provider_component)) = provider_of(&iface) else {
                return Err(contract(format!(
                    "imports {iface}, but no loaded context exports it"
                )));
            };
            let provided = interfaces(engine, provider_component, true)
                .into_iter()
                .find(|(i, _)| *i == iface)
                .map(|(_, f)| f)
                .unwrap_or_default();
            for (func, ty) in &funcs {
                let Some((_, pty)) = provided.iter().find(|(f, _)| f == func) else {
                    return Err(contract(format!(
                        "imports {iface}.{func}, which {provider} does not export"
                    )));
                };
                check_compatible(&iface, func, ty, pty)
                    .map_err(|m| contract(format!("{m} (provider: {provider})")))?;
            }
            define_forwarder(&mut linker, &iface, &funcs).map_err(|e| LoadError::Other {
                context: name.clone(),
                message: format!("{e:#}"),
            })?;
            imports.push(iface);
        }
        let pre = linker
            .instantiate_pre(&c.component)
            .map_err(|e| contract(format!("{e:#}")))?;
        let platform = PlatformIndices::new(&pre).map_err(|e| contract(format!("{e:#}")))?;
        let proxy = ProxyIndices::new(&pre)
            .map_err(|e| contract(format!("must export {HTTP_HANDLER}: {e:#}")))?;
        let mut functions = HashMap::new();
        let mut exports = Vec::new();
        for (iface, funcs) in interfaces(engine, &c.component, true) {
            let idx = export_index(&c.component, None, &iface)
                .ok_or_else(|| contract(format!("cannot find export {iface}")))?;
            let mut map = HashMap::new();
            for (func, ty) in &funcs {
                check_compatible(&iface, func, ty, ty).map_err(contract)?;
                let f = export_index(&c.component, Some(&idx), func)
                    .ok_or_else(|| contract(format!("cannot find export {iface}.{func}")))?;
                map.insert(func.clone(), f);
            }
            functions.insert(iface.clone(), map);
            exports.push(iface);
        }
        Ok(LoadedContext {
            name: Arc::from(name.as_str()),
            version: String::new(),
            digest: c.digest.clone(),
            loaded_at: crate::time::now_rfc3339(),
            routes: Vec::new(),
            subscriptions: Vec::new(),
            imports,
            exports,
            config: Arc::new(c.source.config.clone()),
            table: crate::state::context_table(&name),
            pre,
            platform,
            proxy,
            functions,
        })
    }

    /// Ask a freshly linked context for its manifest and check it.
    async fn describe(&self, mut loaded: LoadedContext) -> Result<LoadedContext, LoadError> {
        let name = loaded.name.to_string();
        let other = |message: String| LoadError::Other {
            context: name.clone(),
            message,
        };
        let unit = UnitOfWork::begin(self.db()).map_err(|e| other(e.to_string()))?;
        // `describe` must not touch the store: its unit of work is never committed.
        let probe = Arc::new(loaded.clone());
        let manifest = self
            .invoke_describe(probe, unit)
            .await
            .map_err(|e| other(format!("describe failed: {e}")))?;
        let mut routes = Vec::new();
        for r in manifest.routes {
            let method = r.method.to_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                return Err(other(format!(
                    "manifest route {} {}: unsupported method",
                    r.method, r.path
                )));
            }
            if !r.path.starts_with('/') {
                return Err(other(format!(
                    "manifest route {} {}: path must start with '/'",
                    r.method, r.path
                )));
            }
            routes.push(RouteSpec {
                method,
                path: r.path,
            });
        }
        loaded.version = manifest.version;
        loaded.routes = routes;
        loaded.subscriptions = manifest.subscriptions;
        Ok(loaded)
    }
}

fn export_index(
    component: &Component,
    instance: Option<&ComponentExportIndex>,
    name: &str,
) -> Option<ComponentExportIndex> {
    component.get_export_index(instance, name)
}

/// A core module starts with the wasm magic and version 1; a component with layer 1.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}
