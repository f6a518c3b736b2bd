//! Hot swap: replacing a context's component while traffic flows.
//!
//! Every way in (the admin API, the CLI through it, the watched directory, rollback and the
//! self-healing rollback) goes through [`Swapper::deploy`]: compile off the request path,
//! check the contract against the contexts loaded now, instantiate once and run the
//! readiness check, keep the version in the data directory, then switch atomically (the
//! registry entry and the route table). Invocations in flight hold the old version's `Arc`
//! and finish on it; it is dropped when the last one ends. Any failure leaves the old
//! version serving.

mod versions;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::api::DeployReport;
use crate::bus::EventTransport;
use crate::gateway::{RouteError, RouteTable, SharedRoutes};
use crate::runtime::{
    Artifact, ContextLimits, LoadError, LoadedContext, PluginSource, Runtime, valid_name,
};
use crate::state::StateError;
pub(crate) use versions::{ARTIFACT_DIR, VersionRecord, VersionStore, Versions};
pub(crate) use watch::watch_dir;

/// Why a deployment or rollback was refused. The old version keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Routes(#[from] RouteError),
    #[error("{0:?} is not a valid context name (lowercase letters, digits, '-', '_'; at most 64)")]
    InvalidName(String),
    #[error("{0} has no previous version to roll back to")]
    NoPrevious(String),
    #[error("no context named {0} is loaded")]
    Unknown(String),
    #[error("{context}: the kept version {digest} is missing from the data directory")]
    MissingArtifact { context: String, digest: String },
    #[error("{context}: cannot keep the version's file: {source}")]
    Artifact {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot keep the version: {0}")]
    Storage(#[from] StateError),
}

/// The reason of a rollback made by self-healing, kept in the version's origin.
const AUTOMATIC_ROLLBACK: &str = "automatic: invocations kept failing";

/// Record a deployment or rollback of `name` that ended with `result`.
fn record(
    name: &str,
    action: &'static str,
    trigger: &'static str,
    result: &Result<DeployReport, SwapError>,
) {
    let (version, outcome, detail) = match result {
        Ok(r) => (r.version.clone(), "ok", None),
        Err(e) => (String::new(), "refused", Some(e.to_string())),
    };
    crate::telemetry::record_deployment(crate::telemetry::Deployment {
        at: crate::time::now_rfc3339(),
        context: name.to_string(),
        version,
        action,
        trigger,
        outcome,
        detail,
    });
}

/// Serialises deployments and owns the route table they change.
pub struct Swapper {
    runtime: Runtime,
    routes: Arc<SharedRoutes>,
    transport: Arc<dyn EventTransport>,
    versions: VersionStore,
    default_limits: ContextLimits,
    lock: tokio::sync::Mutex<()>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Swapper {
    pub fn new(
        runtime: Runtime,
        routes: Arc<SharedRoutes>,
        transport: Arc<dyn EventTransport>,
        versions: VersionStore,
        default_limits: ContextLimits,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Swapper {
            runtime,
            routes,
            transport,
            versions,
            default_limits,
            lock: tokio::sync::Mutex::new(()),
            shutdown,
        }
    }

    /// Deploy `bytes` as the new version of `name` (a new context if none is loaded).
    /// Recorded in the telemetry's deployments, whatever the outcome.
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Vec<u8>,
        origin: &str,
    ) -> Result<DeployReport, SwapError> {
        let result = self.deploy_inner(name, bytes, origin).await;
        let trigger = if origin.starts_with("watch") {
            "watch"
        } else {
            "manual"
        };
        if !matches!(&result, Ok(r) if !r.changed) {
            record(name, "deploy", trigger, &result);
        }
        result
    }

    async fn deploy_inner(
        &self,
        name: &str,
        bytes: Vec<u8>,
        origin: &str,
    ) -> Result<DeployReport, SwapError> {
        // Every way in (upload, watched directory) names the context: the name becomes a
        // table and a directory, so it is checked here, once for all of them.
        if !valid_name(name) {
            return Err(SwapError::InvalidName(name.to_string()));
        }
        let _one_at_a_time = self.lock.lock().await;
        let started = Instant::now();
        let current = self.runtime.registry().get(name);
        let artifact = self.artifact_for(name, bytes, origin, current.as_deref());
        let digest = artifact.digest();
        if let Some(c) = &current
            && c.digest == digest
        {
            return Ok(DeployReport {
                name: name.to_string(),
                version: c.version.clone(),
                digest,
                previous_digest: Some(c.digest.clone()),
                changed: false,
                elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
            });
        }
        let loaded = self.runtime.prepare(artifact.clone()).await?;
        self.versions
            .store_artifact(name, &digest, &artifact.bytes)
            .map_err(|source| SwapError::Artifact {
                context: name.to_string(),
                source,
            })?;
        let mut versions = self.versions.load(name)?;
        let record = VersionRecord {
            digest: digest.clone(),
            version: loaded.version.clone(),
            origin: origin.to_string(),
            deployed_at: crate::time::now_rfc3339(),
        };
        let table = self.routes_with(&loaded)?;
        versions.stack.push(record.clone());
        versions.history.push(record);
        self.versions.save(name, &versions).await?;
        let report = self.install(loaded, table, current.as_deref(), started);
        Ok(report)
    }

    /// Go back to the version that ran before the current one. Recorded in the telemetry's
    /// deployments, whatever the outcome.
    pub async fn rollback(&self, name: &str, reason: &str) -> Result<DeployReport, SwapError> {
        let result = self.rollback_inner(name, reason).await;
        let trigger = if reason == AUTOMATIC_ROLLBACK {
            "automatic"
        } else {
            "manual"
        };
        record(name, "rollback", trigger, &result);
        result
    }

    async fn rollback_inner(&self, name: &str, reason: &str) -> Result<DeployReport, SwapError> {
        let _one_at_a_time = self.lock.lock().await;
        let started = Instant::now();
        let Some(current) = self.runtime.registry().get(name) else {
            return Err(SwapError::Unknown(name.to_string()));
        };
        let mut versions = self.versions.load(name)?;
        if versions.stack.len() < 2 {
            return Err(SwapError::NoPrevious(name.to_string()));
        }
        let previous = versions.stack[versions.stack.len() - 2].clone();
        let bytes = self
            .versions
            .read_artifact(name, &previous.digest)
            .ok_or_else(|| SwapError::MissingArtifact {
                context: name.to_string(),
                digest: previous.digest.clone(),
            })?;
        let origin = format!("rollback ({reason})");
        let artifact = self.artifact_for(name, bytes, &origin, Some(&current));
        let loaded = self.runtime.prepare(artifact).await?;
        let table = self.routes_with(&loaded)?;
        versions.stack.pop();
        versions.history.push(VersionRecord {
            digest: previous.digest.clone(),
            version: loaded.version.clone(),
            origin,
            deployed_at: crate::time::now_rfc3339(),
        });
        self.versions.save(name, &versions).await?;
        Ok(self.install(loaded, table, Some(&current), started))
    }

    /// The versions kept for `name`.
    pub fn versions(&self, name: &str) -> Result<Versions, SwapError> {
        Ok(self.versions.load(name)?)
    }

    /// The files of the versions `snapshot` records, for a backup of it.
    pub(crate) fn kept_files(
        &self,
        snapshot: &redb::ReadTransaction,
    ) -> Result<Vec<crate::state::backup::DataFile>, StateError> {
        self.versions.kept_files(snapshot)
    }

    fn artifact_for(
        &self,
        name: &str,
        bytes: Vec<u8>,
        origin: &str,
        current: Option<&LoadedContext>,
    ) -> Artifact {
        Artifact {
            name: name.to_string(),
            bytes: Arc::new(bytes),
            origin: origin.to_string(),
            config: current
                .map(|c| c.config.clone())
                .unwrap_or_else(|| Arc::new(BTreeMap::new())),
            limits: current.map(|c| c.limits).unwrap_or(self.default_limits),
            secrets: current.map(|c| c.secrets.clone()).unwrap_or_default(),
            access: current
                .map(|c| c.access_overrides.clone())
                .unwrap_or_default(),
        }
    }

    fn routes_with(&self, loaded: &LoadedContext) -> Result<RouteTable, SwapError> {
        let others = self.runtime.registry().all();
        let entries = others
            .iter()
            .filter(|c| c.name != loaded.name)
            .map(|c| (&c.name, c.routes.as_slice()))
            .chain(std::iter::once((&loaded.name, loaded.routes.as_slice())));
        Ok(RouteTable::build(entries)?)
    }

    fn install(
        &self,
        loaded: LoadedContext,
        table: RouteTable,
        previous: Option<&LoadedContext>,
        started: Instant,
    ) -> DeployReport {
        let name = loaded.name.to_string();
        let is_new = previous.is_none();
        let report = DeployReport {
            name: name.clone(),
            version: loaded.version.clone(),
            digest: loaded.digest.clone(),
            previous_digest: previous.map(|p| p.digest.clone()),
            changed: true,
            elapsed_ms: 0.0,
        };
        let origin = loaded.origin.clone();
        let subscribes = !loaded.subscriptions.is_empty();
        self.runtime.registry().insert(Arc::new(loaded));
        self.routes.set(table);
        // A new context, or a version that subscribes where the previous one did not, needs
        // its worker or consumer; starting one that runs already changes nothing.
        if is_new || subscribes {
            self.transport
                .start(vec![name.clone()], self.shutdown.clone());
        }
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(
            context = %name,
            version = %report.version,
            digest = %report.digest,
            previous = report.previous_digest.as_deref().unwrap_or("-"),
            origin = %origin,
            elapsed_ms,
            "context version switched"
        );
        DeployReport {
            elapsed_ms,
            ..report
        }
    }

    /// Turn reports of unhealthy versions into rollbacks, when the failures started with a
    /// swap and a previous version exists.
    pub fn spawn_self_healing(self: &Arc<Self>) {
        let Some(mut rx) = self.runtime.take_unhealthy_reports() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(report) = rx.recv().await {
                let Some(current) = this.runtime.registry().get(&report.context) else {
                    continue;
                };
                if current.digest != report.digest {
                    continue;
                }
                let swapped = !current.origin.starts_with("config")
                    && !current.origin.starts_with("restored");
                if !swapped {
                    tracing::error!(context = %report.context, "context is unhealthy and was not deployed by a swap: no automatic rollback");
                    continue;
                }
                // Going back once is self-healing; going back again would walk down the
                // whole stack on a cause no version can fix (a failing dependency).
                if current.origin.contains(AUTOMATIC_ROLLBACK) {
                    tracing::error!(context = %report.context, "context is unhealthy and was reached by an automatic rollback: no further automatic rollback");
                    continue;
                }
                match this.rollback(&report.context, AUTOMATIC_ROLLBACK).await {
                    Ok(r) => {
                        tracing::warn!(context = %report.context, from = %report.digest, to = %r.digest, "rolled back automatically: the new version kept failing")
                    }
                    Err(e) => {
                        tracing::error!(context = %report.context, error = %e, "automatic rollback failed")
                    }
                }
            }
        });
    }
}

/// What one configured context runs at start, and the configured file to fall back to.
struct StartupChoice {
    chosen: Artifact,
    configured: Artifact,
    /// The recorded digest of the chosen version when it is a kept one.
    kept: Option<String>,
}

/// Load the configured contexts at start: each runs the version deployed last, unless the
/// configured file changed since the last start (then the file wins and becomes a version).
/// A kept version that no longer loads (a newer host refuses it, its file is damaged) is
/// replaced by the configured file, which becomes the running version, and the log and the
/// version's origin in `GET /admin/plugins` say why; only a configured file that does not
/// load stops the start.
pub(crate) async fn load_at_start(
    runtime: &Runtime,
    versions: &VersionStore,
    plugins: &[PluginSource],
) -> Result<(), SwapError> {
    let mut choices = startup_artifacts(versions, plugins).await?;
    loop {
        let artifacts = choices.iter().map(|c| c.chosen.clone()).collect();
        let failure = match runtime.load_all(artifacts).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let Some((choice, kept)) = choices
            .iter_mut()
            .filter(|c| c.chosen.name == failure.context())
            .find_map(|c| c.kept.clone().map(|k| (c, k)))
        else {
            return Err(failure.into());
        };
        tracing::error!(
            context = %choice.chosen.name,
            kept = %kept,
            error = %failure,
            "the version deployed last does not load: starting the configured file instead"
        );
        let fallback = Artifact {
            origin: format!(
                "{} (fallback: the kept version {kept} did not load: {failure})",
                choice.configured.origin
            ),
            ..choice.configured.clone()
        };
        let mut v = versions.load(&fallback.name)?;
        let record = VersionRecord {
            digest: fallback.digest(),
            version: String::new(),
            origin: fallback.origin.clone(),
            deployed_at: crate::time::now_rfc3339(),
        };
        v.stack.push(record.clone());
        v.history.push(record);
        versions.save(&fallback.name, &v).await?;
        choice.chosen = fallback.clone();
        choice.configured = fallback;
        choice.kept = None;
    }
}

/// Decide what each configured context runs at start: the version deployed last, unless the
/// configured file changed since the last start (then the file wins and becomes a version).
async fn startup_artifacts(
    versions: &VersionStore,
    plugins: &[PluginSource],
) -> Result<Vec<StartupChoice>, SwapError> {
    let mut out = Vec::new();
    for p in plugins {
        let bytes = std::fs::read(&p.path).map_err(|source| LoadError::Read {
            context: p.name.clone(),
            path: p.path.display().to_string(),
            source,
        })?;
        let configured = Artifact {
            name: p.name.clone(),
            bytes: Arc::new(bytes),
            origin: format!("config {}", p.path.display()),
            config: Arc::new(p.config.clone()),
            limits: p.limits,
            secrets: p.secrets.clone(),
            access: p.access.clone(),
        };
        let digest = configured.digest();
        let mut v = versions.load(&p.name)?;
        let kept = v.stack.last().cloned();
        if v.configured.as_deref() == Some(digest.as_str())
            && let Some(top) = kept
            && top.digest != digest
            && let Some(bytes) = versions.read_artifact(&p.name, &top.digest)
        {
            tracing::info!(context = %p.name, digest = %top.digest, "restoring the version deployed last");
            out.push(StartupChoice {
                chosen: Artifact {
                    bytes: Arc::new(bytes),
                    origin: format!("restored ({})", top.origin),
                    ..configured.clone()
                },
                configured,
                kept: Some(top.digest),
            });
            continue;
        }
        if v.stack.last().map(|r| r.digest.as_str()) != Some(digest.as_str()) {
            versions
                .store_artifact(&p.name, &digest, &configured.bytes)
                .map_err(|source| SwapError::Artifact {
                    context: p.name.clone(),
                    source,
                })?;
            let record = VersionRecord {
                digest: digest.clone(),
                version: String::new(),
                origin: configured.origin.clone(),
                deployed_at: crate::time::now_rfc3339(),
            };
            v.stack.push(record.clone());
            v.history.push(record);
        }
        v.configured = Some(digest);
        versions.save(&p.name, &v).await?;
        out.push(StartupChoice {
            chosen: configured.clone(),
            configured,
            kept: None,
        });
    }
    Ok(out)
}
