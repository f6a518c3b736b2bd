//! Loading a context version: compile (or load from cache), check it against the contract,
//! link its imports to the contexts that provide them, pre-instantiate, read its manifest
//! and run its readiness check. Used at start for the configured set and by hot swap.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ComponentExportIndex};
use wasmtime_wasi_http::p2::bindings::ProxyIndices;

use super::cache::compile_cached;
use super::context::{ContextLimits, LoadedContext, RouteAccess, RouteSpec};
use super::engine::Runtime;
use super::health::{Health, HealthPolicy};
use super::invoke::{Cause, InvokeError, cause};
use super::linking::{check_compatible, define_forwarder, interfaces};
use crate::bindings::PlatformIndices;
use crate::bindings::access::{AccessRulesIndices, RouteRule, Rule};
use crate::bindings::exports::ctxhost::platform::context::Route;
use crate::capabilities::{SecretGrants, valid_event_type};
use crate::identity::{Access, AccessOverrides};
use crate::state::{StateError, UnitOfWork, db_tables};

/// A context as configured: where its component is, its settings and limits.
#[derive(Debug, Clone)]
pub struct PluginSource {
    pub name: String,
    pub path: PathBuf,
    pub config: BTreeMap<String, String>,
    pub limits: ContextLimits,
    /// The secrets granted to the context.
    pub secrets: Arc<SecretGrants>,
    /// The operator's access rules, which win over the component's.
    pub access: Arc<AccessOverrides>,
}

/// The bytes of one version of a context, with what the host needs to run it.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub name: String,
    pub bytes: Arc<Vec<u8>>,
    /// Where the bytes came from, shown to operators.
    pub origin: String,
    pub config: Arc<BTreeMap<String, String>>,
    pub limits: ContextLimits,
    /// The secrets granted to the context.
    pub secrets: Arc<SecretGrants>,
    /// The operator's access rules, which win over the component's.
    pub access: Arc<AccessOverrides>,
}

impl Artifact {
    /// `sha256:<hex>` of the bytes.
    pub fn digest(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(self.bytes.as_slice()))
        )
    }
}

/// Why a context version could not be loaded. Every message names the context and the
/// stage that refused it.
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
    #[error("{context}: compilation took longer than {limit_ms} ms")]
    CompileTimeout { context: String, limit_ms: u128 },
    #[error("{context}: the compilation task failed: {source}")]
    CompileTask {
        context: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("{context}: contract mismatch: {message}")]
    Contract { context: String, message: String },
    #[error("{context}: cannot link its imports: {source}")]
    Link {
        context: String,
        #[source]
        source: Cause,
    },
    #[error("{context}: describe failed: {source}")]
    Describe {
        context: String,
        #[source]
        source: InvokeError,
    },
    #[error("{context}: manifest route {method} {path}: {reason}")]
    Manifest {
        context: String,
        method: String,
        path: String,
        reason: &'static str,
    },
    #[error("{context}: access rule for {method} {path}: {reason}")]
    Access {
        context: String,
        method: String,
        path: String,
        reason: &'static str,
    },
    #[error(
        "{context}: manifest subscription {event_type:?}: not an event type (1 to 128 letters, digits, '.', '-' or '_')"
    )]
    Subscription { context: String, event_type: String },
    #[error("{context}: readiness check failed: {message}")]
    NotReady { context: String, message: String },
    #[error("{context}: cannot prepare its state: {source}")]
    State {
        context: String,
        #[source]
        source: StateError,
    },
}

impl LoadError {
    /// The context that could not be loaded.
    pub fn context(&self) -> &str {
        match self {
            LoadError::Read { context, .. }
            | LoadError::Compile { context, .. }
            | LoadError::CompileTimeout { context, .. }
            | LoadError::CompileTask { context, .. }
            | LoadError::Contract { context, .. }
            | LoadError::Link { context, .. }
            | LoadError::Describe { context, .. }
            | LoadError::Manifest { context, .. }
            | LoadError::Access { context, .. }
            | LoadError::Subscription { context, .. }
            | LoadError::NotReady { context, .. }
            | LoadError::State { context, .. } => context,
        }
    }
}

/// A compiled component, not yet linked.
pub(super) struct Compiled {
    artifact: Artifact,
    digest: String,
    component: Component,
}

const HTTP_HANDLER: &str = "wasi:http/incoming-handler@0.2.12";
/// The optional export of access rules.
const ACCESS: &str = "ctxhost:platform/access@0.1.0";

/// Route methods the gateway knows.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

impl Runtime {
    /// Load the configured set at start; fails on the first context that cannot be loaded.
    pub async fn load_all(&self, artifacts: Vec<Artifact>) -> Result<(), LoadError> {
        let mut compiled = Vec::new();
        for a in artifacts {
            compiled.push(self.compile(a).await?);
        }
        let mut providers: HashMap<String, usize> = HashMap::new();
        for (i, c) in compiled.iter().enumerate() {
            for (iface, _) in interfaces(&self.0.engine, &c.component, true) {
                if let Some(j) = providers.insert(iface.clone(), i) {
                    return Err(LoadError::Contract {
                        context: c.artifact.name.clone(),
                        message: format!(
                            "exports {iface}, which {} exports too",
                            compiled[j].artifact.name
                        ),
                    });
                }
            }
        }
        for c in &compiled {
            self.ensure_tables(&c.artifact.name)?;
        }
        for c in &compiled {
            let loaded = self.link(c, |iface| {
                providers.get(iface).map(|&j| {
                    (
                        compiled[j].artifact.name.clone(),
                        compiled[j].component.clone(),
                    )
                })
            })?;
            let loaded = self.check_ready(loaded).await?;
            tracing::info!(
                context = %loaded.name,
                version = %loaded.version,
                digest = %loaded.digest,
                origin = %loaded.origin,
                routes = loaded.routes.len(),
                subscriptions = loaded.subscriptions.len(),
                "context loaded"
            );
            self.registry().insert(Arc::new(loaded));
        }
        Ok(())
    }

    /// Prepare a new version of a context for a hot swap, against the contexts loaded now:
    /// its imports must be provided, and every context importing what it exports must
    /// still link. Nothing changes until the caller installs the result.
    pub async fn prepare(&self, artifact: Artifact) -> Result<LoadedContext, LoadError> {
        let name = artifact.name.clone();
        let compiled = self.compile(artifact).await?;
        let contract = |message: String| LoadError::Contract {
            context: name.clone(),
            message,
        };
        let engine = &self.0.engine;
        let new_exports = interfaces(engine, &compiled.component, true);
        for other in self.registry().all() {
            if *other.name == *name {
                continue;
            }
            for iface in &other.exports {
                if new_exports.iter().any(|(i, _)| i == iface) {
                    return Err(contract(format!(
                        "exports {iface}, which {} exports too",
                        other.name
                    )));
                }
            }
            for (iface, funcs) in interfaces(engine, &other.component, false) {
                let current_provider = self.registry().provider(&iface);
                let provided_by_this = current_provider.is_some_and(|p| *p.name == *name)
                    || new_exports.iter().any(|(i, _)| *i == iface);
                if !provided_by_this {
                    continue;
                }
                let Some((_, new_funcs)) = new_exports.iter().find(|(i, _)| *i == iface) else {
                    return Err(contract(format!(
                        "{} imports {iface}, which this version does not export",
                        other.name
                    )));
                };
                for (func, ty) in &funcs {
                    let Some((_, nty)) = new_funcs.iter().find(|(f, _)| f == func) else {
                        return Err(contract(format!(
                            "{} imports {iface}.{func}, which this version does not export",
                            other.name
                        )));
                    };
                    check_compatible(&iface, func, ty, nty)
                        .map_err(|m| contract(format!("{m} (importer: {})", other.name)))?;
                }
            }
        }
        self.ensure_tables(&name)?;
        let loaded = self.link(&compiled, |iface| {
            self.registry()
                .provider(iface)
                .filter(|p| *p.name != *name)
                .map(|p| (p.name.to_string(), p.component.clone()))
        })?;
        self.check_ready(loaded).await
    }

    /// Create the tables of context `name` when they do not exist yet.
    fn ensure_tables(&self, name: &str) -> Result<(), LoadError> {
        let tables = db_tables(name);
        self.db()
            .ensure_tables(&tables)
            .map_err(|source| LoadError::State {
                context: name.to_string(),
                source,
            })
    }

    async fn compile(&self, artifact: Artifact) -> Result<Compiled, LoadError> {
        let name = artifact.name.clone();
        if is_core_module(&artifact.bytes) {
            return Err(LoadError::Compile {
                context: name,
                message:
                    "this is a core WebAssembly module; build a component (target wasm32-wasip2)"
                        .into(),
            });
        }
        let digest = artifact.digest();
        let engine = self.0.engine.clone();
        let cache_dir = self.settings().cache_dir.clone();
        let cache_max = self.settings().cache_max_bytes;
        let hex = digest.trim_start_matches("sha256:").to_string();
        let bytes = artifact.bytes.clone();
        // Compilation cannot be interrupted: past the deadline the caller stops waiting (and
        // a deployment releases the swap lock); the thread finishes on its own.
        let limit = self.settings().compile_timeout;
        let task = tokio::task::spawn_blocking(move || {
            compile_cached(&engine, &cache_dir, cache_max, &hex, &bytes)
        });
        let component = tokio::time::timeout(limit, task)
            .await
            .map_err(|_| LoadError::CompileTimeout {
                context: name.clone(),
                limit_ms: limit.as_millis(),
            })?
            .map_err(|source| LoadError::CompileTask {
                context: name.clone(),
                source,
            })?
            .map_err(|e| LoadError::Compile {
                context: name.clone(),
                message: format!("{e:#}"),
            })?;
        Ok(Compiled {
            artifact,
            digest,
            component,
        })
    }

    fn link(
        &self,
        c: &Compiled,
        provider_of: impl Fn(&str) -> Option<(String, Component)>,
    ) -> Result<LoadedContext, LoadError> {
        let engine = &self.0.engine;
        let name = c.artifact.name.clone();
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
            let provided = interfaces(engine, &provider_component, true)
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
            define_forwarder(&mut linker, &iface, &funcs).map_err(|e| LoadError::Link {
                context: name.clone(),
                source: cause(e),
            })?;
            imports.push(iface);
        }
        let pre = linker
            .instantiate_pre(&c.component)
            .map_err(|e| contract(format!("{e:#}")))?;
        let platform = PlatformIndices::new(&pre).map_err(|e| contract(format!("{e:#}")))?;
        let access_rules = match c.component.get_export_index(None, ACCESS) {
            None => None,
            Some(_) => Some(
                AccessRulesIndices::new(&pre)
                    .map_err(|e| contract(format!("its {ACCESS} export: {e:#}")))?,
            ),
        };
        let proxy = ProxyIndices::new(&pre)
            .map_err(|e| contract(format!("must export {HTTP_HANDLER}: {e:#}")))?;
        let mut functions = HashMap::new();
        let mut exports = Vec::new();
        for (iface, funcs) in interfaces(engine, &c.component, true) {
            let idx = export_index(&c.component, None, &iface)
                .ok_or_else(|| contract(format!("cannot find export {iface}")))?;
            let mut map = HashMap::new();
            for (func, ty) in &funcs {
                check_compatible(&iface, func, ty, ty).map_err(|m| contract(m.to_string()))?;
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
            config: c.artifact.config.clone(),
            secrets: c.artifact.secrets.clone(),
            access: Vec::new(),
            access_overrides: c.artifact.access.clone(),
            table: crate::state::context_table(&name),
            origin: c.artifact.origin.clone(),
            limits: c.artifact.limits,
            in_flight: Arc::new(AtomicUsize::new(0)),
            health: Arc::new(Health::new(HealthPolicy::default())),
            warm: Arc::default(),
            component: c.component.clone(),
            pre,
            platform,
            access_rules,
            proxy,
            functions,
        })
    }

    /// Read the manifest and run the readiness check of a freshly linked version.
    async fn check_ready(&self, mut loaded: LoadedContext) -> Result<LoadedContext, LoadError> {
        let name = loaded.name.to_string();
        let state = |source| LoadError::State {
            context: name.clone(),
            source,
        };
        let probe = Arc::new(loaded.clone());
        // Neither call may change state: their unit of work is never committed.
        let unit = UnitOfWork::begin(self.db()).map_err(state)?;
        let (manifest, rules) =
            self.invoke_describe(probe.clone(), unit)
                .await
                .map_err(|source| LoadError::Describe {
                    context: name.clone(),
                    source,
                })?;
        let unit = UnitOfWork::begin(self.db()).map_err(state)?;
        match self.invoke_ready(probe, unit).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                return Err(LoadError::NotReady {
                    context: name,
                    message: reason,
                });
            }
            Err(e) => {
                return Err(LoadError::NotReady {
                    context: name,
                    message: e.to_string(),
                });
            }
        }
        loaded.routes = manifest_routes(&name, manifest.routes)?;
        loaded.access = route_access(&name, &loaded.routes, rules, &loaded.access_overrides)?;
        check_subscriptions(&name, &manifest.subscriptions)?;
        loaded.version = manifest.version;
        loaded.subscriptions = manifest.subscriptions;
        Ok(loaded)
    }
}

/// The routes a manifest declares, checked: a method the gateway knows (any case, made
/// upper case) and a path from `/`. Whether the patterns form a table with the other
/// contexts' is the route table's to say.
pub(super) fn manifest_routes(
    context: &str,
    routes: Vec<Route>,
) -> Result<Vec<RouteSpec>, LoadError> {
    let mut checked = Vec::with_capacity(routes.len());
    for r in routes {
        let method = r.method.to_ascii_uppercase();
        let refused = |reason| LoadError::Manifest {
            context: context.to_string(),
            method: r.method.clone(),
            path: r.path.clone(),
            reason,
        };
        if !METHODS.contains(&method.as_str()) {
            return Err(refused("unsupported method"));
        }
        if !r.path.starts_with('/') {
            return Err(refused("path must start with '/'"));
        }
        checked.push(RouteSpec {
            method,
            path: r.path,
        });
    }
    Ok(checked)
}

/// The access rule of each declared route: the operator's override, else the component's
/// rule, else `authenticated` (which only binds when authentication is configured). A rule
/// or an override naming a route the manifest does not declare refuses the version.
pub(super) fn route_access(
    context: &str,
    routes: &[RouteSpec],
    rules: Option<Vec<RouteRule>>,
    overrides: &AccessOverrides,
) -> Result<Vec<RouteAccess>, LoadError> {
    let refused = |method: &str, path: &str, reason| LoadError::Access {
        context: context.to_string(),
        method: method.to_string(),
        path: path.to_string(),
        reason,
    };
    let declared = |method: &str, path: &str| {
        routes
            .iter()
            .any(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
    };
    let mut from_component: Vec<((String, String), Access)> = Vec::new();
    for r in rules.unwrap_or_default() {
        if !declared(&r.method, &r.path) {
            return Err(refused(
                &r.method,
                &r.path,
                "the manifest declares no such route",
            ));
        }
        let key = (r.method.to_ascii_uppercase(), r.path.clone());
        if from_component.iter().any(|(k, _)| *k == key) {
            return Err(refused(
                &r.method,
                &r.path,
                "the route has more than one rule",
            ));
        }
        let rule = match r.rule {
            Rule::Public => Access::Public,
            Rule::Authenticated => Access::Authenticated,
            Rule::Roles(roles) if roles.iter().any(|r| r.is_empty()) || roles.is_empty() => {
                return Err(refused(
                    &r.method,
                    &r.path,
                    "a roles rule needs non-empty role names",
                ));
            }
            Rule::Roles(roles) => Access::Roles(roles),
        };
        from_component.push((key, rule));
    }
    if let Some(((method, path), _)) = overrides.0.iter().find(|((m, p), _)| !declared(m, p)) {
        return Err(refused(
            method,
            path,
            "the operator's rule names a route this version does not declare",
        ));
    }
    Ok(routes
        .iter()
        .map(|r| {
            let key = (r.method.clone(), r.path.clone());
            let (rule, origin) = if let Some(a) = overrides.0.get(&key) {
                (a.clone(), "operator")
            } else if let Some((_, a)) = from_component.iter().find(|(k, _)| *k == key) {
                (a.clone(), "component")
            } else {
                (Access::Authenticated, "default")
            };
            RouteAccess {
                method: r.method.clone(),
                path: r.path.clone(),
                rule,
                origin,
            }
        })
        .collect())
}

/// The event types a manifest subscribes to must be ones a context can publish: anything
/// else is never delivered, and over RabbitMQ would not fit in a binding's routing key.
pub(super) fn check_subscriptions(context: &str, event_types: &[String]) -> Result<(), LoadError> {
    match event_types.iter().find(|t| !valid_event_type(t)) {
        Some(t) => Err(LoadError::Subscription {
            context: context.to_string(),
            event_type: t.clone(),
        }),
        None => Ok(()),
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
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}
