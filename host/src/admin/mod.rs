//! The host's own endpoints: liveness, readiness and metrics (open; readiness in detail only with the
//! admin token), the console page (open: static files that show nothing without the token),
//! and the admin API behind a bearer token: plugins (list, deploy, rollback, versions), dead
//! letters (list, read, delete, retry), redelivery, resilience state, topology, storage. Its
//! answers are the wire types of [`crate::api`]. `GET /admin/backup` streams an online
//! backup (see `backup`).

mod auth;
mod backup;
mod console;
mod dead_letters;
mod metrics;
mod plugins;
mod topology;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{HealthInfo, InstancesInfo, LimitsInfo, PluginInfo, Route};
use crate::bus::{BusError, EventTransport};
use crate::gateway::problem::Problem;
use crate::resilience::RateLimiter;
use crate::runtime::{LoadedContext, Runtime};
use crate::storage::RedeliveryRefused;
use crate::swap::Swapper;

/// What the host's own endpoints need.
pub struct Admin {
    pub runtime: Runtime,
    pub transport: Arc<dyn EventTransport>,
    /// The state and contexts as the event transports see them, for the dead letters.
    pub(crate) bus: crate::bus::BusCtx,
    pub swapper: Arc<Swapper>,
    /// The gateway's rate limits, for `GET /admin/resilience`.
    pub limiter: Arc<RateLimiter>,
    /// Bearer token of the admin API.
    pub token: String,
    /// The contexts this process is configured to run (readiness waits for them).
    pub contexts: Vec<String>,
    /// Largest plugin upload, in bytes.
    pub upload_limit: usize,
    /// Whether and where `/metrics` is served.
    pub metrics: crate::telemetry::MetricsSettings,
    /// Verifies JWTs, which may carry the admin role; `None` when authentication is off.
    pub auth: Option<crate::identity::Authenticator>,
    /// Retention and the storage report.
    pub(crate) storage: Arc<crate::storage::Storage>,
}

/// The probes and the console, open, and the admin API behind the token.
pub(crate) fn router(admin: Arc<Admin>) -> Router {
    let protected = Router::new()
        .route("/admin/plugins", get(plugins))
        .route("/admin/plugins/{name}", put(plugins::deploy))
        .route("/admin/plugins/{name}/rollback", post(plugins::rollback))
        .route("/admin/plugins/{name}/versions", get(plugins::versions))
        .route("/admin/dead-letters", get(dead_letters::list))
        .route(
            "/admin/dead-letters/{*id}",
            get(dead_letters::get)
                .delete(dead_letters::delete)
                .post(dead_letters::retry),
        )
        .route("/admin/resilience", get(resilience))
        .route("/admin/topology", get(topology::topology))
        .route("/admin/subscriptions/{context}/redeliver", post(redeliver))
        .route("/admin/storage", get(storage))
        .route("/admin/backup", get(backup::backup))
        .route_layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            auth::require_token,
        ));
    let mut open = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/console", get(console::page))
        .route("/console/{file}", get(console::asset));
    if admin.metrics.listen.is_none() {
        open = open.route("/metrics", get(metrics::serve));
    }
    open.merge(protected).with_state(admin)
}

/// `GET /metrics` alone, for a listener of its own (`[telemetry] metrics_listen`).
pub(crate) fn metrics_router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::serve))
        .with_state(admin)
}

/// `GET /healthz`: the process is alive and can recover by itself. 503 only when it cannot:
/// the committer thread is gone, or the database could not be reopened for longer than
/// `storage_unhealthy_after_s` (a restart may help). Storage that is full or failing while
/// the host recovers is a matter of readiness, not liveness.
async fn healthz(State(app): State<Arc<Admin>>) -> Response {
    let storage = app.runtime.db().storage_status();
    if storage.live {
        Json(json!({ "status": "ok" })).into_response()
    } else {
        let body = json!({ "status": "failing", "reason": storage.reason });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// `GET /readyz`: every configured context is loaded and storage takes changes (else 503,
/// with a reason). A broker that is down makes the host `degraded`, still 200: requests are
/// served and events wait in the outbox, so taking the host out of rotation would only add
/// an outage. Without the admin token the answer is only the status and a non-secret
/// reason; with it, the contexts, the transport and storage in detail.
async fn readyz(State(app): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let mut contexts = Vec::new();
    let mut missing = None;
    for name in &app.contexts {
        let ctx = app.runtime.registry().get(name);
        let state = match &ctx {
            None => {
                missing.get_or_insert(name);
                "missing"
            }
            Some(c) if c.health.is_unhealthy() => "unhealthy",
            Some(_) => "running",
        };
        contexts.push(json!({ "name": name, "state": state }));
    }
    let storage = app.runtime.db().storage_status();
    let transport = app.transport.status();
    let (ready, status, reason) = match (missing, storage.ready, transport.ready) {
        (Some(name), _, _) => (
            false,
            "not ready",
            Some(format!("context {name} is not loaded")),
        ),
        (None, false, _) => (false, "not ready", storage.reason.map(str::to_string)),
        (None, true, false) => (
            true,
            "degraded",
            Some("the event broker is unreachable; events wait in the outbox".to_string()),
        ),
        (None, true, true) => (true, "ready", None),
    };
    let mut body = json!({ "status": status });
    if let Some(reason) = reason {
        body["reason"] = json!(reason);
    }
    if auth::authorized(&app, &headers) {
        body["contexts"] = json!(contexts);
        body["transport"] = json!(transport);
        body["storage"] = json!(storage);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /admin/plugins`: each loaded context with its version, digest, state, routes,
/// events, the names of its secrets, invocations in flight and health.
async fn plugins(State(app): State<Arc<Admin>>) -> Json<Vec<PluginInfo>> {
    Json(
        app.runtime
            .registry()
            .all()
            .iter()
            .map(|c| info(c))
            .collect(),
    )
}

fn info(c: &LoadedContext) -> PluginInfo {
    let (window_failures, window_calls) = c.health.window();
    PluginInfo {
        name: c.name.to_string(),
        version: c.version.clone(),
        digest: c.digest.clone(),
        state: if c.health.is_unhealthy() {
            "unhealthy"
        } else {
            "running"
        }
        .into(),
        origin: c.origin.clone(),
        routes: c
            .routes
            .iter()
            .map(|r| Route {
                method: r.method.clone(),
                path: r.path.clone(),
                access: c
                    .access_of(&r.method, &r.path)
                    .map(|a| crate::api::RouteAccessInfo {
                        rule: a.rule.to_string(),
                        origin: a.origin.to_string(),
                    }),
            })
            .collect(),
        subscriptions: c.subscriptions.clone(),
        imports: c.imports.clone(),
        exports: c.exports.clone(),
        secrets: c.secrets.names().map(str::to_string).collect(),
        loaded_at: c.loaded_at.clone(),
        in_flight: c.in_flight.load(std::sync::atomic::Ordering::SeqCst) as u64,
        health: HealthInfo {
            failures: c.health.failures(),
            window_failures: window_failures as u64,
            window_calls: window_calls as u64,
        },
        limits: LimitsInfo {
            deadline_ms: c.limits.deadline.as_millis() as u64,
            memory_limit_bytes: c.limits.memory_limit as u64,
            instance_reuse: c.limits.instance_reuse,
        },
        instances: InstancesInfo {
            created: c.warm.created(),
            idle: c.warm.len() as u64,
        },
    }
}

/// `GET /admin/resilience`: breaker states, bulkhead occupancy, counters of calls between
/// contexts, and the gateway's rate limits.
async fn resilience(State(app): State<Arc<Admin>>) -> Json<Value> {
    let mut body = app.runtime.resilience().snapshot();
    body["rateLimit"] = app.limiter.snapshot();
    Json(body)
}

/// `GET /admin/storage`: what the database holds (event log, inboxes, dead letters, each
/// context's keyspace), the file and the disk, the retention in force and what pruning
/// removed.
async fn storage(State(app): State<Arc<Admin>>) -> Response {
    match app.storage.report() {
        Ok(report) => Json(report).into_response(),
        Err(e) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Body of a redelivery request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Redeliver {
    #[serde(default)]
    from_seq: u64,
}

/// `POST /admin/subscriptions/{context}/redeliver`: deliver every event after `fromSeq`
/// to the context again; events it already applied are skipped by its inbox. Over RabbitMQ
/// the answer says how many of this process's events were sent to the context's queue
/// (`republished`).
async fn redeliver(
    State(app): State<Arc<Admin>>,
    Path(context): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let req: Redeliver = if body.is_empty() {
        Redeliver { from_seq: 0 }
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"fromSeq\": integer >= 0}}: {e}"),
                )
                .into_response();
            }
        }
    };
    // An unknown context is answered as such before any question about the log.
    let subscribes = app
        .runtime
        .registry()
        .get(&context)
        .is_some_and(|c| !c.subscriptions.is_empty());
    if !subscribes {
        return Problem::new(
            StatusCode::NOT_FOUND,
            BusError::UnknownSubscriber(context).to_string(),
        )
        .into_response();
    }
    match app.storage.check_redelivery(req.from_seq) {
        Ok(()) => {}
        Err(e @ RedeliveryRefused::State(_)) => {
            return Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
        }
        Err(e) => return Problem::new(StatusCode::CONFLICT, e.to_string()).into_response(),
    }
    match app.transport.redeliver(&context, req.from_seq).await {
        Ok(None) => Json(json!({ "context": context, "fromSeq": req.from_seq })).into_response(),
        Ok(Some(sent)) => Json(json!({
            "context": context,
            "fromSeq": req.from_seq,
            "republished": sent,
        }))
        .into_response(),
        Err(e @ BusError::UnknownSubscriber(_)) => {
            Problem::new(StatusCode::NOT_FOUND, e.to_string()).into_response()
        }
        Err(e @ BusError::BeyondHead { .. }) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response()
        }
        Err(e @ BusError::Unavailable(_)) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
