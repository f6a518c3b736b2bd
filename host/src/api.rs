//! The admin API's wire types: what `GET /admin/plugins`, `PUT /admin/plugins/{name}`,
//! `POST /admin/plugins/{name}/rollback` and `GET /admin/topology` answer, and the problem
//! body of every error. The host serialises them and the `ctxhost plugin` commands read
//! them back, so both sides share one definition.

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
    /// Names of the secrets granted to it (`[plugins.<name>.secrets]`), never their values.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// RFC 3339 time of the load.
    pub loaded_at: String,
    /// Invocations of this version running now.
    pub in_flight: u64,
    pub health: HealthInfo,
    pub limits: LimitsInfo,
    pub instances: InstancesInfo,
}

/// The access rule of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteAccessInfo {
    /// `public`, `authenticated` or `roles:<role>,<role>`.
    pub rule: String,
    /// `component` (its `access` export), `operator` (`[plugins.<name>.access]`) or
    /// `default` (the route declares nothing: `authenticated`).
    pub origin: String,
}

/// One route a context serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub method: String,
    pub path: String,
    /// Who may call it; enforced only when authentication is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<RouteAccessInfo>,
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

/// What `GET /admin/topology` answers: the running system as a graph, for the console
/// (`GET /console`) and for operators. Contexts are nodes; typed calls and event flows are
/// edges. Rates are measured over the last `windowS` seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// RFC 3339 time this answer was made.
    pub at: String,
    /// Length of the window the rates are measured over, in seconds.
    pub window_s: f64,
    /// The loaded contexts, by name.
    pub nodes: Vec<TopologyNode>,
    /// Typed calls: a context importing an interface another loaded context exports.
    pub calls: Vec<CallEdge>,
    /// Event flows: a context that published an event type to each context subscribed to it.
    pub events: Vec<EventEdge>,
    /// Deployments and rollbacks, newest first (at most 50).
    pub deployments: Vec<DeploymentInfo>,
    /// Events recorded in the dead letters (`GET /admin/dead-letters`); `None` while
    /// storage cannot be read.
    pub dead_letters: Option<u64>,
    /// The event transport, as `/readyz` reports it to the admin token.
    pub broker: BrokerInfo,
}

/// Requests or calls per second, their share of errors and their 99th percentile latency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowRate {
    pub per_sec: f64,
    /// Share (0..=1) of them that failed.
    pub error_ratio: f64,
    /// `None` while there was nothing to measure.
    pub p99_ms: Option<f64>,
}

/// One loaded context in the topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologyNode {
    pub name: String,
    /// The version the component reports in its manifest.
    pub version: String,
    /// `<name>@<first 12 hex of the digest>`.
    pub id: String,
    /// `running`, or `unhealthy` while its invocations keep failing.
    pub health: String,
    /// Invocations running now.
    pub in_flight: u64,
    /// Instances kept idle for reuse now.
    pub idle: u64,
    /// Where this version came from (`config <path>`, `upload`, `rollback (...)`, ...).
    pub origin: String,
    /// The HTTP requests it served.
    pub requests: FlowRate,
}

/// Typed calls from one context into another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallEdge {
    pub caller: String,
    pub target: String,
    /// The interfaces of `target` that `caller` imports.
    pub interfaces: Vec<String>,
    /// State of the circuit breaker of calls into `target`: `closed`, `open`, `half-open`
    /// (`closed` before the first call), or `disabled`.
    pub breaker: String,
    pub rate: FlowRate,
}

/// Events of one publisher handled by one subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEdge {
    pub publisher: String,
    pub subscriber: String,
    /// Each event type of the flow, with its own rate and lag.
    pub types: Vec<EventTypeFlow>,
    /// Events per second over every type.
    pub per_sec: f64,
    /// Events published and not yet handled by the subscriber, the largest over the types.
    pub lag: u64,
}

/// One event type of an [`EventEdge`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeFlow {
    pub event_type: String,
    pub per_sec: f64,
    pub lag: u64,
}

/// One deployment or rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInfo {
    /// RFC 3339 time.
    pub at: String,
    pub context: String,
    pub version: String,
    /// `deploy` or `rollback`.
    pub action: String,
    /// `manual`, `automatic` or `watch`.
    pub trigger: String,
    /// `ok` or `refused`.
    pub outcome: String,
    pub detail: Option<String>,
}

/// The event transport's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerInfo {
    /// `embedded` or `amqp`.
    pub transport: String,
    /// Events flow now.
    pub ready: bool,
    /// `connected`, `connecting` or `disconnected`.
    pub state: String,
    pub detail: String,
    /// Events committed and not yet handed to the broker (`None`: no broker).
    pub outbox_pending: Option<u64>,
}
