//! The host's own endpoints: liveness and readiness (open), and the admin API behind a
//! bearer token: plugins (list, deploy, rollback, versions), dead letters, redelivery.

mod auth;
mod plugins;

pub use auth::require_token;
pub use plugins::{deploy, rollback, versions};

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::bus::BusError;
use crate::gateway::problem::Problem;
use crate::server::App;
use crate::state::DEAD_LETTERS;

/// `GET /healthz`: the process is alive and serving.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: every configured context is loaded (else 503). A broker that is down
/// makes the host `degraded`, still 200: requests are served and events wait in the outbox,
/// so taking the host out of rotation would only add an outage.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let mut contexts = Vec::new();
    let mut ready = true;
    for name in &app.contexts {
        let ctx = app.runtime.registry().get(name);
        ready &= ctx.is_some();
        let state = match &ctx {
            None => "missing",
            Some(c) if c.health.is_unhealthy() => "unhealthy",
            Some(_) => "running",
        };
        contexts.push(json!({ "name": name, "state": state }));
    }
    let transport = app.transport.status();
    let status = match (ready, transport.ready) {
        (false, _) => "not ready",
        (true, false) => "degraded",
        (true, true) => "ready",
    };
    let body = json!({
        "status": status,
        "contexts": contexts,
        "transport": transport,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /admin/plugins`: each loaded context with its version, digest, state, routes,
/// events, invocations in flight and health.
pub async fn plugins(State(app): State<Arc<App>>) -> Json<Value> {
    let list: Vec<Value> = app
        .runtime
        .registry()
        .all()
        .iter()
        .map(|c| {
            let (window_failures, window_calls) = c.health.window();
            json!({
                "name": &*c.name,
                "version": c.version,
                "digest": c.digest,
                "state": if c.health.is_unhealthy() { "unhealthy" } else { "running" },
                "origin": c.origin,
                "routes": c.routes,
                "subscriptions": c.subscriptions,
                "imports": c.imports,
                "exports": c.exports,
                "loadedAt": c.loaded_at,
                "inFlight": c.in_flight.load(std::sync::atomic::Ordering::SeqCst),
                "health": {
                    "failures": c.health.failures(),
                    "windowFailures": window_failures,
                    "windowCalls": window_calls,
                },
                "limits": {
                    "deadlineMs": c.limits.deadline.as_millis() as u64,
                    "memoryLimitBytes": c.limits.memory_limit,
                    "instanceReuse": c.limits.instance_reuse,
                },
                "instances": {
                    "created": c.warm.created(),
                    "idle": c.warm.len(),
                },
            })
        })
        .collect();
    Json(Value::Array(list))
}

/// `GET /admin/dead-letters`: events a context could not handle after every retry.
pub async fn dead_letters(State(app): State<Arc<App>>) -> Response {
    match app.runtime.db().read_prefix(DEAD_LETTERS, "") {
        Ok(rows) => {
            let list: Vec<Value> = rows
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
                .collect();
            Json(Value::Array(list)).into_response()
        }
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Body of a redelivery request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redeliver {
    #[serde(default)]
    from_seq: u64,
}

/// `POST /admin/subscriptions/{context}/redeliver`: deliver every event after `fromSeq`
/// to the context again; events it already applied are skipped by its inbox. Over RabbitMQ
/// the answer says how many of this process's events were sent to the context's queue
/// (`republished`).
pub async fn redeliver(
    State(app): State<Arc<App>>,
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
        Err(e @ BusError::Unavailable(_)) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
