//! The admin API's wire types: what `GET /admin/plugins`, `PUT /admin/plugins/{name}` and
//! `POST /admin/plugins/{name}/rollback` answer, and the problem body of every error. The
//! host serialises them and the `ctxhost plugin` commands read them back, so both sides
//! share one definition.

use serde::{Deserialize, Serialize};

/// One loaded context, as listed by `GET /admin/plugins`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginInfo {
    pub name: String,
    /// The version the component reports in its manifest.
    pub version: String,
    /// `sha256:<hex>` of the `.wasm`.
    pub digest: String,
    /// `running`, or `unhealthy` while its invocations keep failing.
    pub state: String,
    /// Where this version came from (`config <path>`, `upload`, `rollback (...)`, ...).
    pub origin: String,
    pub routes: Vec<Route>,
    /// Event types it subscribes to.
    pub subscriptions: Vec<String>,
    /// Interfaces it imports from other contexts.
    pub imports: Vec<String>,
    /// Interfaces it exports to other contexts.
    pub exports: Vec<String>,
    /// RFC 3339 time of the load.
    pub loaded_at: String,
    /// Invocations of this version running now.
    pub in_flight: u64,
    pub health: HealthInfo,
    pub limits: LimitsInfo,
    pub instances: InstancesInfo,
}

/// One route a context serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub method: String,
    pub path: String,
}

/// Recent outcomes of a version's invocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthInfo {
    /// Failed invocations since the load.
    pub failures: u64,
    /// Failures in the sliding window.
    pub window_failures: u64,
    /// Invocations in the sliding window.
    pub window_calls: u64,
}

/// The limits of every invocation of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsInfo {
    pub deadline_ms: u64,
    pub memory_limit_bytes: u64,
    pub instance_reuse: u32,
}

/// A version's instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancesInfo {
    /// Instances created since the load.
    pub created: u64,
    /// Instances kept idle for reuse now.
    pub idle: u64,
}

/// What a deployment or a rollback did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployReport {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub previous_digest: Option<String>,
    /// False when the uploaded version was already running.
    pub changed: bool,
    /// From receiving the bytes to the new version taking requests.
    pub elapsed_ms: f64,
}

/// An RFC 9457 problem, the body of every error the host answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemDetails {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}
